"""One validated core API: the same bad inputs are refused by every door, by the Workspace's own checks.

Workspace raises UsageError; the CLI exits 2 with one line; MCP returns a tool error (serve's
HTTP 400 is checked in test_serve.py against the same list)."""

from __future__ import annotations

import re

import anyio
import pytest
from cli import assert_clean_error, invoke

from llmctl import Workspace
from llmctl.errors import UsageError

# (Workspace.search keyword arguments, the same as CLI flags, a word the message must name)
BAD = [
    ({"k": 0}, ["-k", "0"], "k: input should be greater than or equal to 1, got 0"),
    ({"k": -1}, ["-k", "-1"], "k: input should be greater than or equal to 1, got -1"),
    ({"fusion": "rff"}, ["--fusion", "rff"], "fusion: input should be 'zscore', 'weighted' or 'rrf', got 'rff'"),
    ({"depth": 2, "k": 5}, ["--depth", "2", "-k", "5"], "depth: 2 is below k (5)"),
    ({"dense_k": 0}, ["--dense-k", "0"], "dense_k: input should be greater than or equal to 1"),
    ({"where": ["size=3"]}, ["--where", "size=3"], "size"),
    ({"where": ["nonsense"]}, ["--where", "nonsense"], "FIELD=VALUE"),
]
IDS = ["k0", "k-1", "fusion", "depth-below-k", "dense_k0", "where-field", "where-syntax"]


@pytest.fixture
def ws(tmp_path):
    """No index: every check must happen before anything is opened or loaded."""
    with Workspace(data_dir=tmp_path / "data") as w:
        yield w


@pytest.mark.parametrize(("kwargs", "flags", "word"), BAD, ids=IDS)
def test_workspace_refuses_before_loading_anything(ws, tmp_path, kwargs, flags, word):
    with pytest.raises(UsageError, match=re.escape(word)):
        ws.search("How many daily snapshots are kept?", **kwargs)
    assert not (tmp_path / "data").exists()


def test_question_limits_and_types(ws):
    for bad, word in [("", "empty"), ("   ", "empty"), ("x" * 4001, "4,001 characters"), (5, "as a string, got int"),
                      ("a\udcffb", r"not valid Unicode text .*U\+DCFF, at character 2"),
                      ("\ud800 retention", "U\\+D800, at character 1")]:
        with pytest.raises(UsageError, match=word):
            ws.search(bad)
    with pytest.raises(UsageError, match=r"where 'ext=m\\udcffd' is not valid Unicode text"):
        ws.search("q", where=["ext=m\udcffd"])  # a --where from bytes that are not UTF-8
    for kwargs in ({"k": True}, {"k": "3"}, {"k": 2.5}, {"rerank": "yes"}, {"where": "ext=md"}):
        with pytest.raises(UsageError):
            ws.search("q", **kwargs)
    with pytest.raises(UsageError, match="use_llm: expected true or false, got 'no'"):
        ws.query("q", fusion="zscore", use_llm="no")
    with pytest.raises(TypeError):  # no **options sink: a typo is a TypeError, not ignored
        ws.search("q", fussion="rrf")


WRITES = {  # a wrong type is a UsageError naming the argument, never a TypeError or a string taken apart
    "paths None": (lambda ws: ws.ingest(None), "paths: expected a path or a list of paths"),
    "a None path": (lambda ws: ws.ingest([None]), "paths: expected a path or a list of paths"),
    "remove a number": (lambda ws: ws.remove(5), "paths: expected"),
    "wait text": (lambda ws: ws.ingest(["docs"], wait_seconds="x"), "wait_seconds: expected a number of seconds"),
    "wait negative": (lambda ws: ws.ingest(["docs"], wait_seconds=-1), "wait_seconds: expected"),  # was: forever
    "strict text": (lambda ws: ws.ingest(["docs"], strict="x"), "strict: expected true, false or None"),
    "since a number": (lambda ws: ws.cost_report(since=5), "since: expected a date"),
    "tags a list of numbers": (lambda ws: ws.plan("suite.yaml", tags=[1]), "tags: expected a tag"),
    "config text": (lambda ws: Workspace(config="x"), "config: expected a Config"),
    "data_dir a list": (lambda ws: Workspace(data_dir=["x"]), "data_dir: expected a path"),
}


@pytest.mark.parametrize("name", WRITES)
def test_every_argument_of_the_api_is_checked_with_a_usage_error(ws, name):
    call, words = WRITES[name]
    with pytest.raises(UsageError, match=re.escape(words)):
        call(ws)


def test_a_lone_path_or_tag_is_one_path_or_tag_not_its_characters(ws, tmp_path):
    from llmctl.errors import InputError

    with pytest.raises(InputError, match="Path nonexistent does not exist"):  # not "Path n does not exist"
        ws.ingest("nonexistent")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\nMarmots live in burrows.\n")
    ws.ingest(str(tmp_path / "docs"))
    with pytest.raises(InputError, match=f"Nothing indexed under {re.escape(str(tmp_path / 'elsewhere'))}:"):
        ws.remove(str(tmp_path / "elsewhere"), dry_run=True)


def test_evaluate_and_generate_refuse_contradictions(ws, tmp_path):
    with pytest.raises(UsageError, match="suite"):
        ws.evaluate()
    with pytest.raises(UsageError, match="not both"):
        ws.evaluate("suite.yaml", record=tmp_path / "a", replay=tmp_path / "b")
    with pytest.raises(UsageError, match="limit: "):
        ws.evaluate("suite.yaml", limit=0)
    with pytest.raises(UsageError, match="cases: "):
        ws.generate(0, tmp_path / "out.yaml")


@pytest.mark.parametrize(("kwargs", "flags", "word"), BAD, ids=IDS)
def test_cli_exit_2_with_one_line(tmp_path, kwargs, flags, word):
    """The same message, naming the flag (--dense-k) where the API names the argument (dense_k)."""
    r = invoke("--data-dir", tmp_path / "data", "query", "--no-llm", "How many daily snapshots?", *flags)
    param, _, rest = word.partition(": ")
    assert_clean_error(r, 2, f"--{param.replace('_', '-')}: {rest}" if rest else word)
    assert not (tmp_path / "data").exists()


def test_cli_over_long_question_is_a_usage_error(tmp_path):
    assert_clean_error(invoke("--data-dir", tmp_path / "data", "query", "--no-llm", "x" * 4001), 2,
                       "retrieval.max_query_chars")


MCP_BAD = [(kwargs, word) for kwargs, _, word in BAD if set(kwargs) <= {"k", "where"}]  # the tool's arguments


@pytest.mark.parametrize(("kwargs", "word"), MCP_BAD)
def test_mcp_tool_error(ws, kwargs, word):
    from mcp.server.mcpserver.exceptions import ToolError

    from llmctl.mcp_server import build

    server = build(ws)

    async def call():
        return await server.call_tool("search", {"query": "How many daily snapshots are kept?", **kwargs})

    with pytest.raises(ToolError, match=re.escape(word)):
        anyio.run(call)


def test_mcp_refuses_arguments_it_does_not_declare(ws):
    """The SDK would drop an unknown argument silently: an agent's typo ("top_k") must be an error."""
    from mcp.server.mcpserver.exceptions import ToolError

    from llmctl.mcp_server import build

    server = build(ws)

    async def call():
        tools = {t.name: t for t in await server.list_tools()}
        assert tools["search"].input_schema.get("additionalProperties") is False
        await server.call_tool("search", {"query": "daily snapshots", "top_k": 3})

    with pytest.raises(ToolError, match="top_k"):
        anyio.run(call)


@pytest.mark.parametrize(("kwargs", "word"), MCP_BAD)
def test_serve_http_400_with_the_same_message(ws, kwargs, word):
    """The fourth door: serve passes the body to the Workspace, which refuses it (400, its message)."""
    from test_serve import Running

    with Running(ws) as server:
        code, body = server.json("POST", "/search", {"query": "How many daily snapshots are kept?", **kwargs})
    assert code == 400 and body["error"]["type"] == "UsageError" and word in body["error"]["message"], body
