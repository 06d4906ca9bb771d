"""Measured what-ifs (``python -m benchmarks --experiments``). Nothing here is used by the
library; each class shows, with numbers, what a design choice of ``aiodicom/`` buys or would
buy, measured in the same run as the library itself.
"""

from __future__ import annotations

from pathlib import Path

from aiodicom.instance import Instance
from aiodicom.sinks import DirectorySink
from aiodicom.spool import MEMORY_LIMIT


class WholeThenWritten:
    """A DirectorySink behind a plain async callable.

    The library writes a data set to its file while it arrives only for a DirectorySink it can
    recognise; behind any other callable the data set is received whole in memory (one copy),
    then written. This is how every instance was stored before the receive path streamed to
    disk, so the difference between the two rows is what streaming buys.
    """

    def __init__(self, path: str | Path) -> None:
        self.sink = DirectorySink(path)
        self.directory = self.sink.directory
        self.paths = self.sink.paths

    async def __call__(self, instance: Instance) -> None:
        await self.sink(instance)

    async def handle(self, instance: Instance) -> int:
        """As an unexpected-delivery handler of a storage SCP."""
        await self.sink(instance)
        return 0x0000


def held_then_written(path: str | Path) -> DirectorySink:
    """A DirectorySink as it was before run 17 (benchmarks/RESULTS.md): a data set up to 64 KiB
    is held in memory while it arrives and written whole once complete, so the peer's wait for
    the response holds its whole write and the scan for its UIDs. The library's default now
    writes each read's fragments as they come."""
    return DirectorySink(path, memory_limit=MEMORY_LIMIT)
