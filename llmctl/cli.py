"""The llmctl command line: parse, load config, call the core, render. Nothing else."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmctl.index.manifest import FILTERS


class _PlainArgument(typer.core.TyperArgument):
    """An argument shown as it is typed, in the usage line (``PATH...``, ``[SUITE]...``) and in
    the argument list (``PATH...``), not as Typer shows it (``{PATH}...``, ``PATH <list[Path]>``)."""

    def _plain_name(self) -> str:
        return (self.metavar or (self.name or "").upper()) + ("..." if self.nargs != 1 else "")

    def get_usage_pieces(self, ctx) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        return [(name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")]

    def get_help_record(self, ctx):
        record = super().get_help_record(ctx)
        return None if record is None else (self._plain_name(), record[1])


class _Group(typer.core.TyperGroup):
    """The command group whose commands' (and subgroups' commands') arguments show as typed."""

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        groups = [self]
        while groups:
            for command in groups.pop().commands.values():
                groups.extend([command] if isinstance(command, typer.core.TyperGroup) else [])
                for param in command.params:
                    if type(param) is typer.core.TyperArgument:
                        param.__class__ = _PlainArgument


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click help: rich help rendering alone costs ~170 ms of start-up
    help="From RAG demo to RAG in production: ingest, query, eval and cost control.",
)


class State:
    config_path: Path | None = None
    data_dir: str | None = None
    verbose: int = 0


state = State()


def _workspace(**overrides):
    """The Workspace of --config / $LLMCTL_CONFIG / ./llmctl.yaml and --data-dir, with dotted-key overrides."""
    from llmctl.workspace import Workspace

    return Workspace(config_path=state.config_path, data_dir=state.data_dir, **overrides)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        sys.stdout.write(f"llmctl {version('llmctl')}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", metavar="FILE", help="YAML config file (default: $LLMCTL_CONFIG, ./llmctl.yaml, built-ins).",
        show_default=False)] = None,
    data_dir: Annotated[str | None, typer.Option(  # a str: Path("") would be the working directory
        metavar="DIR", help="Where indexes, manifest, cache and ledger live (config: data_dir).",
        show_default=False)] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging on stderr.")] = 0,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, help="Print the version and exit.")] = False,
) -> None:
    if data_dir is not None and not data_dir.strip():
        raise typer.BadParameter("is empty: give a folder (default .llmctl), or leave the flag out",
                                 param_hint="--data-dir")
    state.config_path, state.data_dir, state.verbose = config, data_dir, verbose
    if verbose:
        import logging

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger("llmctl").addHandler(handler)
        logging.getLogger("llmctl").setLevel(logging.INFO if verbose == 1 else logging.DEBUG)


@app.command()
def ingest(
    # readable=False here and in remove: an unreadable path is the core's to report (exit 4, not 2)
    paths: Annotated[list[Path], typer.Argument(
        help="Files or folders to ingest.", show_default=False, metavar="PATH", readable=False)],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Report what would change; write nothing.")] = False,
    rebuild: Annotated[bool, typer.Option(
        "--rebuild", help="Re-embed everything into a new index; the paths must cover every indexed file.")] = False,
    repair: Annotated[bool, typer.Option(
        "--repair", help="Check the vector store against the manifest; re-embed only what is missing.")] = False,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Stop at the first file that cannot be ingested.")] = False,
    include: Annotated[list[str] | None, typer.Option(
        "--include", metavar="GLOB",
        help="Only look at files matching GLOB (repeatable; replaces ingest.include). A GLOB with '/' "
             "matches the path under the folder: 'guides/*.md', 'guides/**/*.md'. "
             "Indexed files it leaves out are kept.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", metavar="GLOB",
        help="Do not look at files or folders matching GLOB (repeatable; added to ingest.exclude). "
             "Indexed files it leaves out are kept.")] = None,
    wait: Annotated[float, typer.Option(
        help="Seconds to wait for another ingest to finish.", min=0, metavar="SECONDS")] = 0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON report on stdout (with --watch: one line per sync).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Keep syncing as files change, until Ctrl-C (changes are batched).")] = False,
) -> None:
    """Load, chunk and embed documents into the local index (incremental).

    Files that disappeared from a folder you ingest are dropped from the index; --include and
    --exclude only narrow what this run looks at and never delete anything (to drop files
    from the index, use 'llmctl remove PATH'). Ctrl-C commits what is embedded, then exits 130.

    Example: llmctl ingest ./docs
    """
    from llmctl import render

    ws = _workspace(**{"ingest.include": include})
    if exclude:
        ws.cfg.ingest.exclude = ws.cfg.ingest.exclude + list(exclude)
    if watch:
        if dry_run or rebuild or repair:
            raise typer.BadParameter("cannot be combined with --dry-run, --rebuild or --repair", param_hint="--watch")
        from llmctl.interrupts import stop_requests

        with stop_requests() as stop:
            ws.watch(paths, stop=stop, on_report=lambda r: render.sync_line(r, as_json), on_error=render.warn,
                     strict=strict or None, wait_seconds=wait, on_start=lambda: render.stderr.print(
                         f"watching {', '.join(map(str, paths))}… (Ctrl-C to stop)", markup=False, highlight=False))
        render.stderr.print("Stopped watching.", markup=False)
        return
    with render.RichProgress(enabled=not quiet and not as_json) as progress:
        report = ws.ingest(paths, dry_run=dry_run, rebuild=rebuild, repair=repair, strict=strict or None,
                           wait_seconds=wait, progress=progress, release_vectors=True)  # this process exits
    if as_json:
        render.ingest_warnings(report)
        render.print_json(report.to_dict())
    else:
        render.ingest_report(report)


@app.command()
def remove(
    paths: Annotated[list[Path], typer.Argument(
        help="Files or folders whose indexed files to drop (they may no longer exist).",
        show_default=False, metavar="PATH", readable=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be removed; write nothing.")] = False,
    wait: Annotated[float, typer.Option(
        help="Seconds to wait for another ingest to finish.", min=0, metavar="SECONDS")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON report on stdout.")] = False,
) -> None:
    """Drop every indexed file under PATH from the index (manifest, vectors and BM25).

    Example: llmctl remove docs/old-guides --dry-run
    """
    from llmctl import render

    report = _workspace().remove(paths, dry_run=dry_run, wait_seconds=wait)
    if as_json:
        render.print_json(report.to_dict())
    else:
        render.remove_report(report)


@app.command()
def query(
    question: Annotated[str, typer.Argument(help="The question ('-' reads it from stdin).", metavar="QUESTION")],
    k: Annotated[int | None, typer.Option(
        "--k", "-k", help="Hits to keep (retrieval.k).", metavar="N")] = None,
    dense_k: Annotated[int | None, typer.Option(help="Dense candidates (retrieval.dense_k).", metavar="N")] = None,
    bm25_k: Annotated[int | None, typer.Option(help="BM25 candidates (retrieval.bm25_k).", metavar="N")] = None,
    depth: Annotated[int | None, typer.Option(help="Candidates to rerank (rerank.depth).", metavar="N")] = None,
    fusion: Annotated[str | None, typer.Option(
        help="zscore, weighted or rrf (retrieval.fusion).", metavar="zscore|weighted|rrf")] = None,
    where: Annotated[list[str] | None, typer.Option(
        "--where", metavar="FIELD=VALUE",
        help=f"Filter (repeatable): FIELD is {', '.join(FILTERS)}; e.g. ext=md, source='docs/*'.",
    )] = None,
    no_llm: Annotated[bool, typer.Option(
        "--no-llm", help="Retrieval only, even if a model is configured.")] = False,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Skip the cross-encoder.")] = False,
    skip_irrelevant: Annotated[bool | None, typer.Option(
        "--skip-irrelevant/--answer-always",
        help="Call no model when nothing relevant was found (llm.skip_when_irrelevant).")] = None,
    explain: Annotated[bool, typer.Option(
        "--explain", help="Show each stage's ranks, scores, latency.")] = False,
    tag: Annotated[str | None, typer.Option(help="Label for the ledger and per-tag budgets.", metavar="NAME")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Ask a question: hybrid retrieval, reranking and a streamed, cited answer.

    With no model configured, query shows the passages it found and ends with a line on stderr,
    "retrieval only: no model configured (llm.providers)". For written, cited answers, add an
    OpenAI-compatible model (OpenAI, a llama.cpp or vLLM server...) to llmctl.yaml, export
    the key, then run 'llmctl trust' once (or name the file with --config llmctl.yaml):

    \b
      llm:
        providers:
          - name: openai
            base_url: https://api.openai.com/v1
            model: gpt-4o-mini
            api_key_env: OPENAI_API_KEY   # the variable's name, never the key

    Example: llmctl query "How many daily snapshots are kept?"
    """
    from llmctl import render
    from llmctl.search.pipeline import read_question

    # The Workspace validates every value (exit 2 with one line naming it), as for serve and MCP.
    result = _workspace().query(
        read_question(question), k=k, where=where, rerank=False if no_rerank else None, use_llm=not no_llm,
        tag=tag, on_token=None if as_json else render.stream_token, notify=None if as_json else render.warn,
        dense_k=dense_k, bm25_k=bm25_k, depth=depth, fusion=fusion, skip_irrelevant=skip_irrelevant)
    if as_json:
        render.print_json(result.to_dict())
    else:
        render.query_result(result, explain=explain)
    if result.error is not None:
        raise result.error


@app.command(name="eval")
def eval_(
    suites: Annotated[list[Path] | None, typer.Argument(
        help="Golden-query suite (YAML).", show_default=False, metavar="SUITE")] = None,
    beir: Annotated[Path | None, typer.Option(help="A BEIR dataset folder instead of a suite.", metavar="DIR")] = None,
    split: Annotated[str, typer.Option(help="BEIR qrels split (qrels/<split>.tsv).", metavar="NAME")] = "test",
    stages: Annotated[bool, typer.Option("--stages", help="Show BM25, dense, hybrid, reranked apart.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N cases.", metavar="N")] = None,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="Only cases with this tag (repeatable).", metavar="NAME")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout.")] = False,
    json_file: Annotated[Path | None, typer.Option(
        "--json-file", help="Write the JSON report to a file.", metavar="FILE")] = None,
    junit_out: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report.", metavar="FILE")] = None,
    md_out: Annotated[Path | None, typer.Option("--markdown", help="Write a Markdown summary.", metavar="FILE")] = None,
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Write a self-contained HTML report.", metavar="FILE")] = None,
    baseline: Annotated[Path | None, typer.Option(
        help="Compare with an earlier --json report.", metavar="FILE")] = None,
    against: Annotated[Path | None, typer.Option(help="A/B: also run with this config file.", metavar="FILE")] = None,
    no_answers: Annotated[bool, typer.Option("--no-answers", help="Retrieval metrics only.")] = False,
    record: Annotated[Path | None, typer.Option(
        help="Write every model call (answers, judge) to this cassette.", metavar="FILE")] = None,
    replay: Annotated[Path | None, typer.Option(
        help="Answer from a recorded cassette: no provider, key or network.", metavar="FILE")] = None,
    batch: Annotated[bool, typer.Option(
        "--batch", help="Send answers (and judge calls) as one Batch API job: half the price, slower.")] = False,
    repeats: Annotated[int | None, typer.Option(
        help="Ask each answer (and verdict) N times: pass rates, flaky cases (suite: repeats).", metavar="N")] = None,
    stop_when_decided: Annotated[bool, typer.Option(
        "--stop-when-decided",
        help="Answer in a seeded random order; stop paying once the verdict is decided.")] = False,
    plan: Annotated[bool, typer.Option(
        "--plan", help="Retrieval only (free): the smallest drop each gated metric can show, then exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a golden-query suite or a BEIR dataset; exit 9 when a quality gate fails.

    Example: llmctl eval configs/sample-suite.yaml --junit report.xml
    """
    from llmctl import render

    suite, json_out = _eval_targets(suites or [], beir, as_json, json_file)
    _writable(("--json-file", json_file), ("--junit", junit_out), ("--markdown", md_out), ("--html", html_out),
              inputs=[p for p in (suite, baseline, against, replay) if p is not None])
    if plan:
        from llmctl.evals.report import plan_text

        if suite is None:
            raise typer.BadParameter("--plan needs a suite file", param_hint="--plan")
        unused = [flag for flag, value in (("--junit", junit_out), ("--markdown", md_out), ("--html", html_out),
                                           ("--against", against), ("--record", record), ("--replay", replay),
                                           ("--batch", batch), ("--stop-when-decided", stop_when_decided))
                  if value]
        if unused:  # a plan answers nothing and writes only its JSON: a CI step must not wait for a file
            raise typer.BadParameter(f"cannot be combined with {unused[0]} (a plan runs retrieval only; its "
                                     "report is --json or --json-file)", param_hint="--plan")
        with render.RichProgress(enabled=not quiet and json_out != "-") as progress:
            planned = _workspace().plan(suite, limit=limit, tags=list(tag or []), baseline=baseline,
                                        repeats=repeats, progress=progress)
        if json_out == "-":
            return render.print_json(planned)
        if json_out:
            import json

            render.write_report(json_out, json.dumps(planned, indent=2, default=str))
        return print(plan_text(planned))
    with render.RichProgress(enabled=not quiet and json_out != "-") as progress:
        outcome = _workspace().evaluate(
            suite, beir=beir, split=split, limit=limit, tags=list(tag or []), baseline=baseline,
            answers=not no_answers, progress=progress, against=against, record=record, replay=replay, batch=batch,
            repeats=repeats, stop_when_decided=stop_when_decided)
    render.eval_outputs(outcome, json_out=json_out, junit_out=junit_out, md_out=md_out, html_out=html_out,
                        stages=stages)
    if not outcome.passed:
        from llmctl.errors import EvalGateFailed

        raise EvalGateFailed(outcome.failure_summary())


@app.command()
def tune(
    suite: Annotated[Path, typer.Argument(
        help="Golden-query suite (YAML) whose cases name expected sources.", show_default=False, metavar="SUITE")],
    metric: Annotated[str | None, typer.Option(help="What to maximise (default: mrr@10).", metavar="NAME")] = None,
    write: Annotated[bool, typer.Option(
        "--write", help="Write a significant change into the config file in use.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N cases.", metavar="N")] = None,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="Only cases with this tag (repeatable).", metavar="NAME")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Choose fusion settings for this corpus: the best of a small grid on half the suite's cases,
    kept only if the other half confirms it (paired bootstrap, p < 0.05). Retrieval only: free.

    Example: llmctl tune my-suite.yaml --write
    """
    from llmctl import render
    from llmctl.evals.tune import tune_text

    with render.RichProgress(enabled=not quiet and not as_json) as progress:
        report = _workspace().tune(suite, metric=metric, limit=limit, tags=list(tag or []), write=write,
                                   progress=progress)
    render.print_json(report) if as_json else print(tune_text(report))


@app.command()
def generate(
    cases: Annotated[int, typer.Option("--cases", "-n", help="Questions to keep.", metavar="N")] = 20,
    output: Annotated[Path, typer.Option("--output", "-o", help="The suite file to write.", metavar="FILE")] = Path(
        "generated-suite.yaml"),
    seed: Annotated[int, typer.Option(
        help="Sampling seed: the same seed asks the same questions.", metavar="N")] = 0,
    max_overlap: Annotated[float, typer.Option(
        help="Drop questions with this share of their terms in the passage (0-1).", min=0.0, max=1.0,
        metavar="SHARE")] = 0.9,
    force: Annotated[bool, typer.Option("--force", help="Replace --output if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report, every dropped candidate too.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write a golden-query suite from the index with the configured model; `llmctl eval` runs it.

    Example: llmctl generate --cases 30 --output suite.yaml && llmctl eval suite.yaml
    """
    from llmctl import render
    from llmctl.evals.generate import TRIES_PER_CASE, NothingGenerated

    _writable(("--output", output))
    with render.RichProgress(enabled=not quiet and not as_json) as progress:
        # candidates asked: 1.5 per case at first, more when too many are dropped (at most TRIES_PER_CASE)
        total, asked = -(-cases * 3 // 2), [0]
        task = progress.task("Generating questions", total)

        def on_candidate() -> None:
            asked[0] += 1
            if asked[0] > total:
                task.set_total(min(asked[0] + -(-cases // 2), TRIES_PER_CASE * cases))
            task.advance(1)

        try:
            report = _workspace().generate(cases, output, seed=seed, max_overlap=max_overlap, force=force,
                                           on_candidate=on_candidate)
        except NothingGenerated as exc:
            if as_json:  # every candidate's reason, then the error
                render.print_json(exc.report.to_dict())
            raise
        finally:
            task.done()
    if as_json:
        render.print_json(report.to_dict())
    else:
        render.generate_report(report)


def _writable(*flags: tuple[str, Path | None], inputs: list[Path] = ()) -> None:
    """Each report file can be written: checked (its folder made) before any paid work, so a typo
    in a path is a usage error at the start, not a traceback after the run; no two reports share a
    file and none overwrites a file the run reads (``inputs``: the suite, the baseline...)."""
    seen: dict[Path, str] = {p.resolve(): "an input of this run" for p in inputs}
    for flag, path in flags:
        if path is None or str(path) == "-":
            continue
        where = path.resolve()
        if where in seen:
            raise typer.BadParameter(f"{path} is also {seen[where]}: give each report its own file", param_hint=flag)
        seen[where] = flag
        if path.is_dir():
            raise typer.BadParameter(f"{path} is a folder: give a file name", param_hint=flag)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise typer.BadParameter(f"cannot make the folder {path.parent} ({exc.strerror})",
                                     param_hint=flag) from None
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise typer.BadParameter(f"{path} is not writable", param_hint=flag)


def _eval_targets(paths: list[Path], beir: Path | None, as_json: bool,
                  json_file: Path | None) -> tuple[Path | None, str | None]:
    """The suite and where the JSON report goes ('-': stdout).

    `--json` used to take a file: a script written for that passes it as one argument too many.
    """
    if as_json:  # the old `--json -` means what the flag means now
        paths = [p for p in paths if p != Path("-")]
    allowed = 0 if beir else 1
    if len(paths) > allowed:
        extra = paths[allowed]
        fix = (f"use --json-file {extra} to write the report to a file (--json prints it on stdout)" if as_json
               else "give one suite per run" if not beir else "--beir DIR runs without a suite file")
        raise typer.BadParameter(f"unexpected argument {str(extra)!r}: {fix}", param_hint="SUITE")
    if as_json and json_file:
        raise typer.BadParameter("give --json (stdout) or --json-file FILE, not both", param_hint="--json")
    if not paths and beir is None:
        raise typer.BadParameter("give a suite file or --beir DIR (one of them)")
    return (paths[0] if paths else None), ("-" if as_json else (str(json_file) if json_file else None))


@app.command()
def cost_report(
    since: Annotated[str | None, typer.Option(help="From YYYY-MM-DD, 'today' or '7d'.", metavar="DATE")] = None,
    until: Annotated[str | None, typer.Option(help="Before YYYY-MM-DD (exclusive).", metavar="DATE")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the breakdowns as CSV.")] = False,
    shared: Annotated[bool, typer.Option(
        "--shared", help="The whole team's ledger rows (state.backend: redis), per machine too.")] = False,
    alerts: Annotated[bool, typer.Option(
        "--alerts", help="Flag days/hours far above their trailing baseline (llm.budget.alerts); exit 10.")] = False,
) -> None:
    """Show LLM spend, tokens, errors and latency from the call ledger.

    Example: llmctl cost-report --since 7d
    """
    from llmctl import render
    from llmctl.errors import InputError, SpendAlert

    if as_json and as_csv:
        raise typer.BadParameter("give --json or --csv, not both", param_hint="--csv")
    try:
        report = _workspace().cost_report(since, until, shared=shared, alerts=alerts)
    except InputError as exc:  # a date flag: a usage error
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        render.print_json(report)
    elif as_csv:
        render.cost_report_csv(report)
    else:
        render.cost_report(report)
        render.spend_alerts(report)  # one line each on stderr
    if report.get("alerts"):
        found = report["alerts"]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise SpendAlert(f"{len(found)} spend alert(s): {found[0]['message']}{more}")


@app.command()
def cache_stats(
    clear: Annotated[bool, typer.Option("--clear", help="Delete every cached answer.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Delete expired answers.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show response-cache size, hit rates, savings and invalidations.

    Example: llmctl cache-stats --prune
    """
    from llmctl import render

    stats = _workspace().cache_stats(clear=clear, prune=prune)
    if as_json:
        render.print_json(stats)
    else:
        render.cache_stats(stats)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show the index (files, chunks, settings), the reranker, the cache and today's spend.

    Example: llmctl status --json
    """
    from llmctl import render

    st = _workspace().status()
    if as_json:
        render.print_json(st.to_dict())
    else:
        render.status(st)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; beyond loopback needs $LLMCTL_SERVE_TOKEN.",
                                      metavar="ADDR")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).", min=0, max=65535, metavar="N")] = 8765,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No request log on stderr.")] = False,
    watch: Annotated[list[Path] | None, typer.Option(
        "--watch", metavar="PATH", help="Also keep PATH ingested as files change (repeatable).")] = None,
) -> None:
    """Serve search and answers over local HTTP, models loaded once (JSON; SSE streams).

    POST /search {"query": "...", "k": 5}, POST /query {"question": "...", "stream": true},
    GET /status, GET /chunks/ID, GET /documents/DOC_ID. Stop with Ctrl-C.

    Example: llmctl serve --port 8765
    """
    from llmctl.serve import serve as run

    def ready(url: str) -> None:
        sys.stdout.write(f"llmctl serve: listening on {url}\n")
        sys.stdout.flush()

    run(_workspace(), host, port, quiet=quiet, ready=ready, watch=watch)


@app.command()
def mcp() -> None:
    """Serve the index to AI agents as Model Context Protocol tools over stdio.

    Tools: search, get_chunk, get_document, status, and query when llm.providers is set.
    Register it in an MCP client (README: "llmctl mcp") as a command.

    Example: llmctl --data-dir ~/docs-index mcp
    """
    from llmctl.mcp_server import run

    run(_workspace())


@app.command()
def trust(
    file: Annotated[Path | None, typer.Argument(
        help="The config file (default: ./llmctl.yaml).", show_default=False, metavar="FILE")] = None,
    list_: Annotated[bool, typer.Option("--list", help="Show every trusted file and whether it changed.")] = False,
    revoke: Annotated[bool, typer.Option("--revoke", help="Stop trusting FILE.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Trust a project's ./llmctl.yaml to send data elsewhere, like direnv's `allow`.

    A ./llmctl.yaml that llmctl finds by itself may tune retrieval, chunking and ingest
    without this; one that sends questions, documents or keys elsewhere (llm.providers,
    an embedding endpoint, a Chroma server...) stops with exit 3 until you review it and
    trust it. Its sha256 is recorded: any edit makes it untrusted again. --config FILE
    and $LLMCTL_CONFIG are always trusted.

    Example: llmctl trust
    """
    from llmctl import render
    from llmctl import trust as store

    if list_ and (revoke or file is not None):
        raise typer.BadParameter("--list takes no FILE and no --revoke", param_hint="--list")
    entries = store.entries() if list_ else [store.revoke(file) if revoke else store.trust(file)]
    render.trust_report(entries, str(store.store_path()), listing=list_, as_json=as_json)


models_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Fetch models into the local Hugging Face cache (the only command that goes online).")
app.add_typer(models_app, name="models")


@models_app.command("pull")
def models_pull(
    name: Annotated[str | None, typer.Argument(
        help="A hub repo id (default: the configured rerank.model).", show_default=False, metavar="NAME")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Download a model (a cross-encoder reranker or a sentence-transformers model) from the
    Hugging Face Hub ($HF_ENDPOINT) into the local cache ($HF_HOME), check every file, load it
    offline, and print its folder, size and sha256. Reranking then works offline.

    Example: llmctl models pull cross-encoder/ms-marco-MiniLM-L-6-v2
    """
    from llmctl import render
    from llmctl.models import pull

    result = pull(name or _workspace().cfg.rerank.model)
    if as_json:
        render.print_json(result.to_dict())
        return
    mb = result.size_bytes / 1e6
    sys.stdout.write(f"Pulled {result.name} ({result.kind}, loads offline)\n"
                     f"  folder: {result.folder}\n"
                     f"  size:   {mb:.1f} MB ({result.size_bytes} bytes, {result.files} files)\n"
                     f"  sha256: {result.sha256}\n")
    if result.note:
        sys.stdout.write(f"  note:   {result.note}\n")


# Typer vendors Click: reach its exception classes through the public BadParameter.
_USAGE_ERROR = typer.BadParameter.__mro__[1]
_CLICK_ERROR = typer.BadParameter.__mro__[2]


_command = None


def _click_command():
    """The Click command Typer builds from ``app``: built once per process (~0.1 s), not at every
    ``run`` (the tests run hundreds of commands in one process). What ``app(...)`` does besides
    is install Typer's excepthook, which with pretty exceptions off defers to the default one."""
    global _command
    if _command is None:
        _command = typer.main.get_command(app)
    return _command


def main() -> None:
    """Entry point: the one place that turns errors into a one-line message and an exit code."""
    from llmctl.render import GuardedStream

    sys.stdout, sys.stderr = GuardedStream(sys.stdout, "stdout"), GuardedStream(sys.stderr, "stderr")
    sys.exit(run())


def run(args: list[str] | None = None, prog_name: str | None = None) -> int:
    """``main`` without ``sys.exit``: run the command line ``args`` (default: ``sys.argv[1:]``)
    and return its exit code, having written any error as one line on stderr (the tests call
    this in-process)."""
    try:
        return _run(args, prog_name)
    except BrokenPipeError:  # written to directly (not through rich) after the reader left
        from llmctl.render import quiet_stdout

        quiet_stdout()
        raise  # not reached: quiet_stdout exits 141


def _run(args: list[str] | None, prog_name: str | None) -> int:
    from llmctl.errors import Interrupted, LlmctlError, OutputError, UsageError, printable
    from llmctl.interrupts import terminate_as_interrupt

    debug = os.environ.get("LLMCTL_DEBUG") == "1"
    terminate_as_interrupt()
    try:
        code = _click_command()(args=args, prog_name=prog_name, standalone_mode=False)
    except SystemExit as exc:  # click's answer to EPIPE on stdout: exit 1, stdout wrapped to hush the last flush
        if exc.code == 1 and type(sys.stdout).__name__.lstrip("_") == "PacifyFlushWrapper":
            from llmctl.render import quiet_stdout

            quiet_stdout()  # exit 141, as rich's output does when the pipe's reader left
        raise
    except Interrupted as exc:
        sys.stderr.write(f"{printable(str(exc))}\n")
        return exc.exit_code
    except LlmctlError as exc:
        if debug:  # the traceback too; the exit code stays the documented one
            import traceback

            traceback.print_exc()
        message = exc.as_flag() if isinstance(exc, UsageError) else str(exc)
        with contextlib.suppress(OutputError):  # stderr itself cannot be written: the exit code is left
            sys.stderr.write(f"Error: {printable(message)}\n")  # always one line
        return exc.exit_code
    except _USAGE_ERROR as exc:  # a bad flag or value: one line, exit 2 (help itself is shown whole)
        if type(exc).__name__ == "NoArgsIsHelpError":
            with contextlib.suppress(OutputError):
                exc.show()
            return exc.exit_code
        command = f"llmctl {exc.ctx.info_name}" if exc.ctx and exc.ctx.parent else "llmctl"
        with contextlib.suppress(OutputError):  # stderr itself cannot be written: the exit code is left
            sys.stderr.write(f"Error: {printable(' '.join(exc.format_message().split()))} "
                             f"(see '{command} --help')\n")
        return 2
    except _CLICK_ERROR as exc:
        with contextlib.suppress(OutputError):
            exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    if code == 130:  # Typer turns Ctrl-C into exit code 130 before llmctl sees it
        sys.stderr.write("Interrupted: stopped before finishing; nothing was left half-written (work already "
                         "committed is kept), run again to continue\n")
    return code if isinstance(code, int) else 0
