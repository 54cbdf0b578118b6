"""``llmctl mcp``: the index as Model Context Protocol tools, over stdio (official ``mcp`` SDK).

Tools: ``search`` (hits with source, lines and text), ``get_chunk``, ``get_document``,
``status``, and ``query`` (a cited answer) when ``llm.providers`` is configured. The
models load once, when the server starts; every call reads the index published last.
llmctl's errors come back as MCP tool errors (``isError``) with the one-line message.
"""

from __future__ import annotations

import functools

from llmctl.errors import LlmctlError
from llmctl.search.filters import where_list

INSTRUCTIONS = (
    "Search the user's indexed documents (hybrid BM25 + dense retrieval). Call `search` with a "
    "natural-language query; each hit has an id, source file, line range and text. Cite hits as "
    "source:start_line-end_line. `get_chunk` / `get_document` return full text by id."
)


def _hit(h: dict) -> dict:
    return {k: h[k] for k in ("rank", "id", "doc_id", "source", "location", "heading", "start_line", "end_line",
                              "page", "text")} | {"score": h["stages"].get("fused", {}).get("score")}


def _one_line(exc) -> str:
    """A pydantic ValidationError as serve's 400 says it: 'k: input should be a valid integer, got "3"'."""
    err = exc.errors()[0]
    where = ".".join(map(str, err["loc"])) or "arguments"
    got = "" if err["type"] == "missing" else f", got {err.get('input')!r}"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg'][:1].lower()}{err['msg'][1:]}{got}{more}"


def _strict(fn):
    """An MCP tool for ``fn`` that refuses arguments it does not declare (the SDK ignores them, so
    an agent's typo would go unnoticed), takes no '3' for 3 (as serve), and says what is wrong
    with its arguments in one line; llmctl's errors become tool errors with their message."""
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.server.mcpserver.tools import Tool
    from pydantic import ConfigDict, ValidationError

    class OneLineTool(Tool):
        async def run(self, *args, **kwargs):
            try:
                return await super().run(*args, **kwargs)
            except ToolError as exc:
                cause = exc.__cause__
                if isinstance(cause, ValidationError):  # the SDK's is a multi-line pydantic dump
                    raise ToolError(f"{self.name}: {_one_line(cause)}") from None
                if isinstance(cause, ToolError):  # ours: one style, "tool: message", as for bad arguments
                    raise ToolError(f"{self.name}: {cause}") from None
                raise

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LlmctlError as exc:
            raise ToolError(str(exc)) from None

    tool = OneLineTool.from_function(wrapper)
    loose = tool.fn_metadata.arg_model
    tool.fn_metadata.arg_model = type(loose.__name__, (loose,), {
        "model_config": ConfigDict(**loose.model_config, extra="forbid", strict=True)})  # "3" is no k, as in serve
    tool.parameters = tool.fn_metadata.arg_model.model_json_schema(by_alias=True)
    return tool


def build(ws):
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    tools = []

    def tool(fn):
        tools.append(_strict(fn))
        return fn

    @tool
    def search(query: str, k: int | None = None, where: list[str] | dict[str, str] | None = None,
               rerank: bool | None = None) -> dict:
        """Find the passages of the indexed documents most relevant to `query`. When
        `confidence.low` is true nothing found looks relevant: the documents may not cover it.

        k: how many hits (default: the config's retrieval.k). where: filters such as "ext=md",
        "kind=pdf", "source=*guides/*" (a source glob matches the whole path), or an object
        {"ext": "md"}. rerank: true or false to override the config.
        """
        result = ws.query(query, k=k, where=where_list(where), rerank=rerank, use_llm=False).to_dict()
        return {"hits": [_hit(h) for h in result["hits"]], "confidence": result["confidence"],
                "warnings": result["warnings"]}

    @tool
    def get_chunk(id: str) -> dict:  # noqa: A002 - the name agents see
        """The full record of one hit, by its id."""
        got = ws.chunk(id)
        if got is None:
            raise ToolError(f"no chunk {id!r} in the index")
        return got

    @tool
    def get_document(doc_id: str) -> dict:
        """A whole indexed document (title, source, text), by the doc_id of one of its chunks."""
        got = ws.document(doc_id)
        if got is None:
            raise ToolError(f"no document {doc_id!r} in the index")
        return got

    @tool
    def status() -> dict:
        """What the index holds (files, documents, chunks, model) and whether answers are available."""
        return ws.status().to_dict()

    if ws.cfg.llm.providers:
        @tool
        def query(question: str, k: int | None = None, where: list[str] | dict[str, str] | None = None,
                  rerank: bool | None = None) -> dict:
            """Answer `question` from the indexed documents with numbered citations [n] (k, where
            and rerank as in search)."""
            result = ws.query(question, k=k, where=where_list(where), rerank=rerank)
            if result.error is not None:
                raise ToolError(str(result.error))
            d = result.to_dict()
            return {"answer": d["answer"], "citations": d["citations"], "hits": [_hit(h) for h in d["hits"]],
                    "cache": d["cache"], "cached_question": d["cached_question"], "cost_usd": d["cost_usd"],
                    "warnings": d["warnings"]}

    return MCPServer("llmctl", instructions=INSTRUCTIONS, log_level="WARNING", tools=tools)


def run(ws) -> None:
    import sys

    server = build(ws)
    try:
        notes = ws.warm()
    except LlmctlError as exc:  # no index yet: start anyway, tools say what to do
        notes = [str(exc)]
    for note in notes:  # stderr: stdout carries the protocol
        sys.stderr.write(f"Warning: {note}\n")
    server.run("stdio")
