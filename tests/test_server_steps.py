"""Driving the index and the engine from async code: the loop runs other tasks between steps."""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
import anyio.lowlevel
from pydicom.dataset import Dataset

from aiodicom.query import QueryModel
from aiodicom.server import InstanceIndex, find, run_scan, stepwise
from aiodicom.testing import write_synthetic


async def _count_turns(counter: list[int]) -> None:
    while True:
        counter[0] += 1
        await anyio.lowlevel.checkpoint()


async def test_run_scan_lets_other_tasks_run_between_steps(tmp_path: Path) -> None:
    paths = write_synthetic(tmp_path, rows=8, columns=8, slices=2)
    index = InstanceIndex(tmp_path)
    turns = [0]
    async with anyio.create_task_group() as tg:
        tg.start_soon(_count_turns, turns)
        await anyio.lowlevel.checkpoint()
        before = turns[0]
        progress = await run_scan(index, files_per_step=2)
        during = turns[0] - before
        tg.cancel_scope.cancel()
    assert progress.done and progress.files_indexed == len(paths) == len(index)
    assert during >= len(paths) // 2 - 1


async def test_stepwise_find_interleaves_with_other_tasks(tmp_path: Path) -> None:
    write_synthetic(tmp_path, rows=8, columns=8, slices=2)
    index = InstanceIndex(tmp_path, database=":memory:")
    await run_scan(index)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    turns = [0]
    seen = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_count_turns, turns)
        async for batch in stepwise(find(index, identifier, QueryModel.STUDY_ROOT, batch_size=1)):
            seen.append((len(batch), turns[0]))
        tg.cancel_scope.cancel()
    assert [n for n, _ in seen] == [1] * 6
    # The counting task ran between every two batches.
    assert all(b > a for (_, a), (_, b) in itertools.pairwise(seen))
