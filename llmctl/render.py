"""Human output (rich) and JSON. Results go to stdout; progress and warnings to stderr."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any

from rich.console import Console

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def warn(message: str) -> None:
    stderr.print(f"[yellow]Warning:[/] {message}", markup=True)


class RichProgress:
    """Progress bars on stderr; silent when stderr is not a terminal or with --quiet."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and stderr.is_terminal
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                console=stderr, transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def task(self, description: str, total: int | None):
        return _RichTask(self._progress, description, total)

    @contextmanager
    def status(self, description: str):
        if self._progress is None:
            yield
            return
        task = self._progress.add_task(description, total=None)
        try:
            yield
        finally:
            self._progress.remove_task(task)


class _RichTask:
    def __init__(self, progress, description: str, total: int | None):
        self.progress = progress
        self.id = progress.add_task(description, total=total) if progress is not None else None

    def advance(self, n: int) -> None:
        if self.id is not None:
            self.progress.advance(self.id, n)

    def done(self) -> None:
        if self.id is not None:
            self.progress.remove_task(self.id)
            self.id = None


def ingest_report(report) -> None:
    d = report.to_dict()
    f, c = d["files"], d["chunks"]
    verb = "Would ingest" if report.dry_run else "Ingested"
    for line in report.recovered:
        warn(f"recovered: {line}")
    for s in report.files_skipped:
        warn(f"skipped {s.path}: {s.reason}")
    stdout.print(
        f"{verb} {f['seen']} file(s): {f['added']} added, {f['changed']} changed, "
        f"{f['unchanged']} unchanged, {f['removed']} removed, {f['skipped']} skipped"
    )
    stdout.print(
        f"Chunks: {c['added']} {'to embed' if report.dry_run else 'embedded'} "
        f"({report.tokens_embedded:,} tokens), {c['deleted']} {'to delete' if report.dry_run else 'deleted'}"
        + ("" if report.dry_run else f", {c['total']} in the index")
        + f" - {report.seconds:.1f} s"
    )
    if report.dry_run:
        for label, paths in (("add", report.files_added), ("change", report.files_changed),
                             ("remove", report.files_removed)):
            for p in paths:
                stdout.print(f"  would {label}: {p}")


def stream_token(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _stages(hit) -> str:
    names = {"bm25": "bm25", "dense": "dense", "fused": "fused", "rerank": "rerank"}
    return "  ".join(f"{names[s]} #{r} ({v:.3f})" for s, (r, v) in hit.stages.items() if s in names)


def query_result(result, explain: bool = False) -> None:
    for w in result.warnings:
        warn(w)
    if result.completion is not None:
        sys.stdout.write("\n" if not result.completion.text.endswith("\n") else "")
        if result.citations:
            stdout.print("\nSources:")
            for s in result.citations:
                section = f"  ({s.heading})" if s.heading else ""
                stdout.print(f"  [{s.n}] {s.location()}{section}", markup=False)
        else:
            stdout.print("\n(no sources cited)")
    else:
        if not result.hits:
            stdout.print("No matching chunks.")
        for i, hit in enumerate(result.hits, start=1):
            final = hit.stages.get("rerank") or hit.stages.get("fused")
            stdout.print(f"{i}. {hit.location()}  score {final[1]:.3f}", markup=False, style="bold")
            if hit.chunk.get("heading"):
                stdout.print(f"   {hit.chunk['heading']}", markup=False, style="dim")
            snippet = " ".join(hit.chunk.get("text", "").split())
            stdout.print(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}", markup=False)
    if explain:
        _explain(result)


def _explain(result) -> None:
    from rich.table import Table

    table = Table(title="Stage trace", show_lines=False)
    for col in ("#", "chunk", "bm25", "dense", "fused", "rerank"):
        table.add_column(col)
    for i, hit in enumerate(result.hits, start=1):
        cells = []
        for stage in ("bm25", "dense", "fused", "rerank"):
            rs = hit.stages.get(stage)
            cells.append(f"#{rs[0]} {rs[1]:.3f}" if rs else "-")
        table.add_row(str(i), hit.location(), *cells)
    stderr.print(table)
    stderr.print("Latency (ms): " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in result.timings.items()))
    p = result.packed
    stderr.print(f"Context: {p.tokens}/{p.budget} tokens ({result.tokenizer['name']}"
                 f"{'' if result.tokenizer['exact'] else ', estimated'}), {len(p.sources)} source(s)")
    for d in p.dropped:
        stderr.print(f"  dropped {d['source']}: {d['reason']}", markup=False)
    rr = result.rerank
    stderr.print(f"Rerank: {rr['status']}" + (f" ({rr['reason']})" if rr.get("reason") else ""),
                 markup=False)
