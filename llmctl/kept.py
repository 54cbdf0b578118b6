"""Objects that are costly to build and safe to share, kept for the process by a key that says
everything they were built from (a loaded model, a tokenizer encoding, an HTTP client)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class Kept:
    """The last ``size`` objects built, by key. ``get`` builds one the first time (under the
    lock, so two threads never build the same thing twice); a failed build is not kept, and an
    object dropped here lives on in whoever still holds it."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            item = self._items[key] = build()
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return item
