"""Tables and progress bars (rich, the extra ``cli``). Progress goes to stderr and only on a
terminal: piped output stays the data alone."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from types import TracebackType

from pydicom import Dataset
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from aiodicom.cli.common import Args, human_bytes, is_terminal

__all__ = ["Bar", "print_table"]

_SKIPPED = {"QueryRetrieveLevel", "SpecificCharacterSet"}


def _cell(ds: Dataset, keyword: str) -> str:
    elem = ds.get(keyword)
    if elem is None:
        return ""
    value = ds[keyword].value
    if ds[keyword].VR == "SQ":
        return f"<{len(value or [])} item(s)>"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def print_table(matches: Iterable[Dataset], columns: list[str], title: str | None = None) -> None:
    """One row per match, one column per key asked for (stdout; wide when piped, so that UIDs
    are never cut)."""
    console = Console(width=None if sys.stdout.isatty() else 100_000, soft_wrap=False)
    table = Table(*[c for c in columns if c not in _SKIPPED], title=title, show_lines=False)
    for ds in matches:
        table.add_row(*[_cell(ds, c) for c in columns if c not in _SKIPPED])
    console.print(table)


class Bar:
    """A progress bar with sub-operation counts and MB/s on a terminal; nothing otherwise."""

    def __init__(self, args: Args, description: str, total: int | None) -> None:
        self.enabled = is_terminal(args)
        self.started = time.perf_counter()
        self.bytes = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self.enabled:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"), TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=False,
            )
            self._task = self._progress.add_task(description, total=total, counts="", rate="")

    def __enter__(self) -> Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def rate(self) -> str:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return f"{self.bytes / elapsed / 1e6:.1f} MB/s"

    def update(
        self, *, completed: int | None = None, total: int | None = None, add_bytes: int = 0,
        advance: int = 0, failed: int = 0, warning: int = 0,
    ) -> None:
        self.bytes += add_bytes
        if self._progress is None or self._task is None:
            return
        counts = ", ".join(
            text for text in (f"{failed} failed" if failed else "",
                              f"{warning} warning" if warning else "") if text
        )
        fields: dict[str, object] = {"counts": counts, "rate": self.rate()}
        if total is not None:
            fields["total"] = total
        if completed is not None:
            fields["completed"] = completed
        self._progress.update(self._task, advance=advance, **fields)  # type: ignore[arg-type]

    def summary_bytes(self) -> str:
        return f"{human_bytes(self.bytes)}, {self.rate()}"
