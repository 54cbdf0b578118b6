"""serve and MCP are two doors to the same Workspace: the same methods behind them, the same
errors out of them. A route added to one door without the other fails here."""

from __future__ import annotations

import functools
import inspect

import anyio
import pytest
from mcp.server.mcpserver.exceptions import ToolError
from openai_server import Reply
from test_serve import Running

from llmctl import Workspace
from llmctl.mcp_server import build
from llmctl.serve import ENDPOINTS

QUESTION = "How many daily snapshots are kept?"

# operation -> (MCP tool, serve endpoint, the Workspace method both call). serve's "GET /" (its
# endpoint list) and "GET /health" (liveness) describe the server itself and call no Workspace method.
DOORS = {
    "search": ("search", "POST /search", "query"),  # query with use_llm=False: hits, confidence, warnings
    "query": ("query", "POST /query", "query"),
    "chunk": ("get_chunk", "GET /chunks/{key}", "chunk"),
    "document": ("get_document", "GET /documents/{key}", "document"),
    "status": ("status", "GET /status", "status"),
}
SERVER_ONLY = {"GET /", "GET /health"}
# What a door does with the Workspace's answer is its own; which method it calls, with which
# question or key and which options, is what must agree.
COMPARED = ("k", "where", "use_llm")


@pytest.fixture
def ws(data, fake_llm):
    provider = {"name": "local", "base_url": fake_llm.base_url, "model": "fake-model", "context_window": 4096,
                "timeout": 5, "retries": 0}
    with Workspace(data_dir=data, **{"rerank.enabled": False, "llm.providers": [provider],
                                     "llm.cache.enabled": False}) as w:
        yield w


class Calls:
    """Every Workspace method call of DOORS that a door made, recorded as (method, first argument,
    options); a call one of them makes to another (status reads the cost report) is not a door's."""

    def __init__(self, ws: Workspace):
        self.seen: list[tuple[str, str | None, dict]] = []
        self.depth = 0
        for name in {method for _, _, method in DOORS.values()}:
            real = getattr(ws, name)
            setattr(ws, name, self._spy(name, real))

    def _spy(self, name, real):
        signature = inspect.signature(real)

        @functools.wraps(real)
        def spy(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()  # an option left out and the same option given its default are one call
            given = dict(bound.arguments)
            options = {k: given[k] for k in COMPARED if k in given}
            if "where" in options:
                options["where"] = options["where"] or []  # None and [] both mean no filter
            if not self.depth:
                self.seen.append((name, args[0] if args else None, options))
            self.depth += 1
            try:
                return real(*args, **kwargs)
            finally:
                self.depth -= 1
        return spy

    def take(self) -> list:
        seen, self.seen = self.seen, []
        return seen


def mcp_call(server, tool: str, args: dict):
    """The tool's result, or the ToolError it raised (as the agent would read it)."""
    async def call():
        return await server.call_tool(tool, args)
    try:
        return anyio.run(call)
    except ToolError as exc:
        return exc


def test_both_doors_expose_the_same_workspace_methods(ws):
    async def names():
        return {t.name for t in await build(ws).list_tools()}

    assert anyio.run(names) == {tool for tool, _, _ in DOORS.values()}
    assert set(ENDPOINTS) - SERVER_ONLY == {endpoint for _, endpoint, _ in DOORS.values()}


def test_each_pair_calls_the_same_method_with_the_same_arguments(ws):
    calls, server = Calls(ws), build(ws)
    hit = ws.search(QUESTION, k=1)[0]
    calls.take()
    pairs = {  # the same request through each door: (MCP arguments, serve method, path, body)
        "search": ({"query": QUESTION, "k": 2, "where": ["ext=md"]},
                   ("POST", "/search", {"query": QUESTION, "k": 2, "where": ["ext=md"]})),
        "query": ({"question": QUESTION, "k": 2}, ("POST", "/query", {"question": QUESTION, "k": 2})),
        "chunk": ({"id": hit.id}, ("GET", f"/chunks/{hit.id}", None)),
        "document": ({"doc_id": hit.chunk["doc_id"]}, ("GET", f"/documents/{hit.chunk['doc_id']}", None)),
        "status": ({}, ("GET", "/status", None)),
    }
    assert set(pairs) == set(DOORS)
    with Running(ws) as http:
        for op, (tool_args, (verb, path, body)) in pairs.items():
            tool, _, method = DOORS[op]
            got = mcp_call(server, tool, tool_args)
            assert not isinstance(got, ToolError), (op, got, got.__cause__)
            by_mcp = calls.take()
            code, _ = http.json(verb, path, body)
            assert code == 200, (op, code)
            by_http = calls.take()
            assert [c[0] for c in by_mcp] == [method], by_mcp
            assert by_mcp == by_http, (op, by_mcp, by_http)


def _http_error(http: Running, verb: str, path: str, body) -> tuple[int, str]:
    code, doc = http.json(verb, path, body)
    return code, doc["error"]["message"]


@pytest.mark.parametrize("case", ["unknown chunk", "unknown document", "bad k", "bad where", "empty question",
                                  "provider fails"])
def test_the_same_failure_reads_the_same_at_both_doors(ws, fake_llm, case):
    """One message, from the Workspace, whichever door; serve adds its status code."""
    tool, args, verb, path, body, status = {
        "unknown chunk": ("get_chunk", {"id": "no-such-id"}, "GET", "/chunks/no-such-id", None, 404),
        "unknown document": ("get_document", {"doc_id": "nope"}, "GET", "/documents/nope", None, 404),
        "bad k": ("search", {"query": QUESTION, "k": 0}, "POST", "/search", {"query": QUESTION, "k": 0}, 400),
        "bad where": ("query", {"question": QUESTION, "where": ["size=3"]}, "POST", "/query",
                      {"question": QUESTION, "where": ["size=3"]}, 400),
        "empty question": ("query", {"question": "  "}, "POST", "/query", {"question": "  "}, 400),
        "provider fails": ("query", {"question": QUESTION}, "POST", "/query", {"question": QUESTION}, 502),
    }[case]
    if case == "provider fails":  # one refusal per door: retries are 0
        fake_llm.script.extend([Reply(kind="status", status=400), Reply(kind="status", status=400)])
    server = build(ws)
    with Running(ws) as http:
        by_mcp = mcp_call(server, tool, args)
        code, message = _http_error(http, verb, path, body)
    assert isinstance(by_mcp, ToolError), by_mcp
    assert code == status, (code, message)
    # MCP's message is "TOOL: " (the tool's name, as for bad arguments), then the same as serve's
    assert str(by_mcp) == f"{tool}: {message}"
