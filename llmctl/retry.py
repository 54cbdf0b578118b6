"""Trying again when a file is locked for a moment, as SQLite does (and Chroma's SQLite under it)
while another connection sets a new file up: those errors come at once, without waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def while_locked(call: Callable[[], T], locked: Callable[[Exception], bool], patience: float = 10.0,
                 first_pause: float = 0.01, max_pause: float = 0.5) -> T:
    """``call()``, tried again with growing pauses for up to ``patience`` seconds while it raises an
    error that ``locked`` recognises; any other error, or the last one, is raised."""
    give_up, pause = time.monotonic() + patience, first_pause
    while True:
        try:
            return call()
        except Exception as exc:
            if not locked(exc) or time.monotonic() > give_up:
                raise
            time.sleep(pause)
            pause = min(pause * 2, max_pause)
