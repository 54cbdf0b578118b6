"""Server mode: ingest, query and eval against a real `chroma run` equal embedded mode (the server is
a real process; the commands run in this one)."""

import json

import pytest
from cli import assert_clean_error, invoke
from conftest import REPO
from consistency import assert_consistent

from llmctl.config import load_config

SUITE = REPO / "configs" / "sample-suite.yaml"


def server_config(tmp_path, port, collection="llmctl_test"):
    path = tmp_path / "llmctl.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\nvector_store:\n  mode: server\n  port: {port}\n"
                    f"  collection: {collection}\n  token_env: TEST_CHROMA_TOKEN\n")
    return path


def query_hits(config_args, cwd):
    r = invoke(*config_args, "query", "--no-llm", "--json", "--k", "8", "How do I restore a single file?", cwd=cwd,
                env={"TEST_CHROMA_TOKEN": "not-checked-by-this-server"})
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)["hits"]
    return [(h["location"].split("sample_data/")[-1], round(h["stages"]["fused"]["score"], 4)) for h in hits]


@pytest.mark.slow
def test_ingest_query_and_eval_against_a_chroma_server_match_embedded(tmp_path, chroma_server, sample_index,
                                                                     monkeypatch):
    cfg_file = server_config(tmp_path, chroma_server)
    env = {"TEST_CHROMA_TOKEN": "not-checked-by-this-server"}
    monkeypatch.setenv("TEST_CHROMA_TOKEN", env["TEST_CHROMA_TOKEN"])
    r = invoke("--config", cfg_file, "ingest", "-q", "sample_data", cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    cfg = load_config(cfg_file)
    state = assert_consistent(tmp_path / "data", cfg)
    assert len(state["chroma"]) > 50
    assert not (tmp_path / "data" / "chroma").exists()  # the vectors live on the server only

    server = query_hits(["--config", cfg_file], REPO)
    embedded = query_hits(["--data-dir", sample_index], REPO)
    assert server == embedded and len(server) == 8

    reports = []
    for args in (["--config", cfg_file], ["--data-dir", sample_index]):
        out = tmp_path / f"report{len(reports)}.json"
        r = invoke(*args, "eval", "-q", SUITE, "--json-file", out, cwd=REPO, env=env)
        assert r.returncode == 0, r.stderr
        reports.append(json.loads(out.read_text())["metrics"])
    assert reports[0] == reports[1]

    # a second data dir pointed at the same collection would mix two indexes: refused
    other = tmp_path / "other"
    other.mkdir()
    clash = server_config(other, chroma_server)
    r = invoke("--config", clash, "ingest", "-q", "sample_data/guides", cwd=REPO, env=env)
    assert_clean_error(r, 5, "llmctl_test", "vector_store.collection")
    # moving an index to another store needs a rebuild, said with the exact setting
    r = invoke("--data-dir", tmp_path / "data", "ingest", "-q", "sample_data", cwd=REPO)
    assert_clean_error(r, 5, "vector_store.mode: 'server' -> 'embedded'", "--rebuild")


def test_unreachable_server_and_missing_token_are_clean_errors(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    cfg_file = server_config(tmp_path, port)
    r = invoke("--config", cfg_file, "ingest", "-q", REPO / "sample_data" / "guides",
                env={"TEST_CHROMA_TOKEN": "x"})
    assert_clean_error(r, 5, f"127.0.0.1:{port}", "chroma run")
    r = invoke("--config", cfg_file, "ingest", "-q", REPO / "sample_data" / "guides")
    assert_clean_error(r, 3, "TEST_CHROMA_TOKEN", "vector_store.token_env")
