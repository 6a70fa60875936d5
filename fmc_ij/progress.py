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


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar (silenced by ``FMC_IJ_PROGRESS=0``)."""
    if os.environ.get("FMC_IJ_PROGRESS", "1") == "0":
        yield from items
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console, transient=False) as bar:
        yield from bar.track(items, total=total, description=description)
