"""``--where FIELD=VALUE`` conditions: parsed without importing any index code (the CLI
checks them before loading anything)."""

from __future__ import annotations

from llmctl.errors import InputError

FILTER_FIELDS = {
    "source": "source GLOB ?",
    "ext": "source GLOB '*.' || ?",
    "kind": "kind = ?",
    "doc_id": "doc_id GLOB ?",
}


def parse_where(conditions: list[str]) -> list[tuple[str, str]]:
    out = []
    for cond in conditions:
        field, sep, value = cond.partition("=")
        field = field.strip()
        if not sep or not value.strip():
            raise InputError(f"--where '{cond}': expected FIELD=VALUE, e.g. source=docs/*.md")
        if field not in FILTER_FIELDS:
            raise InputError(
                f"--where '{cond}': unknown field '{field}'; use one of {', '.join(FILTER_FIELDS)}"
            )
        out.append((field, value.strip()))
    return out
