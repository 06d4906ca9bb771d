"""Where one small C-STORE's time goes inside our storage SCP (``python -m benchmarks.store_path``).

The store-cpu workload (worker.aio_store_cpu: our acceptor and a raw client on one event loop,
1,000 C-STOREs of the store-small objects) runs with a timestamp taken at each layer boundary
the request crosses, from the moment its bytes reach the transport until the response is handed
back to it. For every boundary the median time since the one before is printed, so the
critical path of a C-STORE (the part storescu waits for) is split into the library's own
Python by layer and the two system calls that make the file (writev, link).

A second row set writes the same data sets as plain files (open, write, close: what storescp
+B does per instance, without the atomic rename) from this process, in a fresh directory:
what files cost on this machine right now, which varies from run to run and from VM to VM
(benchmarks/RESULTS.md).

``--storescu``: the C-STOREs come from DCMTK's storescu instead (the store-small case), which
sends each one in several PDUs (a command, then its data set in pieces): printed are how many
reads a C-STORE takes, how long from its first bytes and from its last read to our response,
and how long storescu takes from our response to the next C-STORE's first bytes. That splits
store-small's wall into our part and storescu's, which both SCPs of that case wait for alike.
Also printed: our own work after each response until the serving task waits again (CPU that
no wall shows while storescu is on the other core), and how many reads per C-STORE it tried on
the socket that found nothing (each a system call and an exception).

Diagnostic only: the wrappers are installed in this process and cost a few tenths of a
microsecond each, the library is not changed, and nothing here is part of ``python -m
benchmarks``' tables.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import itertools
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _paths
from benchmarks.corpus import ensure_corpus_in_child
from benchmarks.measure import set_aside

# (label, layer, module, attribute path, where): a boundary the C-STORE crosses, in the order
# it crosses them. "enter" marks the call, "leave" its return.
BOUNDARIES: tuple[tuple[str, str, str, str, str], ...] = (
    ("state machine takes the bytes", "statemachine", "aiodicom.statemachine",
     "AssociationStateMachine.receive_pdus", "enter"),
    ("command fragment complete", "reassembly", "aiodicom.reassembly",
     "MessageAssembler._command_complete", "enter"),
    ("command decoded, spool opened", "reassembly/dimse/sinks", "aiodicom.reassembly",
     "MessageAssembler._command_complete", "leave"),
    ("data set complete", "reassembly", "aiodicom.reassembly",
     "MessageAssembler._data_complete", "enter"),
    ("message handed over", "reassembly", "aiodicom.reassembly",
     "MessageAssembler._data_complete", "leave"),
    ("dispatcher routes it", "dispatcher", "aiodicom.dispatcher", "Dispatcher._route", "enter"),
    ("storage SCP takes it", "services/storage_scp", "aiodicom.services.storage_scp", "_store",
     "enter"),
    ("UID check starts", "services/storage_scp", "aiodicom.services.storage_scp", "mismatch",
     "enter"),
    ("UIDs read (peek)", "instance/peek", "aiodicom.services.storage_scp", "mismatch", "leave"),
    ("sink called", "routing/sinks", "aiodicom.sinks", "DirectorySink.__call__", "enter"),
    ("file name made", "sinks", "aiodicom.sinks", "DirectorySink._default_target", "leave"),
    ("file written (writev)", "system call", "aiodicom.fileio", "write_all", "leave"),
    ("file named (link)", "system call", "aiodicom.fileio", "link_over", "leave"),
    ("response built", "storage_scp/dimse", "aiodicom.services.storage_scp", "store_response",
     "leave"),
)


class Marks:
    """Timestamps of the C-STORE in flight; one row per C-STORE once its response is sent."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.rows: list[dict[str, float]] = []

    def mark(self, label: str) -> None:
        # The first crossing counts: a command and its data set cross some boundaries twice.
        self.current.setdefault(label, time.perf_counter())

    def sent(self) -> None:
        if "bytes arrive" in self.current:
            self.current["response handed to the transport"] = time.perf_counter()
            self.rows.append(self.current)
        self.current = {}


def _resolve(module_name: str, path: str) -> tuple[Any, str]:
    owner: Any = importlib.import_module(module_name)
    *outer, name = path.split(".")
    for part in outer:
        owner = getattr(owner, part)
    return owner, name


def _wrapped(function: Callable[..., Any], before: Callable[[], None] | None,
             after: Callable[[], None] | None) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(function):
        async def coroutine(*args: Any, **kwargs: Any) -> Any:
            if before:
                before()
            result = await function(*args, **kwargs)
            if after:
                after()
            return result
        return coroutine

    def plain(*args: Any, **kwargs: Any) -> Any:
        if before:
            before()
        result = function(*args, **kwargs)
        if after:
            after()
        return result
    return plain


def install(marks: Marks) -> None:
    """Wrap each boundary of :data:`BOUNDARIES` and the transport's two ends."""
    wanted: dict[tuple[str, str], dict[str, str]] = {}
    for label, _layer, module_name, path, where in BOUNDARIES:
        wanted.setdefault((module_name, path), {})[where] = label
    for (module_name, path), labels in wanted.items():
        owner, name = _resolve(module_name, path)
        enter, leave = labels.get("enter"), labels.get("leave")
        setattr(owner, name, _wrapped(
            getattr(owner, name),
            (lambda label=enter: marks.mark(label)) if enter else None,  # type: ignore[misc]
            (lambda label=leave: marks.mark(label)) if leave else None,  # type: ignore[misc]
        ))
    _watch_transport(lambda: marks.mark("bytes arrive"), marks.sent)


def _watch_transport(on_read: Callable[[], None], on_send: Callable[[], None]) -> None:
    """Call ``on_read`` as bytes reach the transport, ``on_send`` as bytes are handed to it."""
    import aiodicom.transport as transport

    protocol = transport._BufferedProtocol
    for name in ("buffer_updated", "filled"):  # the loop's read and the transport's own
        setattr(protocol, name, _wrapped(getattr(protocol, name), on_read, None))
    connection = transport.SocketConnection
    original_send = connection.send

    async def send(self: Any, data: bytes) -> None:
        on_send()
        await original_send(self, data)

    connection.send = send  # type: ignore[method-assign]


def _order() -> list[tuple[str, str]]:
    return ([("bytes arrive", "transport")] + [(label, layer) for label, layer, *_ in BOUNDARIES]
            + [("response handed to the transport", "association/transport")])


def report(rows: list[dict[str, float]]) -> list[tuple[str, str, float]]:
    """(boundary, layer, median microseconds since the boundary before) for every boundary
    all rows crossed; the first rows (the association's first C-STOREs) are left out."""
    # Rows of C-STOREs only (the association's own PDUs cross the transport too).
    stores = [row for row in rows if "response built" in row]
    steady = stores[5:] if len(stores) > 20 else stores
    crossed = [(label, layer) for label, layer in _order() if all(label in r for r in steady)]
    out = []
    for (previous, _), (label, layer) in itertools.pairwise(crossed):
        out.append((label, layer, statistics.median(
            (row[label] - row[previous]) * 1e6 for row in steady)))
    return out


def plain_files(files: list[Path], directory: Path) -> float:
    """Median microseconds to create, write and close one file of each data set, named at once
    (no temporary file, no link): the file system's part of storing one instance."""
    from aiodicom.instance import read_part10

    datas = [bytes(read_part10(path).data) for path in files]
    directory.mkdir(parents=True)
    times = []
    for number, data in enumerate(datas):
        start = time.perf_counter()
        fd = os.open(directory / f"{number}.dcm", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


class Traffic:
    """The time of every read and every send of our side of the association."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def install(self) -> None:
        import aiodicom.transport as transport

        events = self.events
        _watch_transport(lambda: events.append(("read", time.perf_counter())),
                         lambda: events.append(("send", time.perf_counter())))
        # The serving task going back to sleep, and each read it tries before it does.
        protocol = transport._BufferedProtocol
        protocol.wait = _wrapped(  # type: ignore[method-assign]
            protocol.wait, lambda: events.append(("wait", time.perf_counter())), None)
        connection = transport.SocketConnection
        read_now = connection._read_now

        def tried(self: Any) -> None:
            before = self.buffer.received
            read_now(self)
            if self.buffer.received == before:  # a system call and an exception for nothing
                events.append(("missed", time.perf_counter()))

        connection._read_now = tried  # type: ignore[method-assign]

    def per_store(self) -> list[tuple[int, float, float, float, float, int]]:
        """For each C-STORE between two of our responses (the association's first and last
        ones left out): reads, first bytes to response, last read to response (us), the
        peer's turnaround from our previous response to its first bytes (us), our own work
        from that response until the serving task waits again (us), and how many reads it
        tried on the socket without waiting that found nothing."""
        sends = [i for i, (kind, _) in enumerate(self.events) if kind == "send"]
        rows = []
        for before, after in itertools.pairwise(sends[5:-2]):
            between = self.events[before + 1 : after]
            reads = [t for kind, t in between if kind == "read"]
            waits = [t for kind, t in between if kind == "wait"]
            if reads and waits:
                sent, answered = self.events[before][1], self.events[after][1]
                rows.append((len(reads), (answered - reads[0]) * 1e6,
                             (answered - reads[-1]) * 1e6, (reads[0] - sent) * 1e6,
                             (waits[0] - sent) * 1e6,
                             sum(1 for kind, _ in between if kind == "missed")))
        return rows


async def _serve_storescu(files: list[Path], out_dir: Path) -> float:
    """Our acceptor and a DirectorySink receiving ``files`` from storescu; its wall."""
    from peers import peer_env
    from peers.dcmtk import STORESCU

    import aiodicom
    from aiodicom.sinks import DirectorySink

    sink = DirectorySink(out_dir)
    async with aiodicom.Client(
        "STORESCP", listen_port=0, unexpected_deliveries=sink, max_pdu_length=131072
    ) as server:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            STORESCU, "-aec", "STORESCP", "-R", "127.0.0.1", str(server.listen_port),
            *map(str, files), env=peer_env(), stdout=asyncio.subprocess.DEVNULL,
        )
        if await process.wait() != 0 or len(sink.paths) != len(files):
            raise SystemExit(f"storescu exited {process.returncode}, {len(sink.paths)} files")
        return time.perf_counter() - started


def storescu_rounds(files: list[Path], rounds: int, out: Path, run_id: str) -> None:
    traffic = Traffic()
    traffic.install()
    print(f"storescu sends {len(files)} C-STOREs to our acceptor per round, {rounds} rounds;"
          " medians in microseconds")
    for number in range(rounds):
        target = out / f"store-path-storescu-{number}"
        os.sync()
        traffic.events.clear()
        wall = asyncio.run(_serve_storescu(files, target))
        set_aside(target, out / ".spent", f"store-path-storescu-{run_id}-{number}")
        columns = list(zip(*traffic.per_store(), strict=True))
        reads, first, last, turnaround, settling = (
            statistics.median(column) for column in columns[:5]
        )
        missed = statistics.mean(columns[5])
        print(f"round {number + 1}: {wall / len(files) * 1e6:.0f} us per C-STORE in all;"
              f" {reads:.0f} reads per C-STORE; ours from its first bytes {first:.0f},"
              f" from its last read {last:.0f}; storescu's turnaround {turnaround:.0f};"
              f" ours after the response until waiting again {settling:.0f};"
              f" {missed:.2f} reads per C-STORE tried on the socket for nothing")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_path", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick corpus (50 objects)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storescu", action="store_true",
                        help="storescu sends the C-STOREs: split the wall into ours and its")
    args = parser.parse_args()
    profile = "quick" if args.quick else "full"
    corpus = ensure_corpus_in_child(profile)
    files = list(corpus.store_small.files)
    out = _paths.WORK / profile / "out"
    spent = out / ".spent"
    run_id = time.strftime("%Y%m%d-%H%M%S")
    if args.storescu:
        storescu_rounds(files, args.rounds, out, run_id)
        return

    from benchmarks.worker import aio_store_cpu

    marks = Marks()
    install(marks)
    print(f"{len(files)} C-STOREs of {corpus.store_small.dataset_bytes / len(files) / 1e3:.0f} kB"
          f" per round, {args.rounds} rounds; median microseconds since the boundary before")
    for number in range(args.rounds):
        target = out / f"store-path-{number}"
        os.sync()  # no other round's files still being written back
        marks.rows.clear()
        result = asyncio.run(aio_store_cpu(
            {"files": [str(p) for p in files], "out_dir": str(target), "max_pdu": 131072}))
        set_aside(target, spent, f"store-path-{run_id}-{number}")
        rows = report(marks.rows)
        python = sum(us for _label, layer, us in rows if layer != "system call")
        calls = sum(us for _label, layer, us in rows if layer == "system call")
        os.sync()
        plain_dir = out / f"store-path-plain-{number}"
        plain = plain_files(files, plain_dir)
        set_aside(plain_dir, spent, f"store-path-plain-{run_id}-{number}")
        print(f"\nround {number + 1}: {result['wall'] / len(files) * 1e6:.0f} us per C-STORE in all"
              f" (the raw client's part included); critical path {python + calls:.0f} us ="
              f" {python:.0f} us of Python + {calls:.0f} us in writev and link;"
              f" a plain file here costs {plain:.0f} us (open, write, close)")
        for label, layer, us in rows:
            print(f"  {us:7.1f}  {label:<34} {layer}")


if __name__ == "__main__":
    main()
