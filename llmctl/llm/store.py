"""Opening llmctl's SQLite files with one-line errors for corrupt or locked files."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from llmctl.errors import IndexStateError


def connect(path: Path, schema: str, what: str, patience: float = 10.0) -> sqlite3.Connection:
    """Open (creating if needed) a WAL-mode SQLite file and apply its schema.

    Switching a new file to WAL can fail at once with "locked" when another connection opens it
    at the same moment (SQLite does not wait for that lock): such opens are tried again.
    """
    give_up = time.monotonic() + patience
    pause = 0.01
    while True:
        db = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), timeout=patience, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(schema)
            return db
        except sqlite3.OperationalError as exc:
            if db is not None:
                db.close()
            locked = "locked" in str(exc) or "busy" in str(exc)
            if locked and time.monotonic() < give_up:
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
            if locked:
                raise IndexStateError(f"The {what} {path} is locked by another process: try again") from None
            raise IndexStateError(f"The {what} {path} cannot be opened ({exc})") from None
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            raise CorruptFile(path, what, str(exc)) from None


class CorruptFile(IndexStateError):
    def __init__(self, path: Path, what: str, detail: str):
        super().__init__(
            f"The {what} {path} is unreadable ({detail}): move it aside "
            f"(mv {path} {path}.bak) to start a new one; llmctl deleted nothing"
        )
        self.path = path
