"""Progress bars for long work (rich, on stderr, so stdout stays clean for tables and JSON)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
_console = Console(stderr=True)


def _columns(*extra: TextColumn) -> tuple:
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *extra,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar (silenced by ``FMC_IJ_PROGRESS=0``)."""
    if os.environ.get("FMC_IJ_PROGRESS", "1") == "0":
        yield from items
        return
    with Progress(*_columns(), console=_console, transient=False) as bar:
        yield from bar.track(items, total=total, description=description)


class Bar:
    """A progress bar with live fields (loss, validation score) for loops that are not a plain iterable.

    >>> with Bar(1000, "train") as bar:          # doctest: +SKIP
    ...     bar.update(1, info="loss 0.031")
    """

    def __init__(self, total: int, description: str, completed: int = 0):
        self.enabled = os.environ.get("FMC_IJ_PROGRESS", "1") != "0"
        self._progress: Progress | None = None
        self.total, self.description, self.completed = total, description, completed

    def __enter__(self) -> Bar:
        if self.enabled:
            self._progress = Progress(*_columns(TextColumn("{task.fields[info]}")), console=_console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, completed=self.completed, info="")
        return self

    def update(self, advance: int = 1, info: str | None = None) -> None:
        if self._progress is not None:
            fields = {} if info is None else {"info": info}
            self._progress.update(self._task, advance=advance, **fields)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
