"""Driving the index's and the engine's bounded steps from async code.

The index and the query engine are synchronous and do a bounded amount of work per step, so
they never hold the event loop for long; these helpers give the loop back between steps.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import anyio.lowlevel

from aiodicom.server.index import InstanceIndex, ScanProgress

__all__ = ["run_scan", "stepwise"]

T = TypeVar("T")


async def stepwise(steps: Iterator[T]) -> AsyncIterator[T]:
    """Each step of ``steps``, with a checkpoint after each: other tasks run between steps,
    and the caller can be cancelled there.

    ``async for batch in stepwise(find(index, identifier, model)): ...``
    """
    for step in steps:
        yield step
        await anyio.lowlevel.checkpoint()


async def run_scan(
    index: InstanceIndex,
    directory: str | os.PathLike[str] | None = None,
    *,
    files_per_step: int = 2,
) -> ScanProgress:
    """:meth:`InstanceIndex.scan` to the end, giving the loop back between steps."""
    progress = ScanProgress(0, 0, 0, 0, done=True)
    steps = index.scan(directory, files_per_step=files_per_step)
    async for progress in stepwise(steps):  # noqa: B007 - the last one is the answer
        pass
    return progress
