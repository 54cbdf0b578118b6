"""The public API: `from llmctl import Workspace`, as the README shows it."""

from openai_server import Reply

from llmctl import Workspace


def test_readme_example_ingest_search_status_remove(tmp_path, corpus, embedder):
    ws = Workspace(data_dir=tmp_path / "data")
    ws.embedder = embedder  # the session's loaded model (a Workspace builds its own otherwise)
    report = ws.ingest([corpus])
    assert report.chunks_total > 50 and not report.files_skipped
    hits = ws.search("How many daily snapshots are kept?", k=3)
    assert len(hits) == 3 and hits[0].source.endswith("retention-policies.md")
    st = ws.status().to_dict()
    assert st["index"]["chunks"] == report.chunks_total and st["index"]["dirty"] is False
    assert st["reranker"]["status"] == "unavailable" and "fused order" in st["reranker"]["fallback"]
    gone = ws.remove([corpus / "guides"])
    assert len(gone.files_removed) == 8
    # the workspace reopens the index after a write: the removed files are not found any more
    assert not any("/guides/" in h.source for h in ws.search("retention policy daily snapshots", k=10))
    ws.close()


def test_answers_and_cache_invalidation_go_through_the_workspace(tmp_path, corpus, embedder, fake_llm):
    fake_llm.script.append(Reply(text="Fourteen daily snapshots [1]."))
    ws = Workspace(data_dir=tmp_path / "data", **{
        "rerank.enabled": False,
        "llm.providers": [{"name": "local", "base_url": fake_llm.base_url, "model": "m", "retries": 0}]})
    ws.embedder = embedder
    ws.ingest([corpus])
    first = ws.query("How many daily snapshots are kept?")
    assert first.completion.text == "Fourteen daily snapshots [1]."
    assert ws.query("How many daily snapshots are kept?").completion.cache == "exact"
    source = first.citations[0]
    cited = corpus / source.source.split("/", 1)[1]  # docs/guides/... -> guides/...
    lines = cited.read_text().splitlines(keepends=True)
    lines.insert(source.end_line - 1, "A new line about hourly snapshots, inside the cited span.\n")
    cited.write_text("".join(lines))
    assert ws.ingest([corpus]).cache_invalidated == 1  # the answer built from that file is dropped
    assert ws.query("How many daily snapshots are kept?").completion.cache is None
    ws.close()


def test_status_without_an_index_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("SOME_UNSET_KEY_VAR", raising=False)
    ws = Workspace(data_dir=tmp_path / "none", **{"llm.providers": [
        {"name": "p", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "SOME_UNSET_KEY_VAR",
         "price_input_per_1m": 1.0, "price_output_per_1m": 2.0}]})
    st = ws.status().to_dict()
    assert st["index"]["exists"] is False and st["cache"]["entries"] == 0
    assert st["providers"] == [{"name": "p", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                                "key_env": "SOME_UNSET_KEY_VAR", "key_set": False, "priced": True}]


def test_mixed_script_documents_are_found_by_both_retrievers(tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "idioms.md").write_text("# 成语接龙\n\n今天我们玩成语接龙游戏。每个人说一个成语，下一个成语的第一个字"
                                   "必须是上一个成语的最后一个字。\n")
    (docs / "weather.md").write_text("# 天气预报\n\n明天北京天气晴朗，气温二十度，适合去公园散步。\n")
    (docs / "setup.md").write_text("# Setup 安装\n\nInstall the client with pip: 使用 pip 安装客户端，"
                                   "然后运行 kestrel init。\n")
    (docs / "backups.md").write_text("---\ntitle: Backups\ntags: [ops, retention]\n---\n# Backups\n\n"
                                     "Kestrel keeps fourteen daily snapshots by default.\n")
    ws = Workspace(data_dir=tmp_path / "data", **{"rerank.enabled": False})
    ws.embedder = embedder
    ws.ingest([docs])
    top = ws.search("接龙", k=2)[0]  # two characters from the middle of a run: a BM25 match
    assert top.source.endswith("idioms.md") and top.stages["bm25"][0] == 1
    top = ws.search("怎么用 pip 安装", k=2)[0]  # mixed scripts in the question and the document
    assert top.source.endswith("setup.md") and top.stages["bm25"][0] == 1
    top = ws.search("How many daily snapshots are kept?", k=1)[0]
    chunk = ws.chunk(top.id)  # front matter is metadata on each chunk, not text
    assert chunk["fm_tags"] == '["ops", "retention"]' and "tags:" not in chunk["text"]
    assert chunk["start_line"] == 5  # the line of "# Backups" in the file
    ws.close()


def test_only_the_workspace_makes_a_data_dir_from_a_config():
    """Components take a ``DataDir`` (or one of its paths) from their caller: no module but the
    Workspace (and config.py, which resolves ``data_dir``) builds one from a config's ``data_dir``,
    or points a config at another data dir (a BEIR run gets its own ``DataDir``: ``DataDir.beir``)."""
    import ast
    from pathlib import Path

    import llmctl

    package = Path(llmctl.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel in ("workspace.py", "config.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            names = set()
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "DataDir":
                names = {getattr(n, "attr", getattr(n, "id", None)) for a in node.args for n in ast.walk(a)}
            elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {t.attr for t in targets if isinstance(t, ast.Attribute)}
            elif isinstance(node, ast.Dict):  # cfg.model_copy(update={"data_dir": ...})
                names = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if "data_dir" in names:
                found.append(f"llmctl/{rel}:{node.lineno}")
    assert not found, "build the DataDir in the Workspace and pass it down: " + ", ".join(found)
