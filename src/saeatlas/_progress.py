"""One progress bar for every long step (rich), off in tests and pipes when asked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: float = 1, **fields: object) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, **fields)

    def grow(self, n: float) -> None:
        """Add ``n`` to the steps the bar counts to (work that turned out to be needed)."""
        if self._progress is not None:
            total = next(t.total for t in self._progress.tasks if t.id == self._task)
            self._progress.update(self._task, total=None if total is None else total + n)


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True) -> Iterator[_Bar]:
    """A bar with count, elapsed and remaining time; ``advance(n)`` moves it."""
    if not enabled:
        yield _Bar(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")
        yield _Bar(progress, task)
