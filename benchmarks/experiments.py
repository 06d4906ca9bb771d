"""Measured what-ifs (``python -m benchmarks --experiments``). Nothing here is used by the
library; each class shows, with numbers, what a design choice of ``aiodicom/`` buys or would
buy, measured in the same run as the library itself.
"""

from __future__ import annotations

from pathlib import Path

from aiodicom.instance import Instance
from aiodicom.sinks import DirectorySink


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

    @property
    def paths(self) -> dict[str, Path]:
        # Read from the sink each time: it makes each file's Path only when asked.
        return self.sink.paths

    async def __call__(self, instance: Instance) -> None:
        await self.sink(instance)

    async def handle(self, instance: Instance) -> int:
        """As an unexpected-delivery handler of a storage SCP."""
        await self.sink(instance)
        return 0x0000


def written_as_it_arrives(path: str | Path) -> DirectorySink:
    """A DirectorySink that holds nothing in memory (``memory_limit=0``): each read's fragments
    of even a 40 kB data set go to the file at once, leaving only the last read's write and the
    link between the last fragment and the response. The library's default holds data sets up
    to 64 KiB and writes them whole: run 17 (benchmarks/RESULTS.md) measured both."""
    return DirectorySink(path, memory_limit=0)
