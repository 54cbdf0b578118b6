"""Ctrl-C and SIGTERM as a request to stop at the next safe point, not in the middle of a write.

``ingest`` runs inside ``stop_requests()``: the first SIGINT/SIGTERM only sets a flag, and
the pipeline checks it between embedding batches and commits, so whatever was embedded is
committed before it exits with ``Interrupted`` (exit 130). A second signal stops at once
(the index stays consistent either way: see ingest/pipeline.py).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from llmctl.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    def __init__(self, also=None) -> None:
        self.signum: int | None = None
        self.also = also  # another stop request (an Event: a server stopping its watcher thread)

    def __bool__(self) -> bool:
        return self.signum is not None or (self.also is not None and bool(self.also.is_set()))

    is_set = __bool__  # an Event for watchfiles' stop_event

    def check(self, message: str) -> None:
        """Raise ``Interrupted(message)`` if a stop was requested."""
        if self:
            raise Interrupted(message)


@contextmanager
def stop_requests(also=None):
    """Yield a StopFlag set by SIGINT/SIGTERM (main thread only), or by ``also`` (an Event or a
    StopFlag) being set: a thread that ingests stops at the same safe points when its owner asks."""
    flag = StopFlag(also)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def on_signal(signum, frame):
        if flag:  # second signal: the user insists
            raise KeyboardInterrupt
        flag.signum = signum

    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def terminate_as_interrupt() -> None:
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt) for the whole process."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
