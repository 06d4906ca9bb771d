"""Check that a DICOM peer answers: associate, C-ECHO, release.

    python examples/echo.py HOST PORT [PEER_AE] [--our-ae AIOSCU]
"""

from __future__ import annotations

import argparse
import sys
import time

import anyio

import aiodicom


async def main(args: argparse.Namespace) -> int:
    async with aiodicom.Client(args.our_ae, peer=(args.host, args.port, args.peer_ae)) as client:
        started = time.perf_counter()
        try:
            await client.echo()
        except aiodicom.DicomError as exc:
            print(f"C-ECHO to {args.peer_ae}@{args.host}:{args.port} failed: {exc}")
            return 1
        elapsed = (time.perf_counter() - started) * 1000
        print(f"C-ECHO to {args.peer_ae}@{args.host}:{args.port}: success in {elapsed:.1f} ms")
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("peer_ae", nargs="?", default="ANY-SCP")
    parser.add_argument("--our-ae", default="AIOSCU")
    sys.exit(anyio.run(main, parser.parse_args()))
