"""How the core reports progress without printing: the CLI passes a renderer in."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Protocol


class Task(Protocol):
    def advance(self, n: int) -> None: ...
    def set_total(self, total: int | None) -> None: ...  # a total known (or estimated better) later
    def done(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> Task: ...
    def status(self, description: str) -> AbstractContextManager: ...


class _NullTask:
    def advance(self, n: int) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def done(self) -> None:
        pass


class NullProgress:
    def task(self, description: str, total: int | None) -> Task:
        return _NullTask()

    def status(self, description: str) -> AbstractContextManager:
        return nullcontext()
