"""``ingest(paths, cfg)``: sync a set of folders into the manifest, Chroma and BM25.

Crash safety, in write order for each batch of files:
  1. vectors of new chunks are upserted into Chroma (idempotent);
  2. the manifest records the files' new state in one SQLite transaction;
  3. chunk ids the manifest no longer references are deleted from Chroma.
A ``dirty`` flag is set before the first write and cleared after BM25 is published.
A run that finds it set reconciles Chroma with the manifest first (orphans deleted,
files with missing vectors re-ingested) and rebuilds BM25, so a ``kill -9`` at any
moment is followed by a consistent store. Big JSONL files commit document by
document, so an interrupted corpus ingest resumes instead of starting over.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

from llmctl.config import Config, IngestConfig, VectorStoreConfig
from llmctl.datadir import DataDir, drop_chroma_handles
from llmctl.embedding import LOCAL_PROVIDER, Embedder, make_embedder
from llmctl.errors import ConfigError, IndexStateError, InputError, Interrupted, printable
from llmctl.index import keyword, pages
from llmctl.index.manifest import FORMAT_VERSION, FileRecord, FileUpdate, Manifest
from llmctl.index.vectors import store_identity
from llmctl.ingest.chunking import reader_identity
from llmctl.ingest.discover import CANNOT_LIST, OUT_OF_SCOPE, check_paths, discover, is_taken
from llmctl.ingest.loaders import EmptyFile, SkipFile, file_digest, load_documents
from llmctl.interrupts import StopFlag, stop_requests
from llmctl.progress import NullProgress, Progress
from llmctl.records import Chunk, IngestReport, SkippedFile


@dataclass
class _Planned:
    update: FileUpdate
    new_chunks: list[Chunk] = field(default_factory=list)  # not yet in the index: embed these


def index_settings(cfg: Config, embedder: Embedder, max_tokens: int) -> dict:
    """What built the index; a later run with other values must not mix into it."""
    e = cfg.embedding
    return {
        "format_version": FORMAT_VERSION,
        "embedding": {"model": embedder.model_id, "normalize": e.normalize,
                      "document_prefix": e.document_prefix, "query_prefix": e.query_prefix, **embedder.identity},
        "chunking": {"max_tokens": max_tokens, "overlap_tokens": cfg.chunking.overlap_tokens,
                     "context_header": cfg.chunking.context_header, "splitter": "recursive/1"},
        "bm25": keyword.settings_of(cfg.bm25),
        "vector_store": store_identity(cfg.vector_store),
        "reader": reader_identity(cfg.chunking),
    }


def check_settings(stored: dict | None, wanted: dict, cfg: Config, data: DataDir) -> bool:
    """Raise if the index in ``data`` cannot take vectors made with ``wanted``; True if only BM25 differs."""
    if stored is None:
        return False
    where = f"the index in {data.root}"
    if stored.get("format_version") != wanted["format_version"]:
        raise IndexStateError(
            f"{where} has format version {stored.get('format_version')}, this llmctl writes "
            f"{wanted['format_version']}: run 'llmctl ingest --rebuild <path>'"
        )
    stored = {"vector_store": store_identity(VectorStoreConfig()), **stored}  # indexes from before server mode
    for section, what in (("embedding", "embedding settings"), ("chunking", "chunking settings"),
                          ("vector_store", "vector store settings (its vectors are not in the new store)")):
        old, new = stored.get(section, {}), wanted[section]
        if section == "embedding":  # the local model's settings do not name their provider
            old, new = {"provider": LOCAL_PROVIDER, **old}, {"provider": LOCAL_PROVIDER, **new}
        diff = [k for k in new if old.get(k) != new[k]]
        if diff:
            changes = ", ".join(f"{section}.{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff)
            raise IndexStateError(
                f"{where} was built with other {what} ({changes}; config: {cfg.source}). "
                "Mixing them would silently corrupt results: run 'llmctl ingest --rebuild <path>' "
                "to rebuild, or restore the old setting"
            )
    return stored.get("bm25") != wanted["bm25"]


def display_source(path: Path | str, base_dir: Path) -> str:
    """How citations show the file at absolute ``path``: relative to ``base_dir`` when under it,
    else absolute. Plain string work (what ``Path.relative_to`` does for these absolute paths, 7x
    faster): every run spells every indexed file's source."""
    text, prefix = str(path), os.path.join(str(base_dir), "")
    return (text[len(prefix):] if text.startswith(prefix) else text).replace(os.sep, "/")


def _under(path: str, roots: list[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r) + os.sep) for r in roots)


def _roots(paths: list[Path]) -> list[Path]:
    return [Path(p).resolve() if Path(p).exists() else Path(p).absolute() for p in paths]


@dataclass
class _Run:
    """One writing (or dry) run over one index: what every stage needs, in one place."""

    cfg: Config
    data: DataDir
    manifest: Manifest
    embedder: Embedder | None  # None when nothing is embedded (remove)
    report: IngestReport
    progress: Progress
    stop: StopFlag
    strict: bool = False
    settings: dict = field(default_factory=dict)  # what builds the index (index_settings)
    max_tokens: int = 0
    reread: bool = False  # files are read differently now: re-read even those that did not change
    release_vectors: bool = False  # see ingest()
    staging: bool = False  # a --rebuild's new index, which nobody searches before it is published
    store: object | None = None
    committed_files: int = 0
    committed_chunks: int = 0
    guessed: dict[str, list[str]] = field(default_factory=dict)  # encoding -> files read in it (a guess)
    work_bytes: int = 0  # the size of the files to read, and of those read so far: the embedding
    read_bytes: int = 0  # bar's total is estimated from them until every file is chunked
    touched_docs: set[str] = field(default_factory=set)  # documents written: their page heads change

    def skip(self, path: Path | str, reason: str) -> None:
        self.report.files_skipped.append(SkippedFile(str(path), reason))
        if self.strict:
            raise _strict_error(self.report.files_skipped[-1], self.cfg.base_dir)

    def open_store(self):
        """The store, opened to write: it also takes on the configured search settings."""
        if self.store is None:
            from llmctl.index.vectors import open_store

            self.store = open_store(self.cfg, self.data.chroma)
            self.store.apply_search_settings()
        return self.store

    def release_store(self) -> None:
        """Free the embedded vector index from this process's memory (about 2 GB at a million
        chunks) before BM25 is built, so the two do not add up; only when asked (see ingest)."""
        if self.release_vectors and self.store is not None and self.cfg.vector_store.mode == "embedded":
            self.store = None
            drop_chroma_handles()

    def check_stop(self) -> None:
        self.stop.check(f"Interrupted: {self.committed_files} file(s) committed ({self.committed_chunks} "
                        "chunk(s) embedded and kept); run again to continue")


def _strict_error(s: SkippedFile, base_dir: Path) -> InputError:
    return InputError(f"{printable(display_source(s.path, base_dir))}: {s.reason} (--strict stops at the first "
                      "bad file)")


@dataclass
class _Scan:
    """What the files on disk ask of the index."""

    work: list[tuple[Path, FileRecord]] = field(default_factory=list)  # new or changed content
    touched: list[FileRecord] = field(default_factory=list)  # same content, new size/mtime
    removed: list[str] = field(default_factory=list)  # indexed, matched by the filters, gone
    known: set[str] = field(default_factory=set)  # paths the manifest held when the scan began


def ingest(
    paths: list[Path],
    cfg: Config,
    data: DataDir,
    *,
    dry_run: bool = False,
    rebuild: bool = False,
    repair: bool = False,
    strict: bool | None = None,
    wait_seconds: float = 0,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
    release_vectors: bool = False,
    stop_event=None,
) -> IngestReport:
    """Bring the index in ``data`` in line with the files under ``paths``; see the module docstring.

    ``release_vectors``: a process that ingests and exits (the CLI) frees the embedded vector
    index before a BM25 rebuild, which lowers its peak memory; a process that goes on searching
    (serve, a script's Workspace) keeps it loaded for its readers.

    ``ingest.include`` / ``ingest.exclude`` narrow what this run looks at: an indexed file
    they leave out is kept, never deleted (use ``remove`` for that). Ctrl-C or SIGTERM stop
    after committing what was embedded and raise ``Interrupted``.
    """
    started = time.perf_counter()
    if not paths:
        raise InputError("No path given: llmctl ingest PATH [PATH...]")
    check_paths(paths, data.root)  # before anything is loaded or made
    report = IngestReport(dry_run=dry_run)
    embedder = embedder or make_embedder(cfg, data, command="ingest", export=True)
    max_tokens = cfg.chunking.max_tokens or embedder.max_chunk_tokens
    if max_tokens > embedder.max_chunk_tokens:
        raise ConfigError(
            f"chunking.max_tokens is {max_tokens} but {embedder.model_id} embeds at most "
            f"{embedder.max_chunk_tokens} tokens per chunk: lower it (or leave it unset) in {cfg.source}"
        )
    if cfg.chunking.overlap_tokens >= max_tokens // 2:
        raise ConfigError(f"chunking.overlap_tokens ({cfg.chunking.overlap_tokens}) must be less than half of the "
                          f"chunk size ({max_tokens} tokens): lower it in {cfg.source}")

    def run_on(target: DataDir, manifest: Manifest, stop: StopFlag) -> _Run:
        return _Run(cfg, target, manifest, embedder, report, progress or NullProgress(), stop,
                    cfg.ingest.strict if strict is None else strict,
                    index_settings(cfg, embedder, max_tokens), max_tokens, release_vectors=release_vectors)

    if rebuild:
        _refuse_a_partial_rebuild(data, paths, cfg)
    with stop_requests(stop_event) as stop:  # stop_event: a watcher thread's owner stopping it
        if dry_run:  # a rebuild embeds everything again: planned against an empty index
            manifest = Manifest(data.manifest if data.exists() and not rebuild else Path(":memory:"))
            try:
                _dry_run(run_on(data, manifest, stop), paths, check=not rebuild)
            finally:
                manifest.close()
        else:
            with data.discard_if_unwritten(), data.write_lock(wait_seconds, stop) as data:
                data.remove_unused()
                target = _rebuild_target(cfg, data) if rebuild else data
                manifest = Manifest(target.manifest)
                try:
                    run = run_on(target, manifest, stop)
                    run.staging = rebuild
                    _sync(run, paths, repair)
                finally:
                    manifest.close()
                if rebuild:
                    target.publish()
    # spelled as the other paths in the report are (its sources: relative to where this runs when under it)
    report.files_skipped = [replace(s, path=display_source(s.path, cfg.base_dir)) for s in report.files_skipped]
    report.seconds = time.perf_counter() - started
    return report


def _refuse_a_partial_rebuild(data: DataDir, paths: list[Path], cfg: Config) -> None:
    """A rebuild makes a new index of ``paths`` alone: an indexed file they do not take (another
    folder, or one that --include/--exclude leave out) would be dropped with the old index. Refused,
    as an ingest's filters never delete (``remove`` does). An index that cannot be read is what a
    rebuild replaces: nothing to keep."""
    try:
        manifest = Manifest(data.manifest, readonly=True)
    except IndexStateError:
        return
    try:
        known = manifest.files()
    except sqlite3.DatabaseError:
        return
    finally:
        manifest.close()
    roots = _roots(paths)
    left = sorted(p for p in known if not any(is_taken(Path(p), root, cfg.ingest) for root in roots))
    if left:
        raise InputError(
            f"--rebuild would drop {len(left)} indexed file(s) outside {', '.join(map(str, paths))} "
            f"(e.g. {printable(known[left[0]].source)}): give every folder the index holds, or "
            "'llmctl remove' those files first; nothing was changed")


def _sync(run: _Run, paths: list[Path], repair: bool) -> None:
    """Recover if needed, scan, plan, write: the whole of one writing run."""
    bm25_stale = check_settings(run.manifest.settings(), run.settings, run.cfg, run.data)
    _check_reader(run)
    if run.manifest.dirty or repair:
        _recover(run, repair)
        bm25_stale = True
    scan = _scan(run, paths)
    _write(run, _plan(run, scan), scan, bm25_stale)
    run.report.chunks_total = run.manifest.chunk_count()


# Commit groups planned (and ordered by chunk length) at a time: a run holds this many groups'
# chunks in memory, whatever the corpus size.
WINDOW_GROUPS = 16
# New chunks a run keeps the ids of to update BM25 in segments; past it, BM25 is rebuilt.
MAX_DELTA = 200_000


def _check_reader(run: _Run) -> None:
    stored = run.manifest.settings()
    if stored is not None and stored.get("reader") != run.settings["reader"]:
        run.reread = True
        run.report.notes.append("files are read differently than when this index was built (llmctl upgrade "
                                "or chunking.min_tokens): re-reading every file; unchanged chunks keep "
                                "their vectors")


def _rebuild_target(cfg: Config, data: DataDir) -> DataDir:
    """Where a rebuild writes: a new index folder that queries do not read until it is published."""
    if cfg.vector_store.mode == "server":  # a server collection cannot be built beside itself
        from llmctl.index.vectors import open_store

        open_store(cfg, data.chroma).drop()
    return data.staging()


def remove(paths: list[Path], cfg: Config, data: DataDir, *, dry_run: bool = False, wait_seconds: float = 0,
           progress: Progress | None = None) -> IngestReport:
    """Forget every indexed file under ``paths`` (which need not exist any more) from the index in ``data``."""
    started = time.perf_counter()
    report = IngestReport(dry_run=dry_run)
    if not paths:
        raise InputError("No path given: llmctl remove PATH [PATH...]")
    if not data.exists():
        raise IndexStateError(f"No index in {data.root}: nothing to remove")
    with stop_requests() as stop, data.write_lock(wait_seconds, stop) if not dry_run else nullcontext(data) as data:
        manifest = Manifest(data.manifest)
        try:
            known = manifest.files()
            roots = _roots(paths)
            gone = sorted(p for p in known if _under(p, roots))
            if not gone:
                raise InputError(f"Nothing indexed under {', '.join(map(str, paths))}: give the path of an "
                                 "ingested file or folder, as it is on disk (relative to this folder)")
            report.files_removed = [known[p].source for p in gone]
            if dry_run:
                report.chunks_deleted = len(manifest.chunk_ids_of_files(gone))
            else:
                run = _Run(cfg, data, manifest, None, report, progress or NullProgress(), stop,
                           settings=manifest.settings() or {})
                _write(run, iter([]), _Scan(removed=gone), bm25_stale=False)
            report.chunks_total = manifest.chunk_count()
        finally:
            manifest.close()
    report.seconds = time.perf_counter() - started
    return report


def _recover(run: _Run, repair: bool = False) -> None:
    """After an interrupted run (or on --repair): make Chroma agree with the manifest. On --repair,
    an embedded store whose files cannot be read is made again, empty: every chunk then has no
    vector, and its file is read and embedded again."""
    from llmctl.index.vectors import DamagedStore

    manifest, report = run.manifest, run.report
    try:
        store = run.open_store()
    except DamagedStore as exc:
        if not repair:
            raise
        drop_chroma_handles()
        shutil.rmtree(run.data.chroma)
        store = run.open_store()
        report.recovered.append(f"the vector store could not be read ({exc.reason}): made again")
    in_store, in_manifest = store.all_ids(), manifest.chunk_ids()
    orphans = sorted(in_store - in_manifest)
    if orphans:
        store.delete(orphans)
        report.recovered.append(f"deleted {len(orphans)} vectors left by an interrupted ingest")
    missing = in_manifest - in_store
    if missing:
        paths = manifest.forget_chunks_files(missing)
        report.recovered.append(f"{len(missing)} chunks had no vector; re-ingesting {len(paths)} file(s)")


def _scan(run: _Run, paths: list[Path]) -> _Scan:
    """Walk the paths: which files are new, changed, touched, unreadable or gone."""
    cfg, report = run.cfg, run.report
    known = run.manifest.files()
    scan = _Scan(known=set(known))
    seen: set[str] = set()
    task = run.progress.task("Scanning files", None)
    for found in discover(list(paths), cfg.ingest, report.files_skipped, ignore=run.data.root):
        task.advance(1)
        path, key = found.path, str(found.path)
        seen.add(key)
        report.files_seen += 1
        try:
            st = path.stat()
        except OSError as exc:
            run.skip(path, f"cannot stat: {exc.strerror}")
            continue
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block read_bytes() forever
            run.skip(path, "not a regular file (FIFO, socket or device)")
            continue
        if st.st_size > cfg.ingest.max_file_mb * 1024 * 1024:
            run.skip(path, f"larger than ingest.max_file_mb ({cfg.ingest.max_file_mb:g} MB)")
            continue
        rec = known.get(key)
        if rec and rec.size == st.st_size and rec.mtime_ns == st.st_mtime_ns and not run.reread:
            report.files_unchanged += 1
            continue
        try:
            digest = file_digest(path.read_bytes())
        except OSError as exc:
            run.skip(path, f"cannot read: {exc.strerror}")
            continue
        new = FileRecord(key, display_source(path, cfg.base_dir), st.st_size, st.st_mtime_ns, digest)
        if rec and rec.sha256 == digest and not run.reread:
            report.files_unchanged += 1
            scan.touched.append(new)
        else:
            scan.work.append((path, new))
    task.done()
    bad = [s for s in report.files_skipped if s.reason not in OUT_OF_SCOPE]
    if run.strict and bad:  # skipped during discovery (broken links, unlistable folders)
        raise _strict_error(bad[0], cfg.base_dir)
    skipped = {s.path for s in report.files_skipped}
    unlisted = [Path(s.path) for s in report.files_skipped if s.reason.startswith(CANNOT_LIST)]
    roots = _roots(paths)
    # Only a file the filters would take can be "gone": --include/--exclude never delete. Nor
    # does a folder that could not be listed: its files are not known to be gone.
    scan.removed = sorted(p for p in known if p not in seen and p not in skipped
                          and not _under(p, unlisted)
                          and any(is_taken(Path(p), root, cfg.ingest) for root in roots))
    # One spelling per index: sources are shown relative to where this run runs, so the files it
    # does not rewrite keep their records with the source re-spelled (ingested before from elsewhere)
    rewritten = {rec.path for _, rec in scan.work} | {rec.path for rec in scan.touched}
    for key, rec in known.items():
        shown = display_source(key, cfg.base_dir)
        if key not in rewritten and rec.source != shown:
            scan.touched.append(replace(rec, source=shown))
    _count_kept(report, unlisted, known)
    report.files_removed = [known[p].source for p in scan.removed]
    # nothing to read (none found, or every one found could not be: unreadable, too big, a FIFO)
    if not (scan.work or scan.touched or report.files_unchanged or scan.removed):
        skipped = report.files_skipped
        # what explains it: a file that could not be read; else filters the user narrowed; else what was left out
        bad = [s for s in skipped if s.reason not in OUT_OF_SCOPE]
        narrowed = (cfg.ingest.include, cfg.ingest.exclude) != (IngestConfig().include, IngestConfig().exclude)
        example = (bad or skipped or [None])[0]
        why = (f"{len(skipped)} skipped, e.g. {printable(example.path)}: {example.reason}"
               if bad or (skipped and not narrowed)
               else "the folder holds no file" if all(p.is_dir() and not any(f.is_file() for f in p.rglob("*"))
                                                       for p in paths)
               else f"none matches include {run.cfg.ingest.include} outside exclude; check --include / "
                    "--exclude or ingest.include / ingest.exclude")
        raise InputError(f"No file to ingest under {', '.join(map(str, paths))} ({why}); "
                         "nothing was changed")
    return scan


def _count_kept(report: IngestReport, unlisted: list[Path], known: dict[str, FileRecord]) -> None:
    """Say, for each folder that could not be listed, how many indexed files under it are kept."""
    for n, s in enumerate(report.files_skipped):
        if s.reason.startswith(CANNOT_LIST):
            kept = sum(1 for p in known if _under(p, [Path(s.path)]))
            if kept:
                report.files_skipped[n] = SkippedFile(s.path, f"{s.reason} (its {kept} indexed file(s) are kept)")


def _plan(run: _Run, scan: _Scan) -> Iterator[list[_Planned]]:
    """Load and chunk the changed files, a window of about WINDOW_GROUPS commit groups at a time,
    each window ordered by chunk length (see _by_length); files are planned whole."""
    from llmctl.ingest.chunking import Chunker

    chunker = (Chunker(run.cfg.chunking, run.embedder.count_tokens, run.max_tokens,
                       run.embedder.token_spans) if scan.work else None)
    window: list[_Planned] = []
    size, limit = 0, WINDOW_GROUPS * run.cfg.ingest.commit_every
    task = run.progress.task("Reading and chunking", len(scan.work))
    run.work_bytes = sum(max(0, rec.size) for _, rec in scan.work)
    for path, rec in scan.work:
        task.advance(1)
        run.check_stop()
        run.read_bytes += max(0, rec.size)
        guessed: list[str] = []
        try:
            plan = list(_plan_file(path, rec, run.manifest, chunker, run.report, run.cfg.ingest.commit_every,
                                   guessed, max_bytes=int(run.cfg.ingest.max_file_mb * 1024 * 1024)))
        except SkipFile as exc:
            run.skip(path, str(exc))
            continue
        except OSError as exc:
            run.skip(path, f"cannot read: {exc.strerror}")
            continue
        (run.report.files_changed if rec.path in scan.known else run.report.files_added).append(rec.source)
        for encoding in guessed:
            run.guessed.setdefault(encoding, []).append(rec.source)
        window += plan
        size += sum(len(p.new_chunks) for p in plan)
        if size >= limit:
            yield _counted(run, window)
            window, size = [], 0
    task.done()
    _note_guessed(run)
    if window:
        yield _counted(run, window)


def _note_guessed(run: _Run) -> None:
    for encoding, sources in run.guessed.items():
        names = ", ".join(printable(s) for s in sources[:5])
        names += f" and {len(sources) - 5} more" if len(sources) > 5 else ""
        run.report.notes.append(f"read as {encoding} (not valid UTF-8, no charset declared): {names}; if some "
                                "characters look wrong, save the file(s) as UTF-8")


def _counted(run: _Run, window: list[_Planned]) -> list[_Planned]:
    run.report.tokens_embedded += sum(c.tokens for p in window for c in p.new_chunks)
    run.report.chunks_added += sum(len(p.new_chunks) for p in window)
    return _by_length(window)


def _dry_run(run: _Run, paths: list[Path], check: bool) -> None:
    manifest = run.manifest
    if check:
        check_settings(manifest.settings(), run.settings, run.cfg, run.data)
        _check_reader(run)
    scan = _scan(run, paths)
    docs: list[str] = []
    new_ids: set[str] = set()
    for window in _plan(run, scan):  # only ids are kept, never a window's chunks
        for p in window:
            docs += p.update.changed_chunks
            new_ids.update(c.id for cs in p.update.changed_chunks.values() for c in cs)
    old_ids = manifest.chunk_ids_of_docs(docs)
    deleted = sum(1 for ids in old_ids.values() for i in ids if i not in new_ids)
    report = run.report
    report.chunks_deleted = deleted + len(manifest.chunk_ids_of_files(scan.removed))
    # the index as the real run would leave it, so that the two reports compare
    report.chunks_total = manifest.chunk_count() - report.chunks_deleted + report.chunks_added
    report.chunks_kept = report.chunks_total - report.chunks_added


def _write(run: _Run, windows: Iterator[list[_Planned]], scan: _Scan, bm25_stale: bool) -> None:
    """Embed and commit group by group, drop removed files, then publish a new BM25 generation."""
    cfg, manifest, report = run.cfg, run.manifest, run.report
    generation = manifest.get_meta("generation")
    published = keyword.current_generation(run.data.bm25)
    bm25_missing = published is None or published != generation  # None twice: a run stopped before its first commit
    first = next(windows, None)
    changed = bool(first or scan.removed)
    if not (changed or scan.touched or bm25_stale or bm25_missing):
        if generation and not pages.current(run.data.pages, generation):  # an index from before page heads
            pages.rebuild(run.data.pages, cfg.bm25, manifest, generation)
        report.chunks_kept = manifest.chunk_count()
        return
    fresh = manifest.settings() is None
    manifest.set_settings(run.settings)
    if scan.touched:
        manifest.touch(scan.touched)
    added: list[str] | None = []  # new chunk ids for BM25 (None: too many to update in segments)
    if changed:
        try:
            added = _commit(run, itertools.chain([first], windows) if first else iter(()), scan.removed, fresh)
        except Interrupted:
            if (fresh or bm25_missing) and not run.staging:
                _searchable_after_stop(run, generation, published)
            raise
    report.chunks_kept = manifest.chunk_count() - report.chunks_added
    if changed or bm25_stale or bm25_missing:
        generation = _next_generation(run, generation, published)
        incremental = changed and not (fresh or bm25_stale or bm25_missing) and added is not None
        if incremental and keyword.update(run.data.bm25, cfg.bm25, _texts(manifest, added), report.deleted_ids,
                                          generation, manifest.chunk_count()):
            pages.publish(run.data.pages, cfg.bm25, manifest, generation, run.touched_docs)
        else:
            _rebuild_bm25(run, generation)
            report.bm25_rebuilt = True
        manifest.set_meta("generation", generation)
    manifest.set_dirty(False)


def _searchable_after_stop(run: _Run, generation: str | None, published: str | None) -> None:
    """A stopped run that found no BM25 index (a first ingest): build it over what was committed,
    so that can be searched. The index stays marked dirty: the next run checks it and rebuilds."""
    if run.manifest.chunk_count():
        generation = _next_generation(run, generation, published)
        _rebuild_bm25(run, generation)
        run.manifest.set_meta("generation", generation)


def _next_generation(run: _Run, generation: str | None, published: str | None) -> str:
    """The generation to publish: past the manifest's and past the published ones (``published``:
    BM25's, read by the caller; the page heads' is read here). A run killed after publishing,
    before the manifest recorded it, left a newer one that readers use now; writing its number
    again would delete that folder under them."""
    pages_published = keyword.current_generation(run.data.pages)
    return str(max((int(g) for g in (generation, published, pages_published) if g), default=0) + 1)


def _texts(manifest: Manifest, ids: list[str]) -> list[tuple[str, str]]:
    chunks = manifest.get_chunks(ids)
    return [(i, chunks[i]["embed_text"]) for i in ids if i in chunks]


def _commit(run: _Run, windows: Iterator[list[_Planned]], removed: list[str], fresh: bool) -> list | None:
    """Embed and commit the planned windows, then forget removed files; returns the new chunks'
    ids for BM25 (None when too many to update it in segments)."""
    cfg, manifest, report = run.cfg, run.manifest, run.report
    store = run.open_store()
    if fresh and store.count():
        vs = cfg.vector_store
        raise IndexStateError(
            f"Collection '{vs.collection}' in the {vs.mode} vector store already holds {store.count()} vectors "
            f"of another index: give each data dir its own vector_store.collection in {cfg.source}, "
            "or run 'llmctl ingest --rebuild <path>' to replace them"
        )
    manifest.set_dirty(True)
    deleted, added = _embed_and_commit(run, windows)
    if removed:
        ids = manifest.remove_files(removed)
        store.delete(ids)
        deleted += ids
    report.chunks_deleted += len(deleted)
    report.deleted_ids = deleted  # the Workspace drops cached answers built from them
    return added


def _rebuild_bm25(run: _Run, generation: str) -> None:
    """BM25 over the whole manifest, its texts streamed (never all in memory at once)."""
    with run.progress.status("Loading chunks for BM25"):
        ids = run.manifest.keyword_ids()
        arrays = {"dense_sample": _dense_sample(run, ids)} if ids else None
        run.release_store()
    task = run.progress.task("Building BM25 index", len(ids))

    def texts() -> Iterator[str]:  # read once, as BM25 tokenizes them
        n = 0
        for _, text in run.manifest.keyword_corpus():
            n += 1
            if n % 256 == 0:
                task.advance(256)
            yield text
        task.advance(n % 256)

    keyword.build_and_save(run.data.bm25, run.cfg.bm25, ids, texts(), generation, arrays)
    pages.rebuild(run.data.pages, run.cfg.bm25, run.manifest, generation)
    task.done()


def _dense_sample(run: _Run, ids: list[str], size: int = 2000):
    """Vectors of up to ``size`` chunks spread over the index (every n-th id in id order, ids
    being content hashes): the dense score distribution that z-score fusion normalises by."""
    pick = sorted(ids)[::max(1, len(ids) // size)][:size]
    return run.open_store().vectors(pick)


def _embed_and_commit(run: _Run, windows: Iterable[list[_Planned]]) -> tuple[list[str], list | None]:
    """Each commit group: vectors upserted, then one manifest transaction, then stale vectors
    deleted. A stop request drops only the group being embedded; committed groups stay.
    Returns the chunk ids deleted, and the new chunks' ids for BM25 (None past MAX_DELTA)."""
    added: list[str] | None = []
    manifest, store, embedder = run.manifest, run.store, run.embedder
    task = None

    def advance(n: int) -> None:  # after each encode batch: a stop request ends the group here
        task.advance(n)
        run.check_stop()

    deleted: list[str] = []
    for window in windows:
        if task is not None:
            task.set_total(_embedding_total(run))
        for batch in _batches(window, run.cfg.ingest.commit_every):
            run.check_stop()
            new_chunks = [c for p in batch for c in p.new_chunks]
            if new_chunks:
                task = task or _start_embedding(run)
                texts = [c.embed_text for c in new_chunks]
                vectors = embedder.embed_documents(texts, advance)
                manifest.set_meta("dimension", str(vectors.shape[1]))
                store.upsert(new_chunks, vectors)
            stale = manifest.apply([p.update for p in batch])
            run.touched_docs.update(d for p in batch for d in p.update.documents)
            if new_chunks:
                embedder.forget(texts)  # committed: an endpoint's saved copies are not needed
            store.delete(stale)
            deleted += stale
            run.committed_files += sum(1 for p in batch if not p.update.partial)
            run.committed_chunks += len(new_chunks)
            if added is not None:
                added += [c.id for c in new_chunks]
                if len(added) > MAX_DELTA:
                    added = None
    if task is not None:
        task.done()
    return deleted, added


def _start_embedding(run: _Run):
    """Load the embedding model (the first time a run has something to embed)."""
    embedder = run.embedder
    with run.progress.status("Making the ONNX copy of the embedding model (once per model, ~20 s)"
                             if embedder.export_pending else "Loading the embedding model"):
        run.report.embedding = embedder.load()
    run.manifest.set_meta("runtime", json.dumps({k: v for k, v in run.report.embedding.items() if k != "note"}))
    embedder.expect_dimension(int(run.manifest.get_meta("dimension") or 0) or None)
    return run.progress.task("Embedding", _embedding_total(run))


def _embedding_total(run: _Run) -> int:
    """Chunks this run embeds: those of the files chunked so far, and while files remain to be
    read, an estimate for them at the chunks per byte seen so far (exact once all are read)."""
    planned = run.report.chunks_added
    if run.read_bytes >= run.work_bytes or not run.read_bytes:
        return planned
    return max(planned, round(planned * run.work_bytes / run.read_bytes))


def _plan_file(path: Path, rec: FileRecord, manifest: Manifest, chunker, report,
               commit_every: int, guessed: list[str] | None = None, *,
               max_bytes: int | None = None) -> Iterator[_Planned]:
    """The manifest update for one changed file, split every ~commit_every new chunks."""
    data = path.read_bytes()
    rec = FileRecord(rec.path, rec.source, rec.size, rec.mtime_ns, file_digest(data))
    old_docs = manifest.documents_of(rec.path)
    reader = json.dumps(reader_identity(chunker.cfg))  # a document read differently is chunked again
    documents: dict[str, tuple[str, str]] = {}
    todo = []
    loaded = load_documents(path, rec.source, data, guessed, max_bytes=max_bytes)
    del data  # the loader drops the bytes once decoded: a large file is not held twice
    try:
        for doc in loaded:
            if doc.doc_id in documents:
                continue  # duplicate id in a JSONL file: the first record wins
            digest = hashlib.sha256(f"{reader}\0{doc.title}\0{doc.text}".encode()).hexdigest()
            documents[doc.doc_id] = (digest, doc.title)
            if old_docs.get(doc.doc_id) != digest:
                todo.append(doc)
    except EmptyFile:
        # Emptied since it was indexed: its chunks go, as the text they held did. (A file now
        # damaged, binary or unreadable keeps them: that may be an accident or a passing state.)
        if not old_docs:
            raise
    changed = [(doc.doc_id, chunks) for doc, chunks in zip(todo, chunker.chunk_many(todo), strict=True)]
    report.documents_changed += len(changed)
    # Documents of similar size next to each other: each commit group (one encode call) then
    # holds chunks of similar length, so batches carry little padding (~6% faster on SciFact).
    changed.sort(key=lambda dc: sum(c.tokens for c in dc[1]))
    pending: dict[str, list[Chunk]] = {}
    pending_new: list[Chunk] = []
    # Parts are committed with no hash and an impossible mtime: if the run dies later, the
    # file is seen as changed next time, and what was committed here is not embedded again.
    partial = FileRecord(rec.path, rec.source, -1, -1, "")
    for doc_id, chunks in changed:
        old_ids = set(manifest.chunk_ids_of_docs([doc_id])[doc_id])
        new = [c for c in chunks if c.id not in old_ids]
        while len(new) > commit_every:
            # A document too big for one commit group: its chunks are appended in parts and the
            # document stays marked incomplete (empty hash) until its final update below.
            part, new = new[:commit_every], new[commit_every:]
            title = documents[doc_id][1]
            yield _Planned(FileUpdate(partial, {doc_id: ("", title)}, {}, partial=True,
                                      appended={doc_id: part}), part)
        pending[doc_id] = chunks
        pending_new += new
        if len(pending_new) >= commit_every:
            part_docs = {d: documents[d] for d in pending}
            yield _Planned(FileUpdate(partial, part_docs, pending, partial=True), pending_new)
            pending, pending_new = {}, []
    yield _Planned(FileUpdate(rec, documents, pending), pending_new)


def _by_length(planned: list[_Planned]) -> list[_Planned]:
    """Work of similar chunk length next to each other, so each encode batch carries little
    padding, while every file's parts keep their order: its last update records the file's
    hash and must be written after its partial commits."""
    order = sorted(range(len(planned)),
                   key=lambda i: sum(c.tokens for c in planned[i].new_chunks) / max(1, len(planned[i].new_chunks)))
    slots: dict[str, list[int]] = {}
    for pos, i in enumerate(order):
        slots.setdefault(planned[i].update.file.path, []).append(pos)
    out: list[_Planned] = [None] * len(planned)  # type: ignore[list-item]
    for p in planned:  # in plan order: a file's partial parts first, its final update last
        out[slots[p.update.file.path].pop(0)] = p
    return out


def _batches(planned: list[_Planned], size: int) -> Iterator[list[_Planned]]:
    """Commit groups of at most ``size`` new chunks (a part of a big document is at most ``size``
    itself): a group closes before the file that would take it over, so Ctrl-C or a crash loses
    at most one group's embedding, never nearly two."""
    batch: list[_Planned] = []
    count = 0
    for p in planned:
        if batch and count + len(p.new_chunks) > size:
            yield batch
            batch, count = [], 0
        batch.append(p)
        count += len(p.new_chunks)
    if batch:
        yield batch
