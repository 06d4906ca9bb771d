"""``python -m benchmarks.soak``: hostile connections against a storage SCP while a legitimate
client uses it (a benchmark-style run, not a test).

Three processes, so that no side's load distorts another's measurements:

* the SCP: ``Client(listen_port=...)`` with a DirectorySink for unexpected deliveries and the
  default :class:`~aiodicom.Limits`;
* a legitimate client (its own process): C-ECHO on a pooled association every 20 ms, a new
  association with a C-ECHO every 250 ms, a small C-STORE every 250 ms; each timed;
* this process: for each hostile kind in turn, ``--count`` connections of that kind (from
  ``--sources`` addresses 127.0.0.2 and up) held for ``--hold`` seconds, then closed.

Kinds: silent after TCP connect, silent after association, a header announcing a huge PDU,
a PDU trickled a byte every 2 s, command fragments without end, a deflate bomb (500 MB of
zeros, 510 kB on the wire). Printed: legitimate echo latency (p50) idle, during each kind and
after; the SCP's peak RSS and open descriptors; tracebacks in its log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from aiodicom.testing.hostile import (
    CT_CONTEXT,
    DEFLATED_CONTEXT,
    associate,
    close_at_once,
    data_pdu,
    deflate_bomb,
    open_raw,
    pdu_header,
    store_rq,
)

HOST = "127.0.0.1"
SCP_AE = "SOAKSCP"
SCP_ADDRESS_SPACE = 4 << 30
KINDS = ("silent-connect", "silent-assoc", "huge-pdu", "trickle", "fragment-flood",
         "deflate-bomb")


def _raise_descriptor_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- the SCP ------------------------------------------------------------------------------------


async def _serve(directory: str) -> None:
    from aiodicom import Client, DirectorySink

    async with Client(SCP_AE, listen_port=0, listen_host=HOST,
                      unexpected_deliveries=DirectorySink(directory)) as client:
        print(client.listen_port, flush=True)
        # Until the parent closes our stdin.
        await anyio.to_thread.run_sync(sys.stdin.read)


# --- the legitimate client ----------------------------------------------------------------------


async def _legitimate(port: int, output: str) -> None:
    from aiodicom import Client
    from aiodicom.testing.synthetic import synthetic_datasets

    datasets = list(synthetic_datasets(rows=32, columns=32, slices=4))
    # A file, not a pipe: nobody reads a pipe until the end, and a full one would block us.
    samples = open(output, "w")  # noqa: SIM115 - open for the whole run

    def emit(kind: str, began: float, ok: bool) -> None:
        # Wall-clock times: the driver, another process, cuts them into its phases.
        now = time.time()
        samples.write(json.dumps({"t": began, "kind": kind, "s": now - began, "ok": ok}) + "\n")

    async def timed(kind: str, period: float, action: Callable[[], Awaitable[object]]) -> None:
        while True:
            began = time.time()
            try:
                with anyio.fail_after(30):
                    await action()
                emit(kind, began, True)
            except Exception:
                emit(kind, began, False)
            await anyio.sleep(max(0.0, period - (time.time() - began)))

    async with Client("LEGIT", peer=(HOST, port, SCP_AE)) as client:
        peer = client.peer(HOST, port, SCP_AE)
        stored = 0

        async def associate_and_echo() -> None:
            async with peer.associate() as session:
                await session.echo()

        async def store_one() -> None:
            nonlocal stored
            ds = datasets[stored % len(datasets)].copy()
            stored += 1
            ds.SOPInstanceUID = f"2.25.{uuid.uuid4().int}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            result = await client.store([ds])
            if not result.ok:
                raise RuntimeError(str(result))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(timed, "echo", 0.02, client.echo)
            tasks.start_soon(timed, "assoc-echo", 0.25, associate_and_echo)
            tasks.start_soon(timed, "store", 0.25, store_one)
            await anyio.to_thread.run_sync(sys.stdin.read)
            tasks.cancel_scope.cancel()
    samples.close()


# --- the hostile side ---------------------------------------------------------------------------


class Phase:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ended = anyio.Event()
        self.outcomes: Counter[str] = Counter()


async def _until_closed_or(phase: Phase, reader: asyncio.StreamReader) -> str:
    """'cut' if the SCP closes the connection before the phase ends, else 'held'."""
    cut = False

    async def watch() -> None:
        nonlocal cut
        try:
            while await reader.read(1 << 16):
                pass
        except OSError:
            pass
        cut = True
        tasks.cancel_scope.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        await phase.ended.wait()
        tasks.cancel_scope.cancel()
    return "closed by SCP" if cut else "held"


_BOMB: bytes | None = None


async def _hostile(
    phase: Phase, port: int, source: str, connecting: anyio.Semaphore
) -> str:
    kind = phase.kind
    try:
        async with connecting:  # paces the connects; the connections live on unthrottled
            if kind in ("silent-connect", "huge-pdu"):
                reader, writer = await open_raw(HOST, port, source=source)
                if kind == "huge-pdu":
                    writer.write(pdu_header(0x01, (1 << 20) - 6))
            else:
                reader, writer = await associate(HOST, port, source=source)
    except ConnectionError:
        return "refused"
    except OSError as exc:
        return f"connect failed ({exc.strerror})"
    try:
        if kind == "trickle":
            async def trickle() -> None:
                for byte in pdu_header(0x04, 4096) + bytes(4096):
                    writer.write(bytes([byte]))
                    await anyio.sleep(2.0)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(trickle)
                outcome = await _until_closed_or(phase, reader)
                tasks.cancel_scope.cancel()
            return outcome
        if kind == "fragment-flood":
            fragment = data_pdu(CT_CONTEXT, bytes(8000), command=True, last=False)
            with anyio.move_on_after(5):
                while not writer.is_closing():
                    writer.write(fragment)
                    await writer.drain()
        elif kind == "deflate-bomb":
            assert _BOMB is not None
            writer.write(store_rq(DEFLATED_CONTEXT, "1.2.3.4.5"))
            for start in range(0, len(_BOMB), 16000):
                writer.write(data_pdu(DEFLATED_CONTEXT, _BOMB[start : start + 16000],
                                      command=False, last=start + 16000 >= len(_BOMB)))
            await writer.drain()
        return await _until_closed_or(phase, reader)
    except OSError:
        return "closed by SCP"
    finally:
        close_at_once(writer)


async def _run_phase(phase: Phase, port: int, count: int, sources: list[str], hold: float,
                     scp_pid: int, fd_peak: list[int]) -> None:
    connecting = anyio.Semaphore(200)

    async def one(number: int) -> None:
        source = sources[number % len(sources)]
        phase.outcomes[await _hostile(phase, port, source, connecting)] += 1

    async with anyio.create_task_group() as tasks:
        for number in range(count):
            tasks.start_soon(one, number)
        deadline = anyio.current_time() + hold
        while anyio.current_time() < deadline:
            fd_peak[0] = max(fd_peak[0], _open_fds(scp_pid))
            await anyio.sleep(0.25)
        phase.ended.set()


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _p50(samples: list[dict[str, float]], kind: str, start: float, end: float) -> str:
    values = [s["s"] for s in samples if s["kind"] == kind and start <= s["t"] < end and s["ok"]]
    return f"{statistics.median(values) * 1000:.1f}" if values else "-"


def _failures(samples: list[dict[str, float]], start: float, end: float) -> int:
    return sum(1 for s in samples if start <= s["t"] < end and not s["ok"])


async def _drive(args: argparse.Namespace) -> int:
    global _BOMB
    _raise_descriptor_limit()
    # Built before anything is measured: compressing 500 MB takes seconds of a core.
    _BOMB = deflate_bomb(500 << 20)
    workdir = Path(tempfile.mkdtemp(prefix="aiodicom-soak-"))
    scp_log = open(workdir / "scp.log", "w+")  # noqa: SIM115 - read back at the end
    scp = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.soak", "--serve", str(workdir / "received")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=scp_log, text=True,
    )
    assert scp.stdout is not None and scp.stdin is not None
    port = int(scp.stdout.readline())
    fds_alone = _open_fds(scp.pid)  # the SCP with nobody connected
    samples_path = workdir / "legitimate.jsonl"
    legit = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.soak", "--legitimate", str(port),
         "--samples", str(samples_path)],
        stdin=subprocess.PIPE, text=True,
    )
    assert legit.stdin is not None
    sources = [f"127.0.0.{2 + n}" for n in range(args.sources)]
    windows: list[tuple[str, float, float, Counter[str], int]] = []
    try:
        # Phases in wall-clock time, as the legitimate client stamps its samples.
        await anyio.sleep(1.0)  # the legitimate client's first association
        fds_idle = _open_fds(scp.pid)
        start = time.time()
        await anyio.sleep(args.hold)
        windows.append(("idle", start, time.time(), Counter(), fds_idle))
        for kind in args.kinds:
            phase = Phase(kind)
            fd_peak = [0]
            start = time.time()
            await _run_phase(phase, port, args.count, sources, args.hold, scp.pid, fd_peak)
            windows.append((kind, start, time.time(), phase.outcomes, fd_peak[0]))
            await anyio.sleep(2.0)  # the SCP notices the closes
        start = time.time()
        await anyio.sleep(args.hold)
        fds_after = _open_fds(scp.pid)
        windows.append(("after", start, time.time(), Counter(), fds_after))
        peak_rss = _status_kib(scp.pid, "VmHWM")
        legit.stdin.close()
        legit.wait(30)
        await anyio.sleep(1.0)  # the SCP sees the legitimate associations end
        fds_end = _open_fds(scp.pid)  # nobody connected again: what the run leaked
    finally:
        if legit.poll() is None:
            legit.kill()
        scp.stdin.close()
        scp.wait(30)
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    scp_log.seek(0)
    log_text = scp_log.read()
    tracebacks = log_text.count("Traceback")
    idle_p50 = _p50(samples, "echo", windows[0][1], windows[0][2])
    print(f"soak: {args.count} connections of each kind from {len(sources)} address(es), "
          f"held {args.hold:g} s; default Limits; SCP log {workdir / 'scp.log'}")
    print(f"{'phase':<16}{'echo p50 ms':>12}{'x idle':>8}{'assoc+echo':>12}{'store':>8}"
          f"{'legit fail':>11}{'SCP fds':>9}  hostile outcomes")
    for name, start, end, outcomes, fds in windows:
        p50 = _p50(samples, "echo", start, end)
        ratio = (f"{float(p50) / float(idle_p50):.2f}"
                 if p50 != "-" and idle_p50 not in ("-", "0.0") else "-")
        print(f"{name:<16}{p50:>12}{ratio:>8}{_p50(samples, 'assoc-echo', start, end):>12}"
              f"{_p50(samples, 'store', start, end):>8}{_failures(samples, start, end):>11}"
              f"{fds:>9}  {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}")
    print(f"SCP peak RSS {peak_rss / 1024:.0f} MiB; its open descriptors with nobody "
          f"connected: {fds_alone} before the run, {fds_end} after it; tracebacks in its log: "
          f"{tracebacks}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="connections of each kind")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds each kind is held")
    parser.add_argument("--sources", type=int, default=1,
                        help="source addresses the hostile connections come from (127.0.0.2..)")
    parser.add_argument("--kinds", type=lambda text: text.split(","), default=list(KINDS),
                        help=f"comma-separated, from {','.join(KINDS)}")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--legitimate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--samples", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        _raise_descriptor_limit()
        # A safety net for the machine: a runaway SCP fails with MemoryError, visibly.
        resource.setrlimit(resource.RLIMIT_AS, (SCP_ADDRESS_SPACE, SCP_ADDRESS_SPACE))
        anyio.run(_serve, args.serve)
        return 0
    if args.legitimate:
        logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
        anyio.run(_legitimate, args.legitimate, args.samples)
        return 0
    return anyio.run(_drive, args)


if __name__ == "__main__":
    sys.exit(main())
