"""Fault injection against a real PACS: C-FIND, C-MOVE and C-GET through a proxy that cuts,
delays, tears into 1-byte writes or corrupts one byte, at points taken from a clean run.

aiodicom <-> FaultyProxy <-> DCMTK dcmqrscp (and, for the C-MOVE's C-STOREs, dcmqrscp <->
FaultyProxy <-> our acceptor). For each operation a clean run through the proxies is recorded
first; the cut points are every PDU boundary of each direction plus points inside each PDU
(after the type byte, inside the length, the middle), thinned to a few dozen per operation
(all of them with AIODICOM_FAULT_MATRIX=full, Orthanc too). Each faulted run must end with a
typed error (DicomError) or a result, and:

* what it reports is exactly what arrived: the C-FIND matches are the pending responses that
  got through whole; a retrieval's ``completed`` holds every instance whose C-STORE-RSP
  (success) got through, and only instances whose data set arrived whole; each is stored under
  its final name with the bytes the PACS serves;
* nothing leaks: open file descriptors and asyncio tasks are as before the run, no temporary
  file is left in the DirectorySink, no association of the pool is left in use.

Splitting every byte into a write of its own must change nothing. The test prints how many
points it tried.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from peers import LOOPBACK
from peers.corpus import Corpus, SeriesInfo
from peers.dcmtk import DcmQrScp
from peers.faulty_proxy import Fault, FaultyProxy, faulty_proxy, pdu_boundaries, split_pdus
from peers.orthanc import Orthanc

import aiodicom
from aiodicom.dimse import decode_command
from aiodicom.errors import DicomError
from aiodicom.fileio import split_part10
from aiodicom.pdu import PDataTF, decode_pdu
from aiodicom.services.retrieve import RetrieveError, RetrieveResult
from aiodicom.sinks import DirectorySink

pytestmark = pytest.mark.interop

AE = "AIOSCU"
FULL = os.environ.get("AIODICOM_FAULT_MATRIX", "").lower() == "full"
CUTS_PER_OPERATION = 10**6 if FULL else 30
CORRUPTIONS_PER_OPERATION = 10**6 if FULL else 4
TIMEOUTS = aiodicom.Timeouts(connect=5, acse=3, dimse=3, network=3, artim=3)
# 1-byte writes are slow (a write and a read per byte): one instance of Orthanc's C-GET took
# more than 3 s to arrive, and the DIMSE timeout counts whole instances as activity, not bytes.
SPLIT_TIMEOUTS = aiodicom.Timeouts(connect=5, acse=30, dimse=60, network=60, artim=5)
RUN_LIMIT = 60  # seconds: a run that takes longer hangs
C_STORE_RSP = 0x8001
C_FIND_RSP = 0x8020


# --- what went through a proxy -------------------------------------------------------------------


@dataclass
class Message:
    command: dict[str, object]
    has_data: bool = False
    data_complete: bool = False


def messages(stream: bytes | bytearray) -> list[Message]:
    """The DIMSE messages in the whole PDUs of one direction (lenient: stops at garbage)."""
    found: list[Message] = []
    command = bytearray()
    current: Message | None = None
    for raw in split_pdus(stream):
        try:
            pdu = decode_pdu(raw)
        except DicomError:
            break
        if not isinstance(pdu, PDataTF):
            continue
        for pdv in pdu.pdvs:
            if pdv.is_command:
                command += pdv.data
                if pdv.is_last:
                    try:
                        decoded = decode_command(bytes(command))
                    except DicomError:
                        return found
                    command.clear()
                    current = Message(decoded, has_data=decoded.get("CommandDataSetType") != 0x0101)
                    found.append(current)
            elif pdv.is_last and current is not None:
                current.data_complete = True
    return found


def acknowledged(stream: bytes | bytearray) -> set[str]:
    """SOP Instance UIDs of the successful C-STORE-RSPs in ``stream``."""
    return {
        str(m.command.get("AffectedSOPInstanceUID")) for m in messages(stream)
        if m.command.get("CommandField") == C_STORE_RSP and m.command.get("Status") == 0
    }


def arrived_whole(stream: bytes | bytearray) -> set[str]:
    """SOP Instance UIDs of the C-STORE-RQs in ``stream`` whose data set got through whole."""
    return {
        str(m.command.get("AffectedSOPInstanceUID")) for m in messages(stream)
        if m.command.get("CommandField") == 0x0001 and m.data_complete
    }


def pending_matches(stream: bytes | bytearray) -> int:
    return sum(
        1 for m in messages(stream)
        if m.command.get("CommandField") == C_FIND_RSP and m.data_complete
        and m.command.get("Status") in (0xFF00, 0xFF01)
    )


# --- points ---------------------------------------------------------------------------------------


def cut_points(stream: bytes | bytearray) -> list[int]:
    """Every PDU boundary and a few points inside each PDU of one direction."""
    edges = pdu_boundaries(stream)
    points: set[int] = set()
    for start, end in itertools.pairwise(edges):
        points.update({start, start + 1, start + 4, start + 6, start + 12,
                       (start + end) // 2, end - 1})
    points.add(edges[-1])
    return sorted(p for p in points if 0 <= p <= len(stream))


def thin(points: Sequence[int], keep: int) -> list[int]:
    """At most ``keep`` of ``points``, spread over all of them, the first and last kept."""
    if len(points) <= keep:
        return list(points)
    step = (len(points) - 1) / (keep - 1)
    return sorted({points[round(i * step)] for i in range(keep)})


def header_points(stream: bytes | bytearray) -> list[int]:
    """Bytes that frame the protocol: each PDU's type and length, its first PDV header."""
    edges = pdu_boundaries(stream)
    return sorted({p for start in edges[:-1] for p in (start, start + 5, start + 9, start + 11)
                   if p < len(stream)})


# --- one run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """One operation through the proxies: what came back, what went through."""

    matches: int = 0
    result: RetrieveResult | None = None
    error: DicomError | None = None
    main: FaultyProxy | None = None
    stores: FaultyProxy | None = None
    sink_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


Operation = Callable[[aiodicom.Peer, DirectorySink, Run], Awaitable[RetrieveResult | None]]


def operations(series: SeriesInfo) -> dict[str, Operation]:
    query = aiodicom.Query.series(
        StudyInstanceUID=series.study_instance_uid, SeriesInstanceUID=series.series_instance_uid)

    async def find(peer: aiodicom.Peer, sink: DirectorySink, run: Run) -> None:
        async with peer.find(aiodicom.Query.study(PatientID="*")) as matches:
            async for _ in matches:
                run.matches += 1

    async def move(peer: aiodicom.Peer, sink: DirectorySink, run: Run) -> RetrieveResult:
        return await peer.move(query, sink=sink)

    async def get(peer: aiodicom.Peer, sink: DirectorySink, run: Run) -> RetrieveResult:
        return await peer.get(query, sink=sink)

    return {"find": find, "move": move, "get": get}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Harness:
    def __init__(self, qr: DcmQrScp | Orthanc, stores: FaultyProxy, operation: Operation,
                 work: Path, corpus: Corpus) -> None:
        self.qr = qr
        self.stores = stores
        self.operation = operation
        self.work = work
        self.corpus = corpus
        self.runs = 0

    async def run(self, faults: Sequence[Fault] = (), store_faults: Sequence[Fault] = (),
                  split: bool = False) -> Run:
        timeouts = SPLIT_TIMEOUTS if split else TIMEOUTS
        self.runs += 1
        sink_dir = self.work / f"run{self.runs}"
        run = Run(sink_dir=sink_dir)
        sink = DirectorySink(sink_dir)
        self.stores.reset(store_faults)
        tasks_before = set(asyncio.all_tasks())
        fds_before = open_fds()
        with anyio.fail_after(RUN_LIMIT * (5 if split else 1)):
            async with faulty_proxy(self.qr.host, self.qr.port, faults=faults,
                                    split_writes=split) as main:
                run.main = main
                async with aiodicom.Client(AE, listen_port=0, timeouts=timeouts) as client:
                    assert client.listen_port is not None
                    self.stores.target = (LOOPBACK, client.listen_port)
                    peer = client.peer(LOOPBACK, main.port, self.qr.ae_title)
                    try:
                        run.result = await self.operation(peer, sink, run)
                    except RetrieveError as exc:
                        run.error, run.result = exc, exc.result
                    except DicomError as exc:
                        run.error = exc
                    total, idle = client.pool.counts((LOOPBACK, main.port, self.qr.ae_title))
                    assert total == idle, f"{total - idle} association(s) still in use"
        run.stores = self.stores
        # The PACS closes its side of the C-STORE association on its own time.
        await self.stores.wait_closed()
        await anyio.lowlevel.checkpoint()  # a task done just now leaves all_tasks() after it
        left = set(asyncio.all_tasks()) - tasks_before
        assert not left, f"tasks left running: {[t.get_coro() for t in left]}"
        assert open_fds() == fds_before, f"{open_fds() - fds_before} file descriptor(s) leaked"
        self.check_sink(run)
        return run

    def check_sink(self, run: Run) -> None:
        assert run.sink_dir is not None
        stored: dict[str, Path] = {}
        if run.sink_dir.exists():
            for path in run.sink_dir.rglob("*"):
                if path.is_dir():
                    continue
                assert not path.name.startswith("."), f"temporary file left: {path}"
                meta, data = split_part10(path.read_bytes())
                uid = meta["sop_instance_uid"]
                expected = split_part10(self.corpus.instance(uid).path.read_bytes())[1]
                assert bytes(data) == bytes(expected), f"{path} differs from what the PACS serves"
                stored[uid] = path
        completed = set(run.result.completed) if run.result is not None else set()
        assert set(stored) == completed, (
            f"stored {sorted(stored)} but the result says {sorted(completed)}")


def check_reported(run: Run, kind: str, fault: Fault | None) -> None:
    """What the run reports is what went through the proxies."""
    assert run.main is not None and run.stores is not None
    if kind == "find":
        if fault is None or fault.kind == "cut":
            got_through = sum(pending_matches(c.down) for c in run.main.connections)
            assert run.matches == got_through, (run.matches, got_through, run.error)
        return
    if run.result is None:
        # Refused before the retrieval began (association cut or aborted): nothing stored.
        assert run.error is not None
        return
    legs = run.main.connections if kind == "get" else run.stores.connections
    acked = set().union(*(acknowledged(c.up if kind == "get" else c.down) for c in legs))
    whole = set().union(*(arrived_whole(c.down if kind == "get" else c.up) for c in legs))
    completed = set(run.result.completed)
    assert acked <= completed, f"acknowledged but not reported: {acked - completed}"
    if fault is None or fault.kind != "corrupt":
        assert completed <= whole, f"reported but not arrived whole: {completed - whole}"


# --- the matrix ---------------------------------------------------------------------------------


PEERS = ["dcmqrscp", "orthanc"] if FULL else ["dcmqrscp"]


@pytest.mark.parametrize("kind", ["find", "move", "get"])
@pytest.mark.parametrize("which", PEERS)
async def test_fault_matrix(
    which: str, kind: str, request: pytest.FixtureRequest, corpus: Corpus, tmp_path: Path,
) -> None:
    series = corpus.studies[0].series[0]
    async with faulty_proxy(LOOPBACK, 1) as stores:
        destination = (AE, LOOPBACK, stores.port)
        qr: DcmQrScp | Orthanc
        if which == "dcmqrscp":
            qr = request.getfixturevalue("dcmqrscp_factory")(move_destinations=[destination])
        else:
            qr = request.getfixturevalue("orthanc_factory")(modalities={AE: destination})
        harness = Harness(qr, stores, operations(series)[kind], tmp_path, corpus)
        await harness.run()  # warm up: lazily opened files and caches before counting fds
        clean = await harness.run()
        assert clean.error is None, clean.error
        if kind == "find":
            assert clean.matches == len(corpus.studies)
        else:
            assert clean.result is not None
            assert sorted(clean.result.completed) == sorted(
                i.sop_instance_uid for i in series.instances)
        check_reported(clean, kind, None)
        assert clean.main is not None and clean.stores is not None
        recorded = clean.main.connections[0]

        plan: list[tuple[list[Fault], list[Fault]]] = []
        cuts = [Fault("cut", "down", p) for p in cut_points(recorded.down)] + [
            Fault("cut", "up", p) for p in cut_points(recorded.up)]
        if kind == "move" and clean.stores.connections:
            leg = clean.stores.connections[0]
            cuts += [Fault("cut", "up", p) for p in thin(cut_points(leg.up), 8)]
            cuts += [Fault("cut", "down", p) for p in thin(cut_points(leg.down), 4)]
            main_cuts = [c for c in cuts if c not in cuts[-12:]]
            store_cuts = cuts[-12:]
            plan += [([c], []) for c in thin_faults(main_cuts, CUTS_PER_OPERATION - 12)]
            plan += [([], [c]) for c in store_cuts]
        else:
            plan += [([c], []) for c in thin_faults(cuts, CUTS_PER_OPERATION)]
        corruptions = [Fault("corrupt", "down", p) for p in header_points(recorded.down)]
        plan += [([c], []) for c in thin_faults(corruptions, CORRUPTIONS_PER_OPERATION)]
        middle = len(recorded.down) // 2
        plan.append(([Fault("delay", "down", middle, seconds=1.0)], []))

        outcomes: dict[str, int] = {}
        for main_faults, store_faults in plan:
            fault = (main_faults or store_faults)[0]
            run = await harness.run(main_faults, store_faults)
            check_reported(run, kind, fault)
            if fault.kind == "delay":
                assert run.error is None, f"{fault}: {run.error}"
            outcome = type(run.error).__name__ if run.error is not None else "ok"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        split = await harness.run(split=True)
        assert split.error is None, f"1-byte writes: {split.error}"
        check_reported(split, kind, None)
        if kind == "find":
            assert split.matches == clean.matches
        else:
            assert split.result is not None and clean.result is not None
            assert sorted(split.result.completed) == sorted(clean.result.completed)

    cut_count = sum(1 for m, s in plan if (m or s)[0].kind == "cut")
    print(f"\n{which} {kind}: {cut_count} cut points, {len(plan) - cut_count} other faults, "
          f"1-byte split: ok; outcomes {outcomes}")


def thin_faults(faults: list[Fault], keep: int) -> list[Fault]:
    return [faults[i] for i in thin(range(len(faults)), keep)] if faults else []
