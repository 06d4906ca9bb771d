"""An embedded Q/R SCP in a process of its own, for ``python -m benchmarks.bulk``.

``python -m benchmarks.bulk_server DIRECTORY AE_TITLE`` serves the index in DIRECTORY (built
by the benchmark, kept between runs) on a free loopback port, prints ``READY <port>``, then
answers lines on stdin: ``stats`` prints ``{"open": n, "peak": n}`` (associations served at
once, as the SCP sees them, since the last ``reset``), ``reset`` starts a new observation,
``stop`` (or EOF) ends it. A process of its own so that the measured client's CPU and RSS are
its own, and the server's work is not on the client's loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aiodicom.server import InstanceIndex, QRServer, run_scan


async def serve(directory: Path, ae_title: str) -> None:
    with InstanceIndex(directory) as index:
        if len(index) == 0:
            await run_scan(index)
        async with QRServer(ae_title, index, max_pdu_length=131072) as server:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
            )
            print(f"READY {server.listen_port}", flush=True)
            while line := (await reader.readline()).decode().strip():
                if line == "stats":
                    stats = {"open": server.open_associations, "peak": server.peak_associations}
                    print(json.dumps(stats), flush=True)
                elif line == "reset":
                    server.reset_peak()
                    print("{}", flush=True)
                elif line == "stop":
                    break


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), sys.argv[2]))
