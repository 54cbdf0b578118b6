"""Question vectors remembered per data dir, so a repeated question is embedded without loading
the embedding model: a shell loop run again, an agent asking again, an answer served from the
cache (which is keyed on what retrieval found, so retrieval runs first).

A cache in the strict sense: any SQLite error (a read-only data dir, a busy or damaged file)
means "not remembered", never a failed query. A symlink where the file goes is the one error:
like every file of a data dir, it is never written through (``datadir.refuse_link``). Keyed on
the index's embedding settings (model, prefixes, normalisation) and the exact question text; the
newest 10,000 are kept.

One connection per thread, opened on first use and kept: ``serve`` answers every request from
its worker threads' connections instead of opening the file per question.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from llmctl.datadir import refuse_link

KEEP = 10_000


class QueryMemo:
    def __init__(self, path: Path, identity: dict):
        self.path = path
        self.prefix = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        self._local = threading.local()

    def _key(self, question: str) -> str:
        return hashlib.sha256(f"{self.prefix}\0{question}".encode()).hexdigest()

    def _db(self, create: bool) -> sqlite3.Connection | None:
        """This thread's connection; None while the file does not exist and ``create`` is false (a
        lookup never creates it: a read-only data dir stays untouched)."""
        db = getattr(self._local, "db", None)
        if db is None:
            refuse_link(self.path, "question memo", sqlite=True)  # (an error: never silenced below)
            if not create and not self.path.exists():
                return None
            db = sqlite3.connect(self.path, timeout=0.2)
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL, "
                       "added INTEGER NOT NULL)")
            self._local.db = db
        return db

    def get(self, question: str) -> np.ndarray | None:
        try:
            db = self._db(create=False)
            row = None if db is None else db.execute("SELECT vector FROM vectors WHERE key = ?",
                                                     (self._key(question),)).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def put(self, question: str, vector: np.ndarray) -> None:
        try:
            db = self._db(create=True)
            with db:
                row = db.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                                 (self._key(question), np.asarray(vector, dtype=np.float32).tobytes(),
                                  time.time_ns())).lastrowid
                if row % 256 == 0:  # now and then, not on every question
                    db.execute("DELETE FROM vectors WHERE added < (SELECT min(added) FROM (SELECT added "
                               "FROM vectors ORDER BY added DESC LIMIT ?))", (KEEP,))
        except (sqlite3.Error, OSError):
            pass

    def close(self) -> None:
        """Closes the calling thread's connection (other threads' close with their thread)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            db.close()
