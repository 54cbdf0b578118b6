"""``--where FIELD=VALUE`` conditions, parsed and checked before anything is opened or loaded (the
manifest module is plain SQLite: importing it loads no model or vector store). The fields and their
SQL are the manifest's table (index/manifest.py, FILTERS)."""

from __future__ import annotations

from llmctl.errors import UsageError
from llmctl.index.manifest import FILTERS
from llmctl.records import KINDS

MAX_CONDITIONS = 64  # SQLite's expression depth ends near 1,000; no one filters on more than a few
MAX_VALUE_CHARS = 1024  # and its GLOB on patterns of ~50,000


def where_list(where) -> list[str]:
    """``where`` as the doors take it: a list of 'field=value' strings, an object {field: text}, or
    None; a list of strings for ``parse_where`` and the Workspace."""
    import json

    if where is None:
        return []
    if isinstance(where, dict):
        bad = next(((f, v) for f, v in where.items() if not isinstance(f, str) or "=" in f or not isinstance(v, str)),
                   None)
        if bad:
            raise UsageError(f"where: expected {{field: text}}, e.g. {{\"ext\": \"md\"}}; got {json.dumps(bad[0])}: "
                             f"{json.dumps(bad[1])}")
        return [f"{f}={v}" for f, v in where.items()]
    if not isinstance(where, list):
        raise UsageError(f"where: expected a list of 'field=value' strings or an object {{field: text}}, "
                         f"got {json.dumps(where)}")
    return where


def parse_where(conditions: list[str]) -> list[tuple[str, str]]:
    """(field, value) pairs; a malformed condition is a UsageError (exit 2, HTTP 400), at every door."""
    if len(conditions) > MAX_CONDITIONS:
        raise UsageError(f"where (--where): {len(conditions)} conditions; at most {MAX_CONDITIONS}")
    out = []
    for cond in conditions:
        if len(cond) > MAX_VALUE_CHARS:
            raise UsageError(f"where (--where) '{cond[:40]}...': {len(cond):,} characters; at most {MAX_VALUE_CHARS}")
        field, sep, value = cond.partition("=")
        field = field.strip()
        if not sep or not value.strip():
            raise UsageError(f"where (--where) '{cond}': expected FIELD=VALUE, e.g. source=docs/*.md")
        if field not in FILTERS:
            raise UsageError(
                f"where (--where) '{cond}': unknown field '{field}'; use one of {', '.join(FILTERS)}"
            )
        value = value.strip()
        if field == "kind" and value not in KINDS:
            raise UsageError(f"where (--where) '{cond}': unknown kind '{value}'; use one of {', '.join(KINDS)}")
        out.append((field, value.lstrip(".") if field == "ext" else value))  # ext=.md is ext=md
    return out
