"""Opening llmctl's SQLite files with one-line errors for corrupt or locked files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from llmctl.errors import IndexStateError


def connect(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """Open (creating if needed) a WAL-mode SQLite file and apply its schema."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(schema)
        return db
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise IndexStateError(f"The {what} {path} is locked by another process: try again") from None
        raise IndexStateError(f"The {what} {path} cannot be opened ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise CorruptFile(path, what, str(exc)) from None


class CorruptFile(IndexStateError):
    def __init__(self, path: Path, what: str, detail: str):
        super().__init__(
            f"The {what} {path} is unreadable ({detail}): move it aside "
            f"(mv {path} {path}.bak) to start a new one; llmctl deleted nothing"
        )
        self.path = path
