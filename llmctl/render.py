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
