"""Opening llmctl's SQLite files with one-line errors for corrupt or locked files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from llmctl.datadir import refuse_link
from llmctl.errors import IndexStateError
from llmctl.retry import while_locked


def connect(path: Path, schema: str, what: str, patience: float = 10.0, shared: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) a WAL-mode SQLite file and apply its schema.

    ``shared``: usable from several threads (the caller serialises its use).
    Switching a new file to WAL can fail at once with "locked" when another connection opens it
    at the same moment (SQLite does not wait for that lock): such opens are tried again.
    """
    refuse_link(path, what, sqlite=True)
    try:
        return while_locked(lambda: _open(path, schema, patience, shared), _is_locked, patience)
    except sqlite3.OperationalError as exc:
        if _is_locked(exc):
            raise IndexStateError(f"The {what} {path} is locked by another process: try again") from None
        raise IndexStateError(f"The {what} {path} cannot be opened ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise CorruptFile(path, what, str(exc)) from None


def _is_locked(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _open(path: Path, schema: str, timeout: float, shared: bool) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=not shared)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


class CorruptFile(IndexStateError):
    def __init__(self, path: Path, what: str, detail: str):
        super().__init__(
            f"The {what} {path} is unreadable ({detail}): move it aside "
            f"(mv {path} {path}.bak) to start a new one; llmctl deleted nothing"
        )
        self.path = path
