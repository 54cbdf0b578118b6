from pathlib import Path

import pytest
import yaml

from llmctl.config import Config, dump_defaults, load_config
from llmctl.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_default_yaml_documents_exactly_the_builtin_defaults():
    data = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    defaults = dump_defaults()
    assert data.pop("data_dir") == "../.llmctl"
    defaults.pop("data_dir")
    assert data == defaults


def test_default_yaml_data_dir_resolves_against_the_file():
    cfg = load_config(REPO / "configs" / "default.yaml")
    assert cfg.data_dir == (REPO / ".llmctl").resolve()


@pytest.mark.parametrize("text, words", [
    ("chunking:\n  max_token: 100\n", ["unknown key 'chunking.max_token'", "did you mean 'max_tokens'"]),
    ("embeding:\n  model: x\n", ["unknown key 'embeding'", "did you mean 'embedding'"]),
    ("bm25:\n  k1: fast\n", ["'bm25.k1'", "'fast'"]),
    ("bm25:\n  backend: lucene\n", ["'bm25.backend'", "bm25s"]),
    ("chunking: [1, 2]\n", ["'chunking'"]),
    ("- just\n- a list\n", ["top level must be a mapping"]),
    ("bm25:\n  k1: [\n", ["line", "fix the YAML syntax"]),
    ("state:\n  url: 'nope://'\n", ["'state.url'", "redis://"]),
    ("retrieval:\n  k: 3\nllm:\n  temperature: 0\nretrieval:\n  k: 5\n",
     ["line 5", "'retrieval' appears twice", "first on line 1"]),
    ("retrieval: 5\n", ["'retrieval' is a section", "(got 5)"]),
    ("embedding:\n  dimensions: 16\n", [": embedding.dimensions is set", "provider: openai"]),  # the key once
    # YAML that parsed into a traceback before: a list as a key, a NUL character, nesting past Python's stack
    ("? [a, b]\n: 1\n", ["line 1", "a key must be a plain name or number"]),
    ('data_dir: "a\\0b"\n', ["'data_dir' holds a NUL character"]),
    ("ingest:\n  exclude: " + "[" * 5000 + "]" * 5000 + "\n", ["nested thousands deep"]),
    # aliases of aliases: nine lines that validation would walk for hours
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{n}: &{n} [{', '.join([f'*{m}'] * 9)}]\n" for m, n in
                                                    zip("abcdefgh", "bcdefghi", strict=True)) + "retrieval:\n  k: *i\n",
     ["aliases (*name) expand to more than 100,000 values"]),
    ("data_dir: [1, 2]\n", ["'data_dir': expected a path"]),
    ("retrieval:\n  k: true\n", ["'retrieval.k'", "expected a number, not true"]),
    ("llm:\n  providers:\n    - {name: a, base_url: 'ftp:/x', model: m}\n",
     ["'llm.providers.0.base_url'", "http:// or https://", "'ftp:/x'"]),
])
def test_bad_config_names_the_key_and_the_file(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    for w in words:
        assert w in message
    assert "\n" not in message


def test_yaml_merge_keys_work_and_a_config_must_be_a_regular_file(tmp_path):
    import os

    path = write(tmp_path, "retrieval:\n  <<: {k: 3, fusion: rrf}\n  k: 4\n")  # shared settings, one overridden
    cfg = load_config(path)
    assert (cfg.retrieval.k, cfg.retrieval.fusion) == (4, "rrf")
    shared = write(tmp_path, "x-provider: &p {timeout: 60, retries: 2, model: m}\nllm:\n  providers:\n"
                             "    - {<<: *p, name: a, base_url: 'http://127.0.0.1:9/v1'}\n"
                             "    - {<<: *p, name: b, base_url: 'http://127.0.0.1:8/v1', retries: 0}\n")
    assert [(p.name, p.timeout, p.retries) for p in load_config(shared).llm.providers] == [("a", 60, 2), ("b", 60, 0)]
    assert load_config(Path("/dev/null")).retrieval.k == 5  # the usual way to say "no config"
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for odd in (Path("/dev/zero"), fifo):  # filled the memory; waited forever
        with pytest.raises(ConfigError, match="is not a regular file"):
            load_config(odd)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_precedence_file_then_env_then_flags(tmp_path, monkeypatch):
    path = write(tmp_path, "bm25:\n  k1: 1.0\n  b: 0.5\nchunking:\n  overlap_tokens: 10\n")
    monkeypatch.setenv("LLMCTL_BM25__K1", "1.5")
    monkeypatch.setenv("LLMCTL_CONFIG", str(path))
    cfg = load_config(None, {"chunking.overlap_tokens": 20})
    assert (cfg.bm25.k1, cfg.bm25.b, cfg.chunking.overlap_tokens) == (1.5, 0.5, 20)
    assert cfg.source == str(path)


def test_a_variable_that_sets_a_key_under_a_value_is_named(monkeypatch):
    monkeypatch.setenv("LLMCTL_RETRIEVAL__K__X", "3")  # makes retrieval.k a mapping: it was "built-in defaults"
    with pytest.raises(ConfigError, match="environment variable LLMCTL_RETRIEVAL__K__X: 'retrieval.k'"):
        load_config(None)


def test_bad_env_override_is_named(monkeypatch):
    monkeypatch.setenv("LLMCTL_BM25__K1", "much")
    with pytest.raises(ConfigError, match="bm25.k1"):
        load_config(None)


def test_relative_paths_resolve_against_config_folder(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "model").mkdir()
    path = sub / "c.yaml"
    path.write_text("data_dir: state\nembedding:\n  model: ./model\n")
    cfg = load_config(path)
    assert cfg.data_dir == (sub / "state").resolve()
    assert cfg.embedding.model == str((sub / "model").resolve())


def test_local_llmctl_yaml_is_found(tmp_path):
    (tmp_path / "llmctl.yaml").write_text("bm25:\n  backend: rank_bm25\n")
    assert load_config(None).bm25.backend == "rank_bm25"


def test_no_file_gives_builtin_defaults(tmp_path):
    cfg = load_config(None)
    assert cfg.source == "built-in defaults"
    assert cfg.data_dir == (tmp_path / ".llmctl").resolve()
    assert cfg.bm25 == Config().bm25


def test_env_variables_that_are_not_config_keys_are_left_alone(monkeypatch):
    monkeypatch.setenv("LLMCTL_TEST_API_KEY", "sk-not-config")
    assert load_config(None).bm25 == Config().bm25


def test_single_underscore_env_typo_is_explained(monkeypatch):
    monkeypatch.setenv("LLMCTL_BM25_K1", "1.5")
    with pytest.raises(ConfigError, match="LLMCTL_BM25__K1"):
        load_config(None)


def test_a_data_dir_flag_is_relative_to_the_working_directory_not_the_config(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "x.yaml").write_text("data_dir: from-file\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(Path("sub/x.yaml")).data_dir == (sub / "from-file").resolve()
    assert load_config(Path("sub/x.yaml"), {"data_dir": "d"}).data_dir == (tmp_path / "d").resolve()
    monkeypatch.setenv("LLMCTL_DATA_DIR", "e")
    assert load_config(Path("sub/x.yaml")).data_dir == (tmp_path / "e").resolve()


def test_an_empty_data_dir_is_refused_wherever_it_is_set(tmp_path, monkeypatch):
    """Path("") is the working directory: an emptied variable would put the index (and then
    its own files, indexed) among the documents."""
    from cli import assert_clean_error, invoke

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.md").write_text("# A\n\nMarmots live in burrows.\n")
    (tmp_path / "x.yaml").write_text("data_dir: ''\n")
    r = invoke("ingest", ".", env={"LLMCTL_DATA_DIR": ""}, cwd=tmp_path)
    assert_clean_error(r, 3, "LLMCTL_DATA_DIR", "'data_dir' is empty")
    assert_clean_error(invoke("--config", "x.yaml", "ingest", ".", cwd=tmp_path), 3, "x.yaml", "'data_dir' is empty")
    assert_clean_error(invoke("--data-dir", "", "ingest", ".", cwd=tmp_path), 2, "--data-dir", "is empty")
    # named on purpose: the data dir is the folder ingested
    assert_clean_error(invoke("--data-dir", ".", "ingest", ".", cwd=tmp_path), 4, "is llmctl's data dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "x.yaml"]
