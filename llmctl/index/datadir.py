"""Layout of the data directory and the lock that keeps two writers apart."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmctl.errors import BusyError, InputError


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.sqlite"

    @property
    def chroma(self) -> Path:
        return self.root / "chroma"

    @property
    def bm25(self) -> Path:
        return self.root / "bm25"

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

    @contextmanager
    def write_lock(self, wait_seconds: float = 0):
        """Hold the data dir for one writer; a second one waits up to wait_seconds, then stops."""
        from filelock import FileLock, Timeout

        self.create()
        lock = FileLock(str(self.lock_file))
        owner = self.root / "ingest.pid"
        try:
            lock.acquire(timeout=wait_seconds)
        except Timeout:
            pid = owner.read_text().strip() if owner.exists() else "unknown"
            raise BusyError(
                f"Another ingest (pid {pid}) is writing to {self.root}: wait for it to finish, "
                "or pass --wait SECONDS"
            ) from None
        try:
            owner.write_text(str(os.getpid()))
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def wipe_indexes(self) -> None:
        import sys

        if "chromadb" in sys.modules:  # drop Chroma's in-process handles on the files we delete
            from chromadb.api.client import SharedSystemClient

            SharedSystemClient.clear_system_cache()
        for path in (self.chroma, self.bm25):
            shutil.rmtree(path, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.manifest) + suffix).unlink(missing_ok=True)
