"""The progress interface the core reports to; the CLI renders it (or not, with --quiet)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of a long task. The core never prints; it calls these."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, steps: int = 1, **fields: float) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Progress that shows nothing (library use, tests, --quiet)."""

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, steps: int = 1, **fields: float) -> None:
        pass

    def finish(self) -> None:
        pass


class NamedProgress:
    """Another progress sink whose tasks carry a name first (``run-filtered: epoch 1/2``), so that a
    command which trains several models says which one a bar belongs to."""

    def __init__(self, inner: Progress, name: str) -> None:
        self.inner = inner
        self.name = name

    def start(self, description: str, total: int) -> None:
        self.inner.start(f"{self.name}: {description}", total)

    def advance(self, steps: int = 1, **fields: float) -> None:
        self.inner.advance(steps, **fields)

    def finish(self) -> None:
        self.inner.finish()
