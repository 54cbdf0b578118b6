"""Human output (rich) and JSON. Results go to stdout; progress and warnings to stderr."""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.text import Text

from llmctl.errors import printable
from llmctl.money import money

BROKEN_PIPE = 141  # the shell's code for a process that SIGPIPE stopped (128 + 13), as `git log | head` gets


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """stdout's (or stderr's) reader stopped reading (``llmctl query ... | head -3``): no more output, no
        traceback, exit 141, as a command that SIGPIPE stops (rich's own choice is exit 1, "a bug")."""
        quiet_stdout()


def quiet_stdout() -> None:
    """Point stdout and stderr at /dev/null (Python's last flush must not fail again) and exit 141.
    Either may be the pipe whose reader left (``llmctl query ... 2>&1 | head``)."""
    stdout.quiet = stderr.quiet = True
    null = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(null, stream.fileno())
        except (AttributeError, OSError, ValueError):  # no file descriptor (a test's captured output)
            pass
    raise SystemExit(BROKEN_PIPE)


class GuardedStream:
    """A process's stdout or stderr whose writes fail with one line and exit 4 (``OutputError``)
    instead of a traceback: a full disk (``>/dev/full``), a closed stream (``>&-``: Python's
    ``sys.stdout`` is None), an I/O error. A reader that left stays a ``BrokenPipeError`` (exit 141)."""

    def __init__(self, stream, name: str):
        self._stream, self._name = stream, name
        try:
            self._fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # closed, or a test's captured output
            self._fd = None

    def _failed(self, exc: OSError | None):
        from llmctl.errors import OutputError

        why = "it is closed" if exc is None else exc.strerror or type(exc).__name__
        return OutputError(f"cannot write to {self._name} ({why}): the output is incomplete")

    def write(self, text: str) -> int:
        if self._stream is None:
            raise self._failed(None)
        try:
            if self._fd is None:
                return self._stream.write(text)
            # Every byte, or an error: a buffered write that the reader cuts short (`| head -c 100`)
            # returns a short count that Python's text layer drops without a word, so the command
            # would end with exit 0 and its output cut.
            self._stream.flush()
            data = memoryview(text.encode(self._stream.encoding or "utf-8", self._stream.errors or "strict"))
            while data:
                data = data[os.write(self._fd, data):]
            return len(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def fileno(self) -> int:
        if self._stream is None:
            raise OSError("closed")
        return self._stream.fileno()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


stdout = _Console(highlight=False, soft_wrap=True)
stderr = _Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


_mid_line = False  # a streamed answer is on screen without its final newline


def warn(message: str) -> None:
    global _mid_line
    if _mid_line:  # stdout and stderr share the terminal: do not glue the warning to the answer
        sys.stdout.write("\n")
        sys.stdout.flush()
        _mid_line = False
    stderr.print(f"[yellow]Warning:[/] {message}", markup=True)


class RichProgress:
    """Progress bars on stderr; silent when stderr is not a terminal or with --quiet."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and stderr.is_terminal
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                _count_column(), TimeElapsedColumn(), _eta_column(),
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


def _count_column():
    """"n/N" for a task with a total, "n" for a count with none (scanning), nothing for a status."""
    from rich.progress import ProgressColumn

    class Count(ProgressColumn):
        def render(self, task) -> Text:
            if task.total is None:
                return Text(f"{int(task.completed):,}" if task.completed else "", style="progress.download")
            total = f"{int(task.total):,}"
            return Text(f"{int(task.completed):,}".rjust(len(total)) + f"/{total}", style="progress.download")

    return Count()


def _eta_column():
    """"ETA 0:01:05" while a task with a total runs (its remaining time at the current speed)."""
    from rich.progress import ProgressColumn

    class Eta(ProgressColumn):
        max_refresh = 0.5  # a steadier estimate than every frame's

        def render(self, task) -> Text:
            if task.total is None or task.finished:
                return Text("")
            left = task.time_remaining
            if left is None:
                return Text("ETA -:--:--", style="progress.remaining")
            minutes, seconds = divmod(int(left), 60)
            return Text(f"ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}", style="progress.remaining")

    return Eta()


class _RichTask:
    """One bar; when it ends, one line on stderr says what it did and how long it took."""

    def __init__(self, progress, description: str, total: int | None):
        import time

        self.progress = progress
        self.description, self.started = description, time.perf_counter()
        self.id = progress.add_task(description, total=total) if progress is not None else None

    def advance(self, n: int) -> None:
        if self.id is not None:
            self.progress.advance(self.id, n)

    def set_total(self, total: int | None) -> None:
        if self.id is not None:
            self.progress.update(self.id, total=total)

    def done(self) -> None:
        if self.id is not None:
            import time

            task = self.progress.tasks[[t.id for t in self.progress.tasks].index(self.id)]
            self.progress.remove_task(self.id)
            self.id = None
            if task.completed:
                seconds = time.perf_counter() - self.started
                rate = f", {task.completed / seconds:,.0f}/s" if seconds >= 1 else ""
                # a styled Text, not style=: that would also dim the bars redrawn below it
                self.progress.console.print(Text(f"{self.description}: {int(task.completed):,} in {seconds:.1f} s"
                                                 f"{rate}", style="dim"))


def ingest_warnings(report) -> None:
    """What a run recovered, noted and skipped, on stderr (with --json too: stdout holds the report)."""
    for line in report.recovered:
        warn(f"recovered: {line}")
    for line in report.notes:
        warn(line)
    from llmctl.ingest.loaders import type_suffix

    unsupported: dict[str, int] = {}
    for s in report.files_skipped:
        if s.reason == "unsupported type":  # one line for all of them, by type ('.ps.gz', not '.gz')
            ext = type_suffix(s.path.rsplit("/", 1)[-1]).lstrip(".") or "(none)"
            unsupported[ext] = unsupported.get(ext, 0) + 1
        else:
            warn(f"skipped {printable(s.path)}: {s.reason}")
    if report.embedding.get("note"):
        warn(report.embedding["note"])
    if unsupported:
        kinds = ", ".join(f".{e} {n}" if e != "(none)" else f"no extension {n}"
                          for e, n in sorted(unsupported.items(), key=lambda kv: -kv[1]))
        warn(f"skipped {sum(unsupported.values())} file(s) of unsupported type ({printable(kinds)}; "
             "--json lists them)")


def ingest_report(report) -> None:
    d = report.to_dict()
    f, c = d["files"], d["chunks"]
    verb = "Would ingest" if report.dry_run else "Ingested"
    ingest_warnings(report)
    stdout.print(
        f"{verb} {report.files_ingested:,} file(s): {f['added']:,} added, {f['changed']:,} changed, "
        f"{f['unchanged']:,} unchanged, {f['removed']:,} removed, {f['skipped']:,} skipped"
    )
    stdout.print(
        f"Chunks: {c['added']:,} {'to embed' if report.dry_run else 'embedded'} "
        f"({report.tokens_embedded:,} tokens), {c['deleted']:,} {'to delete' if report.dry_run else 'deleted'}"
        + ("" if report.dry_run else f", {c['total']:,} in the index")
        + f" - {report.seconds:.1f} s"
    )
    if report.dry_run:
        for label, paths in (("add", report.files_added), ("change", report.files_changed),
                             ("remove", report.files_removed)):
            for p in paths:
                stdout.print(f"  would {label}: {printable(p)}", markup=False)  # a name's newline or [brackets]


def sync_line(report, as_json: bool) -> None:
    """One line per --watch sync: JSON, or a timestamped summary."""
    import time

    if as_json:
        sys.stdout.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **report.to_dict()}) + "\n")
        sys.stdout.flush()
        return
    stdout.print(f"{time.strftime('%H:%M:%S')} {sync_summary(report)}", markup=False)
    sync_warnings(report)


def sync_summary(report) -> str:
    """What one sync of a watched folder did (ingest --watch, serve --watch)."""
    d = report.to_dict()
    f, c = d["files"], d["chunks"]
    return (f"synced {report.files_ingested:,} file(s): {f['added']:,} added, {f['changed']:,} changed, "
            f"{f['removed']:,} removed; {c['added']:,} chunk(s) embedded, {c['total']:,} in the index "
            f"- {report.seconds:.1f} s")


def sync_warnings(report) -> None:
    """A sync's skipped files, each once, when it first shows up (unsupported types: --json)."""
    for skipped in report.files_skipped:
        if skipped.reason != "unsupported type" and (skipped.path, skipped.reason) not in _warned_skips:
            warn(f"skipped {printable(skipped.path)}: {skipped.reason}")
            _warned_skips.add((skipped.path, skipped.reason))
    if report.embedding.get("note"):
        warn(report.embedding["note"])


_warned_skips: set[tuple[str, str]] = set()  # --watch: skipped files already named


def remove_report(report) -> None:
    verb = "Would remove" if report.dry_run else "Removed"
    stdout.print(f"{verb} {len(report.files_removed)} file(s) ({report.chunks_deleted} chunks); "
                 f"{report.chunks_total} chunks in the index", markup=False)
    for source in report.files_removed:
        stdout.print(f"  {'would remove' if report.dry_run else 'removed'}: {printable(source)}", markup=False)


def status(st) -> None:
    ix = st.index
    if ix["exists"]:
        stdout.print(f"Index {printable(ix['folder'])}: {ix['files']} file(s), {ix['documents']} document(s), "
                     f"{ix['chunks']} chunk(s){' (an ingest is writing or was interrupted)' if ix['dirty'] else ''}",
                     markup=False)
        e = (ix.get("settings") or {}).get("embedding", {})
        runtime = ix.get("embedded_with") or {}
        how = f" via {runtime['backend']}" if runtime.get("backend") else ""
        how += f" on {runtime['device']}" if runtime.get("device") else ""
        if runtime.get("onnx_sha256"):
            how += f" (sha256 {runtime['onnx_sha256'][:12]})"
        stdout.print(f"  embedding model {e.get('model')}{how}", markup=False)
        if ix.get("vectors_error"):
            stdout.print(f"  vectors: {ix['vectors_error']}", style="red", markup=False)
        elif ix.get("vectors") is not None and ix["vectors"] != ix["chunks"] and not ix["dirty"]:
            stdout.print(f"  vectors: {ix['vectors']:,} for {ix['chunks']:,} chunk(s): run 'llmctl ingest --repair "
                         "PATH' with the folders you ingested", style="red", markup=False)
    else:
        stdout.print(f"No index in {printable(st.data_dir)} yet: run 'llmctl ingest PATH'", markup=False)
    r = st.reranker
    stdout.print(f"Reranker {r['model']}: {r['status']}" + (f" ({r['reason']}; results stay in fused order)"
                                                            if r.get("reason") else ""), markup=False)
    if r.get("hint"):
        stdout.print(f"  turn reranking on: {r['hint']}", markup=False)
    entries = "unknown" if st.cache["entries"] is None else st.cache["entries"]
    spent = money(st.ledger["spent_today_usd"]) + (" by this data dir (the team's: llmctl cost-report --shared)"
                                                    if st.ledger.get("shared") else "")
    stdout.print(f"Cache ({st.cache['path']}): {entries} answer(s); spent today: {spent}", markup=False)
    for p in st.providers:
        notes = [n for n, bad in ((f"{p['key_env']} is not set", not p["key_set"]),
                                  ("no price configured", not p["priced"])) if bad]
        stdout.print(f"Provider {p['name']}: {p['model']} at {p['base_url']}"
                     + (f" ({'; '.join(notes)})" if notes else ""), markup=False)


# Control characters other than tab and newline: in a model's answer or a document's text they
# would reach the terminal as escape sequences (a title change, a cleared screen, hidden text), and
# a document can steer the model that writes the answer. Shown escaped (\x1b), as paths are.
# Bidirectional overrides and isolates too: they make "gnp.exe" display as "exe.png".
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: str) -> str:
    """Text from a document or a model, safe for a terminal; tabs and line breaks kept."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def stream_token(text: str) -> None:
    global _mid_line
    sys.stdout.write(terminal_text(text))
    sys.stdout.flush()
    _mid_line = not text.endswith("\n")



def query_result(result, explain: bool = False) -> None:
    """Warnings were already shown as they happened (run_query's notify)."""
    global _mid_line
    if _mid_line:  # the end of a streamed answer, or of one cut short: what follows starts on its own line
        sys.stdout.write("\n")
        _mid_line = False
    if result.completion is not None:
        if result.citations:
            stdout.print("\nSources:")
            for s in result.citations:
                section = f"  ({terminal_text(s.heading)})" if s.heading else ""
                stdout.print(f"  [{s.n}] {printable(s.location())}{section}", markup=False)
        else:
            stdout.print("\n(no sources cited)")
    else:
        if not result.hits:
            stdout.print("No matching chunks.")
        for i, hit in enumerate(result.hits, start=1):
            final = hit.stages.get("rerank") or hit.stages.get("fused")
            stdout.print(f"{i}. {printable(hit.location())}  score {final[1]:.3f}", markup=False, style="bold")
            if hit.chunk.get("heading"):
                stdout.print(f"   {terminal_text(hit.chunk['heading'])}", markup=False, style="dim")
            if hit.chunk.get("also_in"):
                stdout.print(f"   also in: {printable(', '.join(hit.chunk['also_in']))}", markup=False, style="dim")
            stdout.print(_snippet(result.snippets[i - 1]) if i <= len(result.snippets)
                         else Text(terminal_text(hit.chunk.get("text", "")[:240])))
        if result.skipped == "no_model":
            from llmctl.search.pipeline import SKIPPED

            stderr.print(SKIPPED["no_model"], style="dim", markup=False, highlight=False)
    rr = result.rerank
    if rr.get("status") == "unavailable" and not explain:  # --explain says it in its trace
        stderr.print(f"reranking did not run ({rr.get('reason')}); turn it on: llmctl models pull {rr.get('model')} "
                     "(or, to stop this note, --no-rerank or rerank.enabled: false)",
                     style="dim", markup=False, highlight=False)
    if explain:
        _explain(result)


def _snippet(window: dict) -> Text:
    """The lines of a hit that best match the question, indented, with its matched words in bold."""
    text = Text("\n".join(f"   {terminal_text(line)}" for line in window["text"].splitlines()))
    if window["terms"]:
        text.highlight_regex(r"\b(" + "|".join(map(re.escape, window["terms"])) + r")\b", "bold yellow")
    return text


def _explain(result) -> None:
    from rich.table import Table

    table = Table(title="Stage trace", show_lines=False)
    for col in ("#", "chunk", "bm25", "dense", "fused", "rerank"):
        table.add_column(col, overflow="fold" if col == "chunk" else "ellipsis")  # a long path wraps, whole
    for i, hit in enumerate(result.hits, start=1):
        cells = []
        for stage in ("bm25", "dense", "fused", "rerank"):
            rs = hit.stages.get(stage)
            cells.append(f"#{rs[0]} {rs[1]:.3f}" if rs else "-")
        table.add_row(str(i), printable(hit.location()), *cells)
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
    if rr.get("status") == "unavailable" and rr.get("model"):
        from llmctl.models import pull_hint

        stderr.print(f"  turn reranking on: {pull_hint(rr['model'])}", markup=False)


def cost_report(report: dict) -> None:
    from rich.table import Table

    t = report["totals"]
    stdout.print(
        f"Requests {t['requests']}  attempts {t['attempts']}  errors {t['errors']} of {t['attempts']} "
        f"attempts ({t['error_rate']:.1%})  cache hits {t['cache_hits']}  refused {t['refused']}"
    )
    estimated = f" ({t['estimated_usage_calls']} call(s) estimated)" if t["estimated_usage_calls"] else ""
    unknown = f" + {t['unknown_cost_calls']} call(s) of unknown price" if t["unknown_cost_calls"] else ""
    stdout.print(
        f"Tokens in {t['tokens_in']:,}  out {t['tokens_out']:,}{estimated}  cost {money(t['cost_usd'])}"
        f"{unknown}  saved by cache {money(t['saved_by_cache_usd'])}"
    )

    def cost(s: dict) -> str:  # never a silent $0.00 for calls whose price is unknown
        if not s["unknown_cost_calls"]:
            return money(s["cost_usd"])
        return f"{money(s['cost_usd'])} + {s['unknown_cost_calls']} unknown" if s["cost_usd"] else "unknown"

    if t["latency_ms_p50"] is not None:
        stdout.print(f"Latency p50 {t['latency_ms_p50']:.0f} ms  p95 {t['latency_ms_p95']:.0f} ms")
    for dim in ("machine", "day", "provider", "model", "command", "tag"):
        groups = report["by"].get(dim)
        if not groups:
            continue
        table = Table(title=f"by {dim}", title_justify="left")
        for col in (dim, "requests", "tokens in", "tokens out", "cost", "errors", "p95 ms"):
            table.add_column(col, justify="left" if col == dim else "right")
        for key, s in groups.items():
            table.add_row(key, str(s["requests"]), f"{s['tokens_in']:,}", f"{s['tokens_out']:,}",
                          cost(s), str(s["errors"]),
                          "-" if s["latency_ms_p95"] is None else f"{s['latency_ms_p95']:.0f}")
        stdout.print(table)
    days = report["by"]["day"]
    if days:
        top = max(s["cost_usd"] or 0 for s in days.values()) or 1.0
        stdout.print("Cost per day:")
        for day, s in days.items():
            bar = "█" * max(0, round(30 * (s["cost_usd"] or 0) / top))
            stdout.print(f"  {day} {bar} {cost(s)}", markup=False)
    b = report["budget"]
    for who, periods in (("", b), *((f" (tag {t})", tb) for t, tb in b.get("tags", {}).items())):
        for period in ("daily", "monthly"):
            limit, spent = periods[period]["limit_usd"], periods[period]["spent_usd"]
            if who and limit is None:
                continue  # a tag's period without a limit: nothing to watch
            stdout.print(f"Budget {period}{who}: {money(spent)} of {'no limit' if limit is None else money(limit)}",
                         markup=False)


def spend_alerts(report: dict) -> None:
    for a in report.get("alerts") or []:
        stderr.print(f"ALERT {a['message']}", style="bold red", markup=False, highlight=False)


def cost_report_csv(report: dict) -> None:
    import csv

    w = csv.writer(sys.stdout)
    w.writerow(["dimension", "key", "requests", "attempts", "errors", "tokens_in", "tokens_out",
                "cost_usd", "unknown_cost_calls", "saved_by_cache_usd", "latency_ms_p50", "latency_ms_p95"])
    for dim, groups in report["by"].items():
        for key, s in groups.items():
            w.writerow([dim, key, s["requests"], s["attempts"], s["errors"], s["tokens_in"], s["tokens_out"],
                        s["cost_usd"], s["unknown_cost_calls"], s["saved_by_cache_usd"],
                        s["latency_ms_p50"], s["latency_ms_p95"]])


def cache_stats(stats: dict) -> None:
    if not stats["exists"]:
        stdout.print(f"No cache yet ({stats['path']}).")
        return

    def when(iso):
        return "-" if iso is None else iso[:16].replace("T", " ")

    def pct(v):
        return "-" if v is None else f"{v:.1%}"

    size = "" if stats["size_bytes"] is None else f", {stats['size_bytes'] / 1024:.1f} KiB"
    stdout.print(f"Cache {stats['path']}: {stats['entries']} entries ({stats['live']} live, {stats['expired']} "
                 f"expired, {stats['semantic_entries']} with embeddings){size}")
    stdout.print(f"Hit rate: exact {pct(stats['hit_rate']['exact'])} "
                 f"({stats['hits']['exact']}/{stats['lookups']['exact']}), "
                 f"semantic {pct(stats['hit_rate']['semantic'])} "
                 f"({stats['hits']['semantic']}/{stats['lookups']['semantic']})")
    saved = stats["saved"]
    usd = money(saved["usd"]) if not saved["unpriced_hits"] else (
        f"{money(saved['usd'])} + {saved['unpriced_hits']} hit(s) of unknown price" if saved["usd"] else "unknown")
    stdout.print(f"Saved {saved['tokens']:,} tokens, {usd}; "
                 f"invalidated by ingest: {stats['invalidations']}")
    stdout.print(f"Oldest {when(stats['oldest'])}, newest {when(stats['newest'])} (UTC)")
    if stats["cleared"] or stats["pruned"]:
        stdout.print(f"Removed {stats['cleared']} (clear) and {stats['pruned']} expired (prune).")


def write_report(path, text: str) -> None:
    """A report file the user asked for (its folder was checked before the run): a write that fails
    now (disk full, a file that takes no writes) is one line and exit 4."""
    from pathlib import Path

    from llmctl.errors import OutputError

    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {printable(str(path))} ({exc.strerror or type(exc).__name__}): "
                          "the report is incomplete") from None


def eval_outputs(outcome, *, json_out, junit_out, md_out, html_out, stages: bool) -> None:
    import os

    from rich.table import Table

    from llmctl.evals import report as rep

    r = outcome.report
    written = []
    for path, text in ((junit_out, lambda: rep.junit(r, outcome.result)), (md_out, lambda: rep.markdown(r)),
                       (html_out, lambda: rep.html_page(r))):
        if path:
            write_report(path, text())
            written.append(str(path))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(rep.markdown(r))
        except OSError as exc:  # the CI's file, not the user's flag: the run's results still count
            warn(f"GITHUB_STEP_SUMMARY {summary} could not be written ({exc.strerror}); the summary is skipped")
    if json_out == "-":
        print_json(r)
        return
    if json_out:
        write_report(json_out, json.dumps(r, indent=2, default=str))
        written.append(json_out)
    shown = list(r["metrics"]) if stages else [r["final_stage"]]
    thresholds = {t["metric"]: t for t in r["thresholds"]}
    unjudged = rep.unjudged(r)
    table = Table(title=f"llmctl eval: {r['suite']} ({len(r['cases'])} cases)", title_justify="left")
    table.add_column("metric")
    for s in shown:
        table.add_column(s + (" (final)" if s == r["final_stage"] and stages else ""), justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("result")
    for m in next(iter(r["metrics"].values())):
        t = thresholds.get(m)
        verdict = "" if t is None else ("[yellow]n/a[/]" if t.get("skipped") else
                                        "[green]pass[/]" if t["passed"] else "[red]FAIL[/]")
        table.add_row(m, *("-" if unjudged else f"{r['metrics'][s][m]:.3f}" for s in shown),
                      "-" if t is None else f"{t['threshold']:.3f}", verdict)
    stdout.print(table)
    failed = [c for c in r["cases"] if not c["passed"]]
    unchecked = sum(1 for c in r["cases"] if c["passed"] and c["answer_status"] in ("skipped", "stopped"))
    if all(c["answer_status"] == "not run" and not c["error"] for c in r["cases"]):  # retrieval only
        cases = f"Cases: {len(r['cases'])}, none with answer checks (the thresholds above are the verdict)"
    else:
        cases = (f"Cases: {len(r['cases']) - len(failed) - unchecked} passed, {len(failed)} failed"
                 + (f", {unchecked} with answer checks not run" if unchecked else ""))
    stdout.print(f"{cases}. Latency p50 {r['latency_ms']['p50']} ms, p95 {r['latency_ms']['p95']} ms "
                 f"(model loading {r['load_seconds']} s apart); "
                 f"cost {money(r['cost_usd'])}; {r['seconds']} s.", markup=False)
    for c in failed:
        why = c["error"] or "; ".join(x["check"] for x in c["checks"] if not x["passed"])
        stdout.print(f"  FAIL {c['id']}: {why}", markup=False)
    stdout.print(f"Coverage: {rep.coverage_text(r['coverage'])}.", markup=False)
    for line in rep.gate_lines(r):  # pass rate, flaky cases, A/B, clusters, power, sequential stopping
        (warn(line[9:]) if line.startswith("warning: ") else stdout.print(line, markup=False))
    b = r.get("baseline")
    if b and b["comparable"]:
        stdout.print(f"Baseline: compared on the {rep.shared_cases_text(b)}.", markup=False)
        for note in b.get("notes", []):
            warn(f"baseline: {note}")
        for row in b["metrics"]:
            flag = "  REGRESSED" if row["regressed"] else ""
            stdout.print(f"  {row['metric']}: {row['baseline']:.3f} -> {row['value']:.3f} "
                         f"({rep.test_text(row)}){flag}", markup=False)
    for notice in rep.notices(r):  # the same lines as in the JUnit and Markdown reports
        warn(notice)
    for w in written:
        stdout.print(f"Wrote {w}", markup=False)


def generate_report(report) -> None:
    d = report.to_dict()
    short = f" (asked for {d['requested']}: {d['stopped']})" if d["stopped"] else ""
    stdout.print(f"Wrote {d['output']}: {d['cases']} cases from {d['documents']} documents{short}, seed "
                 f"{d['seed']}, model {d['model']}, cost {money(d['cost_usd'])}.", markup=False)
    if d["dropped"]:
        reasons = ", ".join(f"{k} {v}" for k, v in d["drop_reasons"].items())
        stdout.print(f"Dropped {d['dropped']} candidate(s): {reasons}.", markup=False)
        for c in report.dropped:
            stdout.print(f"  - {c.expected}: {c.question!r}: {c.dropped}" if c.question else
                         f"  - {c.expected}: {c.dropped}", markup=False)
    stdout.print(f"Next: review the questions, then run: llmctl eval {d['output']}", markup=False)


def trust_report(entries, store: str, *, listing: bool, as_json: bool) -> None:
    """`llmctl trust`: the file trusted or revoked, or (--list) every trusted file and its state."""
    if as_json:
        print_json({"store": store, "files": [e.to_dict() for e in entries]})
        return
    if listing and not entries:
        stdout.print(f"No trusted configs ({printable(store)}).", markup=False)
    for e in entries:
        path = printable(e.path)
        if listing:
            note = {"changed": "  (changed since: review it, then run llmctl trust FILE)",
                    "missing": "  (gone: llmctl trust --revoke FILE forgets it)"}.get(e.state, "")
            stdout.print(f"{e.state:<8} {e.trusted_at}  {path}{note}", markup=False)
        elif e.state == "trusted":
            stdout.print(f"Trusted {path} (sha256 {e.sha256[:12]}): llmctl may now send data where it says. "
                         "Any edit makes it untrusted again.", markup=False)
        elif e.state == "revoked":
            stdout.print(f"No longer trusted: {path}", markup=False)
        else:
            stdout.print(f"{path} was not trusted: nothing to revoke.", markup=False)
