"""`llmctl mcp` end to end: the official SDK's stdio client starts it as a subprocess."""

from __future__ import annotations

import json
import sys

import anyio
import pytest
import yaml
from cli import child_env
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from llmctl import Workspace

pytestmark = pytest.mark.slow


async def _session(args: list[str], calls):
    params = StdioServerParameters(command=sys.executable, args=["-m", "llmctl", *args, "mcp"], env=child_env())
    async with stdio_client(params) as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        return await calls(session)


def _json(result) -> dict:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


@pytest.fixture
def index(docs_data):
    return docs_data  # sample_data ingested with its absolute paths (once for the session), this test's copy


def test_tools_search_fetch_status_and_errors(tmp_path, index):
    cfg = tmp_path / "llmctl.yaml"
    cfg.write_text(yaml.safe_dump({"rerank": {"enabled": False}}))
    question = "How many daily snapshots does the default retention policy keep?"

    async def calls(s):
        tools = {t.name: t for t in (await s.list_tools()).tools}
        found = _json(await s.call_tool("search", {"query": question, "k": 3}))
        hits = found["hits"]
        assert found["confidence"]["low"] is False
        absent = _json(await s.call_tool("search", {"query": "What is the capital of Mongolia?", "k": 3}))
        assert absent["confidence"]["low"] is True  # an agent can tell nothing relevant was found
        rst = _json(await s.call_tool("search", {"query": question, "where": ["ext=rst"]}))["hits"]
        chunk = _json(await s.call_tool("get_chunk", {"id": hits[0]["id"]}))
        doc = _json(await s.call_tool("get_document", {"doc_id": chunk["doc_id"]}))
        status = _json(await s.call_tool("status", {}))
        errors = [await s.call_tool("search", {"query": "x", "where": ["size=3"]}),
                  await s.call_tool("search", {"query": "x", "k": 0}),  # the core's own check
                  await s.call_tool("get_chunk", {"id": "no-such-id"}),
                  await s.call_tool("search", {"k": 3}),
                  await s.call_tool("search", {"query": "x", "k": "3"})]  # strict, as serve: "3" is no k
        after = _json(await s.call_tool("search", {"query": question, "k": 1}))["hits"]  # still serving
        # what serve's /search takes, MCP takes: where as an object, k null (the config's), rerank
        as_serve = _json(await s.call_tool("search", {"query": question, "k": None, "where": {"ext": "rst"},
                                                      "rerank": False}))["hits"]
        errors.append(await s.call_tool("search", {"query": "x", "where": {"ext=md": "x"}}))
        return tools, hits, rst, chunk, doc, status, errors, after, as_serve

    tools, hits, rst, chunk, doc, status, errors, after, as_serve = anyio.run(
        _session, ["--config", str(cfg), "--data-dir", str(index)], calls)
    assert set(tools) == {"search", "get_chunk", "get_document", "status"}  # no provider: no query tool
    assert "query" in tools["search"].input_schema["required"]
    with Workspace(data_dir=index, **{"rerank.enabled": False}) as ws:
        assert [h["id"] for h in hits] == [h.id for h in ws.search(question, k=3)]
    assert hits[0]["source"].endswith("retention-policies.md") and hits[0]["start_line"] >= 1 and hits[0]["text"]
    assert rst and all(h["source"].endswith(".rst") for h in rst)
    assert chunk["text"] == hits[0]["text"]
    assert doc["text"].strip() == open(doc["source"]).read().strip()
    assert status["index"]["chunks"] > 0
    assert all(e.is_error for e in errors)
    assert "unknown field 'size'" in errors[0].content[0].text and "no-such-id" in errors[2].content[0].text
    texts = [e.content[0].text for e in errors]
    assert all("\n" not in t and "pydantic" not in t for t in texts), texts  # one line, as serve's 400
    assert "search: query: field required" in texts[3] and "k: input should be a valid integer, got '3'" in texts[4]
    assert after[0]["id"] == hits[0]["id"]
    assert len(as_serve) == 5 and [h["id"] for h in as_serve] == [h["id"] for h in rst][:5]  # retrieval.k is 5
    assert "where: expected {field: text}" in texts[5], texts[5]


def test_query_tool_answers_with_a_provider(tmp_path, index, fake_llm):
    cfg = tmp_path / "llm.yaml"
    cfg.write_text(yaml.safe_dump({"rerank": {"enabled": False}, "llm": {"providers": [{
        "name": "local", "base_url": fake_llm.base_url, "model": "fake-model", "context_window": 4096,
        "timeout": 5, "retries": 0}]}}))

    async def calls(s):
        names = {t.name for t in (await s.list_tools()).tools}
        return names, _json(await s.call_tool("query", {"question": "How many daily snapshots are kept?"}))

    names, answer = anyio.run(_session, ["--config", str(cfg), "--data-dir", str(index)], calls)
    assert "query" in names
    assert answer["answer"] == fake_llm.default_text and answer["citations"][0]["n"] == 1 and answer["hits"]
    assert len(fake_llm.requests) == 1


def test_starts_without_an_index_and_says_what_to_do(tmp_path):
    async def calls(s):
        return await s.call_tool("search", {"query": "anything"})

    result = anyio.run(_session, ["--data-dir", str(tmp_path / "empty")], calls)
    assert result.is_error and "llmctl ingest" in result.content[0].text
