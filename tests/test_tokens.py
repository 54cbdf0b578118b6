"""Token counting offline, and its fast cold start from the compact copy of tiktoken's ranks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmctl.llm.tokens import counter_for

TEXTS = ["hello world", "naïve café — 東京の天気 <|endoftext|>", "def f(x):\n    return x ** 2\n" * 20, ""]


@pytest.mark.parametrize("model, encoding", [("gpt-4o-mini", "o200k_base"), ("gpt-4-turbo", "cl100k_base")])
def test_compact_copy_counts_exactly_like_tiktoken(tmp_path, monkeypatch, model, encoding):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)  # llmctl sets it process-wide when it seeds
    first = counter_for(model, "auto", tmp_path)  # parses the .tiktoken file, writes the compact copy
    assert (tmp_path / f"{encoding}.ranks").exists() and (tmp_path / f"{encoding}.json").exists()
    second = counter_for(model, "auto", tmp_path)  # built from the compact copy
    assert first.name == second.name == encoding and first.exact
    code = ("import json, sys, tiktoken; enc = tiktoken.get_encoding(sys.argv[1]); "
            "print(json.dumps([len(enc.encode(t, disallowed_special=())) for t in json.loads(sys.argv[2])]))")
    plain = subprocess.run([sys.executable, "-c", code, encoding, json.dumps(TEXTS)], capture_output=True, text=True,
                           env={"TIKTOKEN_CACHE_DIR": str(tmp_path), "PATH": ""}, check=True).stdout
    assert [second.count(t) for t in TEXTS] == [first.count(t) for t in TEXTS] == json.loads(plain)


def test_a_damaged_compact_copy_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    counter_for("gpt-4o", "auto", tmp_path)
    (tmp_path / "o200k_base.ranks").write_bytes(b"truncated")
    assert counter_for("gpt-4o", "auto", tmp_path).count("hello world") == 2
    assert (tmp_path / "o200k_base.ranks").stat().st_size > 1_000_000


@pytest.mark.parametrize("content", [None, "root:x:0:0:root:/root:/bin/bash\n", '{"not": "a tokenizer"}'])
def test_a_tokenizer_that_is_not_a_tokenizer_json_is_a_config_error(tmp_path, content):
    from llmctl.errors import ConfigError

    path = tmp_path / "tok.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="tokenizer") as err:
        counter_for("my-model", str(path), tmp_path)
    assert "\n" not in str(err.value) and ("auto" in str(err.value))
