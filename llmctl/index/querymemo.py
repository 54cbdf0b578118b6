"""Question vectors remembered per data dir, so a repeated question is embedded without loading
the embedding model: a shell loop run again, an agent asking again, an answer served from the
cache (which is keyed on what retrieval found, so retrieval runs first).

A cache in the strict sense: any SQLite error (a read-only data dir, a busy or damaged file)
means "not remembered", never a failed query. Keyed on the index's embedding settings (model,
prefixes, normalisation) and the exact question text; the newest 10,000 are kept.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import numpy as np

KEEP = 10_000


class QueryMemo:
    def __init__(self, path: Path, identity: dict):
        self.path = path
        self.prefix = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _key(self, question: str) -> str:
        return hashlib.sha256(f"{self.prefix}\0{question}".encode()).hexdigest()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=0.2)
        db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL, "
                   "added INTEGER NOT NULL)")
        return db

    def get(self, question: str) -> np.ndarray | None:
        if not self.path.exists():
            return None
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=0.2)
            try:
                row = db.execute("SELECT vector FROM vectors WHERE key = ?", (self._key(question),)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def put(self, question: str, vector: np.ndarray) -> None:
        try:
            db = self._connect()
            try:
                with db:
                    row = db.execute("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                                     (self._key(question), np.asarray(vector, dtype=np.float32).tobytes(),
                                      time.time_ns())).lastrowid
                    if row % 256 == 0:  # now and then, not on every question
                        db.execute("DELETE FROM vectors WHERE added < (SELECT min(added) FROM (SELECT added "
                                   "FROM vectors ORDER BY added DESC LIMIT ?))", (KEEP,))
            finally:
                db.close()
        except (sqlite3.Error, OSError):
            pass
