"""``Workspace``: one config and one data dir, the composition point of llmctl.

    from llmctl import Workspace

    ws = Workspace(data_dir="./.llmctl")           # or Workspace.from_config("llmctl.yaml")
    ws.ingest(["docs"])
    for hit in ws.search("How many daily snapshots are kept?", k=3):
        print(hit.location(), hit.chunk["text"][:80])
    answer = ws.query("How many daily snapshots are kept?")   # needs llm.providers
    print(ws.status().to_dict())

It builds each component once from the config (the embedder that ingests, the retriever
and reranker that search) and owns every path of the data dir (``DataDir``). The CLI, and
anything else that uses llmctl, builds a Workspace and calls one method.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from llmctl.config import Config, load_config
from llmctl.datadir import DataDir
from llmctl.errors import IndexStateError, UsageError
from llmctl.progress import Progress
from llmctl.records import IngestReport


@dataclass
class Status:
    """What a data dir holds, and what the configured parts can do here."""

    data_dir: str
    index: dict  # exists, folder, files, documents, chunks, dirty, settings
    reranker: dict  # model, enabled, status (available | unavailable | disabled), reason
    cache: dict  # entries, path
    ledger: dict  # spent today, path
    providers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Workspace:
    def __init__(self, config: Config | None = None, *, config_path: Path | str | None = None,
                 data_dir: Path | str | None = None, **overrides):
        """A workspace from a Config, or loaded like the CLI does (``config_path``, then
        $LLMCTL_CONFIG, ./llmctl.yaml, built-ins) with dotted-key ``overrides``. A ``config_path``
        is trusted; a ./llmctl.yaml found here that sends data elsewhere (llm.providers, an
        embedding endpoint, a Chroma server...) raises ConfigError until ``llmctl trust``."""
        if config is not None and not isinstance(config, Config):
            raise UsageError(f"expected a Config (or config_path=FILE for a file), got {config!r}", "config")
        for name, value in (("config_path", config_path), ("data_dir", data_dir)):
            if value is not None and not isinstance(value, (str, Path)):
                raise UsageError(f"expected a path, got {value!r}", name)
        if config is None:
            config = load_config(Path(config_path) if config_path else None,
                                 {"data_dir": None if data_dir is None else str(data_dir), **overrides})
        self.cfg = config
        self.data = self._published()
        self._lock = threading.Lock()
        self._retriever = None
        self._version: tuple[str, str] | None = None

    @classmethod
    def from_config(cls, path: Path | str, **overrides) -> Workspace:
        return cls(config_path=path, **overrides)

    # -- components, built once -------------------------------------------------------
    @cached_property
    def embedder(self):
        from llmctl.embedding import make_embedder

        return make_embedder(self.cfg, self.data, command="ingest", export=True)

    @property
    def retriever(self):
        """The reader of the index published last: a new one after any ingest (in this
        process or another), reusing a loaded embedding model when it is the index's."""
        from llmctl.search.retrieve import Retriever

        version = self.data.version()
        with self._lock:
            old = self._retriever
            if old is None or version != self._version:
                new = Retriever(self.cfg, self._published())
                # a model already loaded here (the last reader's, or ingest's) embeds queries too
                donor = (old.__dict__.get("embedder") if old is not None else None) or self.__dict__.get("embedder")
                if (donor is not None and donor.shareable
                        and not donor.note  # a fallback note is ingest's to give, not every search's
                        and donor.cfg.model_copy(update={"model": donor.model_id}) == new.embedding_cfg):
                    new._embedder = donor
                # the old reader is not closed here: a query on another thread may still use it
                self._retriever, self._version = new, version
            return self._retriever

    def warm(self) -> list[str]:
        """Load what a search needs now (model, vector store, BM25), not on the first search;
        returns what the user should know (an embedding backend's fallback), for a server's log."""
        r = self.retriever
        r.embedder.load()
        _ = r.store, r.keyword
        return [r.embedder.note] if r.embedder.note else []

    @cached_property
    def gateways(self):
        """Every model call's gateway (ledger, answer cache, budgets, rate limits), opened once per
        thread and handed to query, eval and generate (``GatewayPool.call``)."""
        from llmctl.llm.gateway import GatewayPool

        return GatewayPool(self.cfg, self.data)

    @cached_property
    def reranker(self):
        from llmctl.search.rerank import Reranker

        return Reranker(self.cfg.rerank, self.cfg.embedding)

    def _written(self, dry_run: bool, write: Callable[[], IngestReport]) -> IngestReport:
        """Run an index write; then reopen the index and drop cached answers built from what it deleted."""
        try:
            report = write()
        finally:
            if not dry_run:
                self._reopen()
        report.cache_invalidated = self._invalidate_cache(report.deleted_ids)
        return report

    def _reopen(self) -> None:
        """After a write: the next search opens the index that was just published. The old
        reader is dropped, not closed: a search on another thread (serve --watch) may use it."""
        with self._lock:
            self._retriever = None
        self.data = self._published()

    def _published(self) -> DataDir:
        """The data dir, with the index published last (a ``DataDir`` resolves ``INDEX`` once, when
        made). The one place a config's ``data_dir`` becomes the ``DataDir`` every component takes."""
        return DataDir(self.cfg.data_dir)

    def close(self) -> None:
        with self._lock:
            if self._retriever is not None:
                self._retriever.close()
            self._retriever = None
        if "gateways" in self.__dict__:
            self.gateways.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what users do ----------------------------------------------------------------
    def ingest(self, paths: list[Path | str], *, dry_run: bool = False, rebuild: bool = False,
               repair: bool = False, strict: bool | None = None, wait_seconds: float = 0,
               progress: Progress | None = None, release_vectors: bool = False, stop_event=None) -> IngestReport:
        """Sync files and folders into the index (see ``llmctl ingest --help``; ``release_vectors``:
        see ``llmctl.ingest.pipeline.ingest``). ``stop_event`` (an Event): set, the run stops at its
        next safe point as Ctrl-C stops it (``Interrupted``), from any thread."""
        from llmctl.ingest.pipeline import ingest

        roots, wait = _paths(paths), _wait(wait_seconds)
        if strict is not None and not isinstance(strict, bool):
            raise UsageError(f"expected true, false or None, got {strict!r}", "strict")
        return self._written(dry_run, lambda: ingest(
            roots, self.cfg, self._published(), dry_run=dry_run, rebuild=rebuild, repair=repair,
            strict=strict, wait_seconds=wait, progress=progress, embedder=self.embedder,
            release_vectors=release_vectors, stop_event=stop_event))

    def watch(self, paths: list[Path | str], *, stop, on_report: Callable[[IngestReport], None],
              on_error: Callable[[Exception], None], debounce_ms: int = 1000,
              on_start: Callable[[], None] | None = None, **ingest_options) -> None:
        """Ingest ``paths``, then again after every burst of file changes under them, until
        ``stop.is_set()``. Each sync is an ordinary incremental ingest (crash-safe, unchanged
        files skipped). A busy index or a bad file is reported and retried on the next change.
        ``on_start`` is called once the watcher is up (changes from then on are seen)."""
        import watchfiles

        from llmctl.errors import BusyError, InputError, Interrupted
        from llmctl.ingest.discover import check_paths

        roots = [Path(p) for p in paths]
        check_paths(roots)  # a path that is not there: refused (exit 4) before watching starts
        ignore = watchfiles.DefaultFilter(ignore_paths=[str(Path(self.cfg.data_dir).resolve())])

        reported: set[tuple[str, str]] = set()  # skipped files already in a report

        def sync(always: bool) -> None:
            try:
                report = self.ingest(roots, stop_event=stop, **ingest_options)
            except (BusyError, InputError) as exc:
                on_error(exc)
                return
            except Interrupted:  # stopped while syncing: what was embedded is committed
                if stop.is_set():
                    return
                raise
            skips = {(s.path, s.reason) for s in report.files_skipped}
            if always or report.files_added or report.files_changed or report.files_removed or skips - reported:
                on_report(report)
            reported.update(skips)

        def identity() -> list:
            """Each root's (device, inode): a folder deleted and made again, or a file saved by
            renaming a new one over it (editors, sed -i), is another one, which a watcher of the
            old one never hears about."""
            out = []
            for r in roots:
                try:
                    st = r.stat()
                    out.append((st.st_dev, st.st_ino))
                except OSError:
                    out.append(None)
            return out

        named = {os.path.realpath(r) for r in roots}
        sync(always=True)
        started = False
        while not stop.is_set():
            watched, watching = identity(), False
            if None in watched:  # a root is gone (the sync that noticed said so): wait for it to come back
                time.sleep(0.5)
                continue
            # yield_on_timeout: the first (empty) yield means the watcher is up; one more sync then
            # catches what changed between the last sync and the watcher's start.
            try:
                for changes in watchfiles.watch(*roots, watch_filter=ignore, debounce=debounce_ms, stop_event=stop,
                                                raise_interrupt=False, rust_timeout=1000, yield_on_timeout=True):
                    if changes or not watching:
                        sync(always=False)
                    if not started and on_start is not None:
                        on_start()
                    started = watching = True
                    # replaced (a new inode, or a root reported deleted: a folder made again may
                    # get its old inode number back): watch what is there now
                    if identity() != watched or any(os.path.realpath(path) in named for _, path in changes):
                        sync(always=False)
                        break
            except FileNotFoundError:  # gone between the check and the watch: wait for it again
                continue

    def remove(self, paths: list[Path | str], *, dry_run: bool = False, wait_seconds: float = 0) -> IngestReport:
        """Drop every indexed file under ``paths`` from the index."""
        from llmctl.ingest.pipeline import remove

        roots, wait = _paths(paths), _wait(wait_seconds)
        return self._written(dry_run, lambda: remove(roots, self.cfg, self._published(),
                                                     dry_run=dry_run, wait_seconds=wait))

    def search(self, query: str, *, k: int | None = None, where: list[str] | None = None,
               rerank: bool | None = None, dense_k: int | None = None, bm25_k: int | None = None,
               depth: int | None = None, fusion: str | None = None):
        """Retrieval only: the ranked hits for ``query`` (no model is called)."""
        return self.query(query, k=k, where=where, rerank=rerank, use_llm=False, dense_k=dense_k, bm25_k=bm25_k,
                          depth=depth, fusion=fusion).hits

    def query(self, question: str, *, k: int | None = None, where: list[str] | None = None,
              rerank: bool | None = None, use_llm: bool = True, tag: str | None = None,
              dense_k: int | None = None, bm25_k: int | None = None, depth: int | None = None,
              fusion: str | None = None, skip_irrelevant: bool | None = None,
              on_token: Callable[[str], None] | None = None, notify: Callable[[str], None] | None = None):
        """Retrieve, rerank, pack and (with ``llm.providers``) answer; returns a QueryResult.

        ``None`` means the config's value. A bad value (k < 1, an unknown fusion, a depth below k,
        a malformed ``where``, an over-long question) raises UsageError before anything loads."""
        from llmctl.search.pipeline import QueryOptions, run_query

        opts = QueryOptions(k=k, where=where if where is not None else [], rerank=rerank, use_llm=use_llm,
                            tag=tag, dense_k=dense_k, bm25_k=bm25_k, depth=depth, fusion=fusion,
                            skip_irrelevant=skip_irrelevant)
        opts.validate(question, self.cfg)
        if use_llm and self.cfg.llm.providers:  # provider settings first, before the index is opened
            from llmctl.llm.gateway import usable_providers

            usable_providers(self.cfg.llm, self.cfg.source)
        return run_query(question, self.cfg, opts, on_token=on_token, retriever=self.retriever,
                         reranker=self.reranker, gateways=self.gateways if use_llm else None, notify=notify)

    def chunk(self, chunk_id: str) -> dict | None:
        """One indexed chunk (text, source, lines, heading, doc_id), or None."""
        got = self.retriever.chunks([chunk_id]).get(chunk_id)
        return None if got is None else {k: v for k, v in got.items() if k != "embed_text"}

    def document(self, doc_id: str) -> dict | None:
        """One indexed document: its title, source and text (rebuilt from its chunks), or None."""
        found = self.retriever.manifest.document(doc_id)
        if found is None:
            return None
        title, chunks = found
        return {"doc_id": doc_id, "title": title, "source": chunks[0]["source"] if chunks else "",
                "chunks": [c["id"] for c in chunks], "text": _joined(chunks)}

    def evaluate(self, suite: Path | str | None = None, *, beir: Path | str | None = None, split: str = "test",
                 limit: int | None = None, tags: list[str] | None = None, baseline: Path | str | None = None,
                 against: Path | str | None = None, answers: bool = True, record: Path | str | None = None,
                 replay: Path | str | None = None, batch: bool = False, progress=None,
                 repeats: int | None = None, stop_when_decided: bool = False):
        """Run a golden suite (or ``beir=DIR``); returns an EvalOutcome (see ``llmctl eval``).

        Contradictory arguments raise UsageError before anything runs."""
        from llmctl.evals.service import run_eval

        if (suite is None) == (beir is None):
            raise UsageError("give a suite file or beir=DIR (--beir), one of them")
        if record and replay:
            raise UsageError("give record=FILE (--record) or replay=FILE (--replay), not both")
        if batch and (record or replay):
            raise UsageError("batch (--batch) answers through the provider's Batch API; it does not record or "
                             "replay a cassette")
        _check_limit(limit)
        if repeats is not None and (isinstance(repeats, bool) or not isinstance(repeats, int)
                                    or not 1 <= repeats <= 100):
            raise UsageError(f"expected a whole number of repeats from 1 to 100, got {repeats!r}", "repeats")
        if batch and repeats and repeats > 1:
            raise UsageError("batch (--batch) sends each answer once; it does not repeat (--repeats)")
        if stop_when_decided and batch:
            raise UsageError("stop_when_decided (--stop-when-decided) needs answers one by one, not a --batch job")
        return run_eval(_path(suite), load=self._derived_config, data=self._published(), beir=_path(beir),
                        split=split, limit=limit, tags=_tags(tags), baseline=_path(baseline),
                        against=_path(against), answers=answers, progress=progress, record=_path(record),
                        replay=_path(replay), batch=batch, repeats=repeats, stop_when_decided=stop_when_decided,
                        gateways=self.gateways)

    def plan(self, suite: Path | str, *, limit: int | None = None, tags: list[str] | None = None,
             baseline: Path | str | None = None, repeats: int | None = None, progress=None) -> dict:
        """``llmctl eval --plan``: per gated metric, the smallest drop the suite can detect (80% power),
        from a retrieval-only run: no model is called."""
        from llmctl.evals.service import run_plan

        if repeats is not None and (isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1):
            raise UsageError(f"expected a whole number of repeats, at least 1, got {repeats!r}", "repeats")
        return run_plan(Path(suite), load=self._derived_config, data=self._published(), limit=limit,
                        tags=_tags(tags), baseline=_path(baseline), repeats=repeats, progress=progress)

    def tune(self, suite: Path | str, *, metric: str | None = None, limit: int | None = None,
             tags: list[str] | None = None, write: bool = False, progress=None) -> dict:
        """``llmctl tune``: the fusion settings for this corpus, chosen on half of the suite's judged
        cases and kept only when the other half confirms the gain (see evals/tune.py). ``write``
        puts a significant change in the config file in use (./llmctl.yaml when there is none)."""
        from llmctl.evals.suite import check_metric
        from llmctl.evals.tune import run_tune, write_change

        _check_limit(limit)
        if metric is not None:
            try:
                check_metric(metric)
            except ValueError as exc:
                raise UsageError(str(exc), "metric") from None
        report = run_tune(Path(suite), load=self._derived_config, data=self._published(), metric=metric, limit=limit,
                          tags=_tags(tags), progress=progress)
        if write and report["decision"] == "change":
            path = Path(self.cfg.source) if Path(self.cfg.source).is_file() else Path("llmctl.yaml")
            write_change(path, report["change"])
            report["written"] = str(path)
        return report

    def generate(self, cases: int, output: Path | str, *, seed: int = 0, max_overlap: float = 0.9,
                 force: bool = False, on_candidate: Callable[[], None] | None = None):
        """Write a golden suite of ``cases`` questions generated from the index; a GenerateReport."""
        from llmctl.errors import InputError
        from llmctl.evals.generate import Generator, suite_yaml

        if isinstance(cases, bool) or not isinstance(cases, int) or not 1 <= cases <= 10_000:
            raise UsageError(f"expected a whole number from 1 to 10,000, got {cases!r}", "cases")
        output = Path(output)
        if output.exists() and not force:
            raise InputError(f"--output {output} exists: choose another file, or add --force to replace it")
        report = Generator(self.cfg, self.retriever, self.gateways, max_overlap=max_overlap,
                           on_candidate=on_candidate).run(cases, seed, output)
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(suite_yaml(report), encoding="utf-8")
        tmp.replace(output)
        return report

    def cost_report(self, since: str | None = None, until: str | None = None, shared: bool = False,
                    alerts: bool = False) -> dict:
        """Spend, tokens, errors and latency from the ledger; dates as YYYY-MM-DD, 'today', '7d'.
        ``shared``: every machine's rows from the shared state (state.backend: redis); ``alerts``
        (or llm.budget.alerts.enabled): the spend alerts too (``report["alerts"]``)."""
        from llmctl.errors import InputError
        from llmctl.llm.report import cost_report, parse_when

        for name, value in (("since", since), ("until", until)):
            if value is not None and not isinstance(value, str):
                raise UsageError(f"expected a date (YYYY-MM-DD), 'today' or a number of days like '7d', got "
                                 f"{value!r}", name)
        now = time.time()
        start, end = parse_when(since, now, "since (--since)"), parse_when(until, now, "until (--until)")
        if start is not None and end is not None and start >= end:
            raise InputError(f"since (--since) {since} is not before until (--until) {until}")
        rules = self.cfg.llm.budget.alerts
        return cost_report(self.data, self.cfg.llm, start, end, now,
                           shared=self.cfg.state if shared else None,
                           alerts=rules if alerts or rules.enabled else None)

    def cache_stats(self, *, clear: bool = False, prune: bool = False) -> dict:
        from llmctl.llm.report import cache_stats

        if clear and prune:
            raise UsageError("clear (--clear) deletes every answer, expired or not: give clear or prune, not both")

        return cache_stats(self.data, time.time(), clear=clear, prune=prune, shared=self.cfg.state,
                           warn=self._warn_state)

    def status(self) -> Status:
        """The index, reranker, cache and ledger of this workspace, without loading any model."""
        from llmctl.config import redacted_url
        from llmctl.errors import SharedStateUnavailable
        from llmctl.index.manifest import Manifest

        data = self._published()
        index: dict = {"exists": data.exists(), "folder": str(data.index)}
        if data.exists():
            m = Manifest(data.manifest, readonly=True)
            try:
                index.update(**m.counts(), dirty=m.dirty, settings=m.settings(),
                             embedded_with=json.loads(m.get_meta("runtime") or "{}"))
            finally:
                m.close()
            index.update(self._vectors(data))
        try:
            cache = self.cache_stats()
        except SharedStateUnavailable:  # status still shows everything else
            cache = {"entries": None, "path": f"{redacted_url(self.cfg.state.url)}, unreachable"}
        spend = self.cost_report()["budget"]
        providers = [{"name": p.name, "model": p.model, "base_url": redacted_url(p.base_url),
                      "key_env": p.api_key_env,
                      "key_set": not p.api_key_env or bool(os.environ.get(p.api_key_env)),
                      "priced": p.price_input_per_1m is not None and p.price_output_per_1m is not None}
                     for p in self.cfg.llm.providers]
        return Status(str(self.cfg.data_dir), index, self._reranker_status(),
                      {"entries": cache.get("entries", 0), "path": cache["path"]},
                      {"spent_today_usd": spend["daily"]["spent_usd"], "path": str(data.ledger),
                       "shared": self.cfg.state.backend == "redis"}, providers)

    # -- helpers ----------------------------------------------------------------------
    def _vectors(self, data: DataDir) -> dict:
        """How many vectors the embedded store holds ({"vectors": n}), or why it cannot be read
        ({"vectors": None, "vectors_error": ...}): what `ingest --repair` fixes. A server's store
        is not asked (status makes no network call)."""
        from llmctl.index.vectors import open_store

        if self.cfg.vector_store.mode != "embedded":
            return {}
        try:
            return {"vectors": open_store(self.cfg, data.chroma, readonly=True).count()}
        except IndexStateError as exc:
            return {"vectors": None, "vectors_error": str(exc)}

    def _derived_config(self, overrides: dict, path: Path | None = None, *, source: str = "command line") -> Config:
        """The config an eval suite (or an A/B config file) asks for, on this data dir; ``source``
        names where ``overrides`` were written (a suite's config: section), for error messages."""
        return load_config(path or (Path(self.cfg.source) if Path(self.cfg.source).is_file() else None),
                           {"data_dir": str(self.cfg.data_dir), **overrides},
                           discovered=path is None and self.cfg.discovered,  # still trust-checked
                           overrides_from=source)

    def _reranker_status(self) -> dict:
        r = self.cfg.rerank
        out = {"model": r.model, "enabled": r.enabled}
        if not r.enabled:
            return {**out, "status": "disabled"}
        from llmctl.search.rerank import RerankUnavailable, locate

        try:
            locate(r.model, r.offline)
        except RerankUnavailable as exc:
            from llmctl.models import pull_hint

            return {**out, "status": "unavailable", "reason": str(exc), "fallback": "fused order",
                    "hint": pull_hint(r.model)}
        return {**out, "status": "available"}

    def _invalidate_cache(self, chunk_ids: list[str]) -> int:
        """Drop cached answers built from chunks an ingest changed or deleted."""
        from llmctl.llm.state import invalidate_answers

        return invalidate_answers(self.cfg.state, self.data, chunk_ids, self._warn_state)

    @staticmethod
    def _warn_state(message: str) -> None:
        import sys

        sys.stderr.write(f"warning: {message}\n")


def _path(p: Path | str | None) -> Path | None:
    return None if p is None else Path(p)


def _joined(chunks: list[dict]) -> str:
    """A document's text from its chunks in order, overlaps removed by character offsets."""
    out, end = "", 0
    for c in chunks:
        start, text = c.get("start_char"), c["text"]
        if start is None:
            out += ("\n\n" if out else "") + text
        elif start >= end:
            out += ("\n\n" if out and start > end else "") + text
        else:
            out += text[end - start:]
        end = max(end, c.get("end_char") or 0)
    return out


def _paths(paths) -> list[Path]:
    """``paths``: a path, or a list of them (a lone string is one path, never its characters)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, (str, Path)) for p in paths):
        raise UsageError(f"expected a path or a list of paths, got {paths!r}", "paths")
    return [Path(p) for p in paths]


def _tags(tags) -> list[str]:
    """``tags`` (``--tag``): a tag, or a list of them."""
    if isinstance(tags, str):
        return [tags]
    if tags is not None and (not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags)):
        raise UsageError(f"expected a tag or a list of tags, got {tags!r}", "tags")
    return list(tags or [])


def _wait(seconds) -> float:
    """``wait_seconds`` (``--wait``): how long a writer waits for another, 0 or more."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise UsageError(f"expected a number of seconds, 0 or more, got {seconds!r}", "wait_seconds")
    return float(seconds)


def _check_limit(limit) -> None:
    """``limit`` (``--limit``): None, or a whole number of cases, at least 1."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"expected a whole number of cases, at least 1, got {limit!r}", "limit")
