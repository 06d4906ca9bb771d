"""One client measurement in a process of its own: ``python -m benchmarks.worker '<json>'``.

The JSON names the client library ("aiodicom" or "pynetdicom"), the task and its parameters.
The worker does the work once, timing only the work (imports, event loop and server start-up are
excluded), and prints one JSON line: wall and CPU seconds of the work, the process's peak RSS,
how many items and bytes it handled, and whether it got everything it expected.

Server tasks (``serve_store``, ``serve_echo``) print ``READY`` once listening, serve until a line
(or EOF) arrives on stdin, then print the JSON line (CPU counted from ``READY``).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def usage() -> tuple[float, float, int]:
    """(user CPU s, system CPU s, minor page faults) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_rss_kb() -> int:
    # VmHWM, not ru_maxrss: Linux carries the parent's peak RSS over fork + exec into
    # ru_maxrss, so a worker started by a big runner would report the runner's size.
    return _status_kb("VmHWM:")


def current_rss_kb() -> int:
    return _status_kb("VmRSS:")


class Meter:
    """Times the work; with ``AIODICOM_BENCH_PROFILE`` set, also profiles exactly that work
    (cProfile, all threads' Python code that runs on the main thread's event loop)."""

    def __init__(self) -> None:
        self.profiler: Any = None
        if os.environ.get("AIODICOM_BENCH_PROFILE"):
            import cProfile

            self.profiler = cProfile.Profile()
        self.rss_before_kb = current_rss_kb()
        self.usage0 = usage()
        self.cpu0 = cpu_seconds()
        self.t0 = time.perf_counter()
        if self.profiler is not None:
            self.profiler.enable()

    def result(self, **extra: Any) -> dict[str, Any]:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(os.environ["AIODICOM_BENCH_PROFILE"])
        wall = time.perf_counter() - self.t0
        cpu = cpu_seconds() - self.cpu0
        user, system, faults = (a - b for a, b in zip(usage(), self.usage0, strict=True))
        out = {
            "wall": wall,
            "cpu": cpu,
            "user_cpu": user,
            "sys_cpu": system,
            "minor_faults": faults,
            "peak_rss_kb": peak_rss_kb(),
            "rss_before_kb": self.rss_before_kb,
        }
        out.update(extra)
        return out


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def fresh_dir(path: str | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if p.exists():
        shutil.rmtree(p)
    p.mkdir(parents=True)
    return p


def count_files(path: Path | None) -> int:
    if path is None:
        return 0
    return sum(len(files) for _, _, files in os.walk(path))


def wait_for_stdin_line() -> None:
    sys.stdin.readline()


# --------------------------------------------------------------------------------------------
# aiodicom
# --------------------------------------------------------------------------------------------


def _aio_series_query(p: dict[str, Any]) -> Any:
    from aiodicom.query import Query

    return Query.series(StudyInstanceUID=p["study_uid"], SeriesInstanceUID=p["series_uid"])


def _aio_image_query(p: dict[str, Any]) -> Any:
    from aiodicom.query import Query

    return Query.image(StudyInstanceUID=p["study_uid"], SeriesInstanceUID=p["series_uid"])


def _aio_sink(p: dict[str, Any]) -> Any:
    from aiodicom.sinks import DirectorySink, MemorySink

    out = fresh_dir(p.get("out_dir"))
    if out is None:
        return MemorySink()
    if p.get("sink") == "whole":
        from benchmarks.experiments import WholeThenWritten

        return WholeThenWritten(out)
    if p.get("sink") == "arriving":
        from benchmarks.experiments import written_as_it_arrives

        return written_as_it_arrives(out)
    return DirectorySink(out)


async def aio_echo_loop(p: dict[str, Any]) -> dict[str, Any]:
    import aiodicom

    n = p["n"]
    async with aiodicom.Client(p.get("ae_title", "AIOBENCH")) as client:
        peer = client.peer(p["host"], p["port"], p["called"])
        await peer.echo()  # first connection and imports out of the timing
        m = Meter()
        for _ in range(n):
            await peer.echo()
        return m.result(count=n, ok=True)


async def aio_find(p: dict[str, Any]) -> dict[str, Any]:
    import aiodicom

    async with aiodicom.Client(p.get("ae_title", "AIOBENCH")) as client:
        peer = client.peer(p["host"], p["port"], p["called"])
        query = _aio_image_query(p)
        m = Meter()
        count = 0
        async for _match in peer.find(query):
            count += 1
        return m.result(count=count, ok=count == p["expect"])


async def aio_retrieve(p: dict[str, Any]) -> dict[str, Any]:
    import aiodicom

    kind = p["kind"]
    port = p.get("listen_port") if kind == "move" else None
    async with aiodicom.Client(p["ae_title"], listen_port=port) as client:
        peer = client.peer(p["host"], p["port"], p["called"])
        query = _aio_series_query(p)
        sink = _aio_sink(p)
        m = Meter()
        if kind == "move":
            result = await peer.move(query, sink=sink)
        else:
            result = await peer.get(query, sink=sink)
        out = m.result(
            count=len(result.completed), bytes=result.bytes_received,
            ok=len(result.completed) == p["expect"] and result.ok,
        )
        out["files"] = count_files(Path(p["out_dir"])) if p.get("out_dir") else None
        return out


async def aio_serve_store(p: dict[str, Any]) -> dict[str, Any]:
    import anyio
    import anyio.to_thread

    import aiodicom
    from aiodicom.fileio import split_part10

    sink = _aio_sink(p)
    out = sink.directory

    # A plain storage SCP: every delivery into the directory, written as it arrives.
    async with aiodicom.Client(
        p["ae_title"], listen_port=p["listen_port"],
        unexpected_deliveries=sink if hasattr(sink, "fsync") else sink.handle,
    ):
        m = Meter()
        print("READY", flush=True)
        await anyio.to_thread.run_sync(wait_for_stdin_line)
        result = m.result(count=len(sink.paths), files=count_files(out), ok=True)
    # Counted after the measurement: the data set bytes of the files written.
    result["bytes"] = sum(
        len(split_part10(path.read_bytes())[1]) for path in sink.paths.values()
    )
    return result


async def aio_serve_store_floor(p: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.floor import serve_store as task

    return await task(p)


async def aio_store_cpu(p: dict[str, Any]) -> dict[str, Any]:
    """What receiving a C-STORE costs our storage SCP itself, without a second process: our
    acceptor and a raw client on this one event loop, the client sending the C-STORE-RQs of
    ``p["files"]`` encoded beforehand and reading each response (a few socket calls of its
    own per C-STORE). No process wakes another, so what remains is the SCP's work, measured
    far more steadily than across processes taking turns."""
    import asyncio
    import struct

    import aiodicom
    from aiodicom.dimse import C_STORE_RQ, DimseMessage, encode_message
    from aiodicom.instance import read_part10
    from aiodicom.pdu import encode_pdu
    from aiodicom.pdu_types import (
        AReleaseRQ,
        AssociateRQ,
        PresentationContextRQ,
        UserInformation,
    )
    from aiodicom.sinks import DirectorySink

    max_pdu = p["max_pdu"]
    instances = [read_part10(path) for path in p["files"]]
    first = instances[0]
    requests = [
        b"".join(encode_message(DimseMessage(1, {
            "CommandField": C_STORE_RQ, "MessageID": number % 0xFFFF + 1, "Priority": 0,
            "AffectedSOPClassUID": instance.sop_class_uid,
            "AffectedSOPInstanceUID": instance.sop_instance_uid,
        }, instance.data), max_pdu))
        for number, instance in enumerate(instances)
    ]
    associate = encode_pdu(AssociateRQ(
        "STORESCP", "RAWSCU",
        (PresentationContextRQ(1, first.sop_class_uid, (first.transfer_syntax_uid,)),),
        UserInformation(max_pdu_length=max_pdu, implementation_class_uid="1.2.3.4"),
    ))
    sink = DirectorySink(p["out_dir"])
    async with aiodicom.Client(
        "STORESCP", listen_port=0, unexpected_deliveries=sink, max_pdu_length=max_pdu
    ) as server:
        assert server.listen_port is not None
        loop = asyncio.get_running_loop()
        raw = socket.create_connection(("127.0.0.1", server.listen_port))
        raw.setblocking(False)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray(1 << 16)

        async def reply() -> int:
            got, size = 0, 6
            while got < size:
                count = await loop.sock_recv_into(raw, memoryview(buffer)[got:])
                if not count:
                    raise ConnectionError("the SCP closed the connection")
                got += count
                if got >= 6:
                    size = 6 + struct.unpack_from(">I", buffer, 2)[0]
            return buffer[0]

        await loop.sock_sendall(raw, associate)
        if await reply() != 0x02:
            raise ConnectionError("association not accepted")
        m = Meter()
        for request in requests:
            await loop.sock_sendall(raw, request)
            await reply()
        result = m.result(count=len(sink.paths), ok=len(sink.paths) == len(instances))
        await loop.sock_sendall(raw, encode_pdu(AReleaseRQ()))
        await reply()
        raw.close()
    return result


async def aio_serve_echo(p: dict[str, Any]) -> dict[str, Any]:
    import anyio
    import anyio.to_thread

    import aiodicom

    # The concurrency cases open up to 500 associations at once from one address and one AE
    # title: far past the default Limits, which a server facing the world keeps.
    many = 1000
    limits = aiodicom.Limits(
        max_associations=many, max_associations_per_address=many, max_associations_per_ae=many
    )
    async with aiodicom.Client(p["ae_title"], listen_port=p["listen_port"], limits=limits):
        m = Meter()
        print("READY", flush=True)
        await anyio.to_thread.run_sync(wait_for_stdin_line)
        return m.result(ok=True)


def _concurrency_proposals(kind: str) -> list[Any]:
    from aiodicom import ContextProposal
    from aiodicom.query import QueryModel
    from aiodicom.uids import UNCOMPRESSED_TRANSFER_SYNTAXES, VERIFICATION

    if kind == "echo":
        return [ContextProposal(VERIFICATION, UNCOMPRESSED_TRANSFER_SYNTAXES)]
    find = QueryModel.STUDY_ROOT.find_sop_class
    assert find is not None
    return [ContextProposal(find, UNCOMPRESSED_TRANSFER_SYNTAXES)]


async def aio_concurrency(p: dict[str, Any]) -> dict[str, Any]:
    """``n`` associations open at once, each doing ``ops`` operations once all are up."""
    import anyio

    import aiodicom
    from aiodicom.query import Query

    n, ops, kind = p["n"], p["ops"], p["op"]
    proposals = _concurrency_proposals(kind)
    query = Query.series(StudyInstanceUID=p["study_uid"]) if kind == "find" else None
    established = 0
    all_up = anyio.Event()
    done_ops = 0
    matches = 0
    marks: dict[str, float] = {}
    async with aiodicom.Client(p.get("ae_title", "AIOBENCH")) as client:
        peer = client.peer(p["host"], p["port"], p["called"])

        async def one() -> None:
            nonlocal established, done_ops, matches
            async with peer.associate(proposals) as session:
                established += 1
                if established == n:
                    marks["up"] = time.perf_counter()
                    marks["up_cpu"] = cpu_seconds()
                    all_up.set()
                await all_up.wait()
                for _ in range(ops):
                    if query is None:
                        await session.echo()
                    else:
                        async for _m in session.find(query):
                            matches += 1
                    done_ops += 1
                marks["last_op"] = time.perf_counter()
                # stay established until everyone's operations are done


        m = Meter()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        out = m.result(count=done_ops, ok=done_ops == n * ops, matches=matches)
        out["connect_wall"] = marks["up"] - m.t0
        out["ops_wall"] = marks["last_op"] - marks["up"]
        out["ops_cpu"] = cpu_seconds() - marks["up_cpu"]
        return out


async def aio_idle(p: dict[str, Any]) -> dict[str, Any]:
    """Open ``n`` associations, then measure the CPU used while they sit idle."""
    import anyio

    import aiodicom

    n, seconds = p["n"], p["seconds"]
    proposals = _concurrency_proposals("echo")
    established = 0
    all_up = anyio.Event()
    finish = anyio.Event()
    async with aiodicom.Client(p.get("ae_title", "AIOBENCH")) as client:
        peer = client.peer(p["host"], p["port"], p["called"])

        async def one() -> None:
            nonlocal established
            async with peer.associate(proposals) as session:
                await session.echo()
                established += 1
                if established == n:
                    all_up.set()
                await finish.wait()

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
            await all_up.wait()
            m = Meter()
            await anyio.sleep(seconds)  # the benchmark waits; the associations just sit there
            out = m.result(count=n, ok=True)
            finish.set()
        return out


async def aio_lateness(p: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.eventloop import aio_lateness as task

    return await task(p)


AIO_TASKS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "echo_loop": aio_echo_loop,
    "find": aio_find,
    "retrieve": aio_retrieve,
    "serve_store": aio_serve_store,
    "serve_store_floor": aio_serve_store_floor,
    "store_cpu": aio_store_cpu,
    "serve_echo": aio_serve_echo,
    "concurrency": aio_concurrency,
    "idle": aio_idle,
    "lateness": aio_lateness,
}


def run_aiodicom(task: str, p: dict[str, Any]) -> dict[str, Any]:
    import anyio

    backend_options = {"use_uvloop": True} if p.get("uvloop") else {}
    result: dict[str, Any] = anyio.run(AIO_TASKS[task], p, backend_options=backend_options)
    return result


# --------------------------------------------------------------------------------------------
# pynetdicom
# --------------------------------------------------------------------------------------------


def _pyn_nodelay(event: Any) -> None:
    # pynetdicom never sets TCP_NODELAY; set it so that Nagle is not what we measure.
    with contextlib.suppress(AttributeError, OSError):
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _pyn_ae(p: dict[str, Any], ae_title: str) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    if p.get("max_pdu") is not None:
        ae.maximum_pdu_size = p["max_pdu"]
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ae.network_timeout = 120
    return ae


def _pyn_series_identifier(p: dict[str, Any], level: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = p["study_uid"]
    ds.SeriesInstanceUID = p["series_uid"]
    if level == "IMAGE":
        ds.SOPInstanceUID = ""
        ds.InstanceNumber = ""
    return ds


class _PynStore:
    """C-STORE handler keeping the encoded data sets in memory or writing them as files."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.instances: dict[str, bytes] = {}
        self.count = 0
        self.bytes = 0
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if self.out_dir is None:
            data = event.encoded_dataset(include_meta=False)
            size = len(data)
            with self.lock:
                self.instances[uid] = data
        else:
            data = event.encoded_dataset()  # the pynetdicom documented fast path to a file
            size = len(data)
            with open(self.out_dir / f"{uid}.dcm", "wb") as fp:
                fp.write(data)
        with self.lock:
            self.count += 1
            self.bytes += size
        return 0x0000


def pyn_echo_loop(p: dict[str, Any]) -> dict[str, Any]:
    from pynetdicom import evt
    from pynetdicom.sop_class import Verification

    ae = _pyn_ae(p, "PYNBENCH")
    ae.add_requested_context(Verification)
    handlers = [(evt.EVT_CONN_OPEN, _pyn_nodelay)]

    def once() -> None:
        assoc = ae.associate(p["host"], p["port"], ae_title=p["called"], evt_handlers=handlers)
        if not assoc.is_established:
            raise RuntimeError("association failed")
        status = assoc.send_c_echo()
        assoc.release()
        if not status or status.Status != 0:
            raise RuntimeError("echo failed")

    once()
    m = Meter()
    for _ in range(p["n"]):
        once()
    return m.result(count=p["n"], ok=True)


def pyn_find(p: dict[str, Any]) -> dict[str, Any]:
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    ae = _pyn_ae(p, "PYNBENCH")
    ae.add_requested_context(FIND, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
    ident = _pyn_series_identifier(p, "IMAGE")
    m = Meter()
    assoc = ae.associate(
        p["host"], p["port"], ae_title=p["called"], evt_handlers=[(evt.EVT_CONN_OPEN, _pyn_nodelay)]
    )
    count = 0
    final = None
    for status, identifier in assoc.send_c_find(ident, FIND):
        if status and status.Status in (0xFF00, 0xFF01):
            if identifier is not None:
                count += 1
        else:
            final = status
    assoc.release()
    ok = count == p["expect"] and final is not None and final.Status == 0
    return m.result(count=count, ok=ok)


def pyn_retrieve(p: dict[str, Any]) -> dict[str, Any]:
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelGet as GET,
    )
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelMove as MOVE,
    )

    kind = p["kind"]
    ae_title = p["ae_title"]
    ae = _pyn_ae(p, ae_title)
    out = fresh_dir(p.get("out_dir"))
    store = _PynStore(out)
    handlers = [(evt.EVT_CONN_OPEN, _pyn_nodelay), (evt.EVT_C_STORE, store)]
    ident = _pyn_series_identifier(p, "SERIES")
    server = None
    if kind == "get":
        ae.add_requested_context(GET, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
        ae.add_requested_context(CT_IMAGE_STORAGE, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
        ext_neg = [build_role(CT_IMAGE_STORAGE, scp_role=True)]
    else:
        ae.add_requested_context(MOVE, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
        ae.add_supported_context(CT_IMAGE_STORAGE, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
        ext_neg = []
        server = ae.start_server(
            ("127.0.0.1", p["listen_port"]), block=False, evt_handlers=handlers
        )
    m = Meter()
    assoc = ae.associate(
        p["host"], p["port"], ae_title=p["called"], ext_neg=ext_neg,
        evt_handlers=handlers if kind == "get" else [(evt.EVT_CONN_OPEN, _pyn_nodelay)],
    )
    if not assoc.is_established:
        raise RuntimeError("association failed")
    final = None
    responses = (
        assoc.send_c_get(ident, GET) if kind == "get"
        else assoc.send_c_move(ident, ae_title, MOVE)
    )
    for status, _identifier in responses:
        if status and status.Status not in (0xFF00, 0xFF01):
            final = status
    assoc.release()
    result = m.result(
        count=store.count, bytes=store.bytes,
        ok=store.count == p["expect"] and final is not None and final.Status == 0,
    )
    if server is not None:
        server.shutdown()
    result["files"] = count_files(out) if out is not None else None
    return result


def pyn_serve_store(p: dict[str, Any]) -> dict[str, Any]:
    from pynetdicom import AllStoragePresentationContexts, evt

    ae = _pyn_ae(p, p["ae_title"])
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
    out = fresh_dir(p["out_dir"])
    store = _PynStore(out)
    server = ae.start_server(
        ("127.0.0.1", p["listen_port"]), block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, _pyn_nodelay), (evt.EVT_C_STORE, store)],
    )
    m = Meter()
    print("READY", flush=True)
    wait_for_stdin_line()
    result = m.result(count=store.count, bytes=store.bytes, files=count_files(out), ok=True)
    server.shutdown()
    return result


def pyn_concurrency(p: dict[str, Any]) -> dict[str, Any]:
    from pynetdicom import evt
    from pynetdicom.sop_class import Verification

    n, ops = p["n"], p["ops"]
    handlers = [] if p.get("no_nodelay") else [(evt.EVT_CONN_OPEN, _pyn_nodelay)]

    def new_ae() -> Any:
        ae = _pyn_ae(p, "PYNBENCH")
        # A lost response would otherwise hang the run for the default 120 s.
        ae.dimse_timeout = p.get("dimse_timeout", 10)
        ae.add_requested_context(Verification)
        return ae

    # One AE per thread: associations of one AE used from several threads lose responses
    # (pynetdicom issues #842/#850; seen here against DCMTK and pynetdicom SCPs alike).
    shared = None if p.get("ae_per_thread", True) else new_ae()
    if shared is not None:
        shared.maximum_associations = max(n, 10)
    barrier = threading.Barrier(n + 1, timeout=300)
    finished = threading.Barrier(n + 1, timeout=300)
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def one() -> None:
        ae = shared or new_ae()
        try:
            assoc = ae.associate(p["host"], p["port"], ae_title=p["called"], evt_handlers=handlers)
        except Exception as exc:
            errors.append(f"associate raised {exc!r}")
            barrier.abort()
            return
        try:
            barrier.wait()
            if assoc.is_established:
                for _ in range(ops):
                    status = assoc.send_c_echo()
                    if not status or status.get("Status") != 0:
                        errors.append("no C-ECHO response within the DIMSE timeout")
                        break
                    with lock:
                        done[0] += 1
            else:
                errors.append("not established")
            finished.wait()
        finally:
            if assoc.is_established:
                assoc.release()

    m = Meter()
    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    up, up_cpu = time.perf_counter(), cpu_seconds()
    finished.wait()
    last = time.perf_counter()
    for t in threads:
        t.join()
    out = m.result(count=done[0], ok=done[0] == n * ops and not errors)
    if errors:
        out["error"] = f"pynetdicom: {len(errors)} association(s) failed: {errors[0]}"
    out["connect_wall"] = up - m.t0
    out["ops_wall"] = last - up
    out["ops_cpu"] = cpu_seconds() - up_cpu
    return out


def pyn_idle(p: dict[str, Any]) -> dict[str, Any]:
    from pynetdicom import evt
    from pynetdicom.sop_class import Verification

    n = p["n"]
    ae = _pyn_ae(p, "PYNBENCH")
    ae.maximum_associations = max(n, 10)
    ae.add_requested_context(Verification)
    handlers = [(evt.EVT_CONN_OPEN, _pyn_nodelay)]
    assocs = []
    for _ in range(n):
        assoc = ae.associate(p["host"], p["port"], ae_title=p["called"], evt_handlers=handlers)
        assoc.send_c_echo()
        assocs.append(assoc)
    m = Meter()
    time.sleep(p["seconds"])
    out = m.result(count=sum(a.is_established for a in assocs), ok=True)
    for assoc in assocs:
        assoc.release()
    return out


PYN_TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "echo_loop": pyn_echo_loop,
    "find": pyn_find,
    "retrieve": pyn_retrieve,
    "serve_store": pyn_serve_store,
    "concurrency": pyn_concurrency,
    "idle": pyn_idle,
}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    library, task, params = spec["library"], spec["task"], spec["params"]
    try:
        if library == "aiodicom":
            result = run_aiodicom(task, params)
        elif library == "pynetdicom":
            result = PYN_TASKS[task](params)
        else:
            raise ValueError(f"unknown library {library!r}")
    except Exception as exc:  # reported, not raised: the runner records the failed sample
        import traceback

        traceback.print_exc()
        emit({"ok": False, "error": f"{type(exc).__name__}: {exc}", "peak_rss_kb": peak_rss_kb()})
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
