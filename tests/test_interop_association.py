"""Acceptance tests of the association layer against real peers.

DCMTK (storescp, dcmqrscp, echoscu, storescu) and pynetdicom talk to aiodicom's requestor and
acceptor: establishment, rejection, presentation context negotiation, fragmentation with a small
maximum PDU length, release and abort in both directions, the DIMSE timeout, and TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from peers import in_thread, require_executable, require_module
from peers.corpus import Corpus, InstanceInfo, compressed_copy
from peers.dcmtk import ECHOSCU, STORESCU, DcmQrScp, StoreScp, echoscu, storescu
from peers.pynetdicom_scp import PynetdicomScp
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLosslessSV1, RLELossless

import aiodicom
from aiodicom import ContextProposal, transport
from aiodicom.instance import Instance
from aiodicom.pdu import ABSTRACT_SYNTAX_NOT_SUPPORTED, ACCEPTANCE, TRANSFER_SYNTAX_NOT_SUPPORTED
from aiodicom.query import Query
from aiodicom.sinks import MemorySink
from aiodicom.uids import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION,
)

pytestmark = pytest.mark.interop

LOOPBACK = "127.0.0.1"
BOGUS_SOP_CLASS = "1.2.3.4.5.6.7.8.9.424242"  # a well-formed UID no peer knows
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
SMALL_PDU = 4096


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"{proc.args!r} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )


def _data_set_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM", path
    # (0002,0000) File Meta Information Group Length (explicit VR UL) comes first.
    assert raw[132:136] == b"\x02\x00\x00\x00", f"{path}: no File Meta group length"
    return raw[144 + int.from_bytes(raw[140:144], "little"):]


# ---------------------------------------------------------------------------------------------
# A TCP relay on loopback that records the PDU headers passing through it
# ---------------------------------------------------------------------------------------------

TO_ACCEPTOR, TO_REQUESTOR = "requestor->acceptor", "acceptor->requestor"
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 4, 5, 6, 7


@dataclass(frozen=True)
class SeenPdu:
    direction: str
    pdu_type: int
    length: int  # the PDU length field: what a Maximum Length Received limits for P-DATA-TF
    head: bytes  # the first bytes of the variable field (A-ABORT source and reason are there)


class PduTap:
    """Relays one target's connections and records every PDU header in both directions.

    The wire is the only place where fragmentation, release and abort can be seen without
    trusting either implementation's own account of them.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.pdus: list[SeenPdu] = []
        self.port = 0
        self._tasks: anyio.abc.TaskGroup | None = None
        self._relays = 0
        self._idle: anyio.Event | None = None

    def seen(self, direction: str, pdu_type: int | None = None) -> list[SeenPdu]:
        return [p for p in self.pdus
                if p.direction == direction and (pdu_type is None or p.pdu_type == pdu_type)]

    async def __aenter__(self) -> PduTap:
        listener = await anyio.create_tcp_listener(local_host=LOOPBACK)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(listener.serve, self._relay)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tasks is not None
        # Let the relays see the last PDUs and the closes through before stopping them: the
        # client may close right after its last send, before the relay task has run.
        with anyio.move_on_after(5):
            while self._relays:
                self._idle = anyio.Event()
                await self._idle.wait()
        self._tasks.cancel_scope.cancel()
        await self._tasks.__aexit__(None, None, None)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        self._relays += 1
        try:
            server = await anyio.connect_tcp(*self.target)
            for stream in (client, server):
                stream.extra(anyio.abc.SocketAttribute.raw_socket).setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with client, server, anyio.create_task_group() as tasks:
                tasks.start_soon(self._pump, client, server, TO_ACCEPTOR)
                tasks.start_soon(self._pump, server, client, TO_REQUESTOR)
        finally:
            self._relays -= 1
            if self._idle is not None:
                self._idle.set()

    async def _pump(
        self, source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, direction: str
    ) -> None:
        header = bytearray()
        head = bytearray()
        remaining = -1  # bytes of the current PDU body still to come; -1: reading a header
        try:
            async for chunk in source:
                pos = 0
                while pos < len(chunk):
                    if remaining < 0:
                        take = min(6 - len(header), len(chunk) - pos)
                        header += chunk[pos:pos + take]
                        pos += take
                        if len(header) == 6:
                            remaining = int.from_bytes(header[2:6], "big")
                            head.clear()
                    else:
                        take = min(remaining, len(chunk) - pos)
                        head += chunk[pos:pos + min(take, 16 - len(head))]
                        pos += take
                        remaining -= take
                    if remaining == 0:
                        length = int.from_bytes(header[2:6], "big")
                        self.pdus.append(SeenPdu(direction, header[0], length, bytes(head)))
                        header.clear()
                        remaining = -1
                # Forwarded only once recorded: whoever gets a PDU can rely on it being listed.
                await sink.send(chunk)
            await sink.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass


# ---------------------------------------------------------------------------------------------
# pynetdicom peers of our own: C-ECHO handlers that abort or stall; releases and aborts seen
# ---------------------------------------------------------------------------------------------


class ScriptedEchoScp(PynetdicomScp):
    """Verification SCP whose C-ECHO handler is given; records A-ABORTs it receives."""

    def __init__(self, on_echo: Callable[[Any], int], *, ae_title: str = "SCRIPTED") -> None:
        super().__init__(ae_title=ae_title)
        self.on_echo = on_echo
        self.aborted = threading.Event()
        self.released = threading.Event()

    def _configure(self, ae: Any) -> list[tuple[Any, Callable[..., Any]]]:
        from pynetdicom import evt

        ae.add_supported_context(VERIFICATION, list(UNCOMPRESSED_TRANSFER_SYNTAXES))
        return [
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_ABORTED, lambda event: self.aborted.set()),
            (evt.EVT_RELEASED, lambda event: self.released.set()),
        ]


@pytest.fixture
def scripted_echo_scp() -> Iterator[Callable[..., ScriptedEchoScp]]:
    require_module("pynetdicom")
    started: list[ScriptedEchoScp] = []

    def make(on_echo: Callable[[Any], int], **kwargs: Any) -> ScriptedEchoScp:
        scp = ScriptedEchoScp(on_echo, **kwargs)
        started.append(scp)
        scp.start()
        return scp

    try:
        yield make
    finally:
        for scp in started:
            scp.stop()


async def _wait_for(flag: threading.Event | Callable[[], object], seconds: float = 10.0) -> bool:
    """Poll a flag a peer thread sets, or a condition (tests may poll; the library never does)."""
    done = flag.is_set if isinstance(flag, threading.Event) else flag
    with anyio.move_on_after(seconds):
        while not done():
            await anyio.sleep(0.01)
    return bool(done())


# ---------------------------------------------------------------------------------------------
# Establishment and release
# ---------------------------------------------------------------------------------------------


def _ended_by_release(tap: PduTap, releasing: str) -> None:
    """The association seen on the wire ended by A-RELEASE started from ``releasing``."""
    answering = TO_REQUESTOR if releasing == TO_ACCEPTOR else TO_ACCEPTOR
    assert [p.pdu_type for p in tap.seen(releasing)][-1] == A_RELEASE_RQ
    assert [p.pdu_type for p in tap.seen(answering)][-1] == A_RELEASE_RP
    assert not [p for p in tap.pdus if p.pdu_type == A_ABORT]


async def test_echo_against_dcmtk_storescp(storescp: StoreScp) -> None:
    async with PduTap(storescp.host, storescp.port) as tap, aiodicom.Client("AIOSCU") as client:
        await client.peer(LOOPBACK, tap.port, storescp.ae_title).echo()
    _ended_by_release(tap, TO_ACCEPTOR)


async def test_echo_against_pynetdicom(pynetdicom_echo_scp: Any) -> None:
    before = pynetdicom_echo_scp.echoes
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer(LOOPBACK, pynetdicom_echo_scp.port, pynetdicom_echo_scp.ae_title)
        await peer.echo()
    assert pynetdicom_echo_scp.echoes == before + 1


async def test_requestor_release_is_seen_by_pynetdicom(
    scripted_echo_scp: Callable[..., ScriptedEchoScp],
) -> None:
    scp = scripted_echo_scp(lambda event: 0x0000)
    async with aiodicom.Client("AIOSCU") as client:
        async with client.peer(LOOPBACK, scp.port, scp.ae_title).associate() as session:
            await session.echo()
            assert session.usable
        assert session.association.closed.is_set()
        assert not session.usable
    assert await _wait_for(scp.released)
    assert not scp.aborted.is_set()


async def test_dcmtk_echoscu_against_our_acceptor() -> None:
    """echoscu associates, echoes and releases: the peer-initiated A-RELEASE direction."""
    require_executable(ECHOSCU)
    async with aiodicom.Client("AIOSCP", listen_port=0) as server:
        assert server.listen_port
        async with PduTap(LOOPBACK, server.listen_port) as tap:
            proc = await in_thread(echoscu, LOOPBACK, tap.port, "AIOSCP", args=["-v"])
    _ok(proc)
    assert "Received Echo Response (Success)" in proc.stdout + proc.stderr
    _ended_by_release(tap, TO_ACCEPTOR)


async def test_dcmtk_echoscu_aborting_our_acceptor() -> None:
    """echoscu --abort: our acceptor takes the A-ABORT and goes on serving."""
    require_executable(ECHOSCU)
    async with aiodicom.Client("AIOSCP", listen_port=0) as server:
        assert server.listen_port
        async with PduTap(LOOPBACK, server.listen_port) as tap:
            aborted = await in_thread(echoscu, LOOPBACK, tap.port, "AIOSCP", args=["--abort"])
            _ok(aborted)
            assert await _wait_for(lambda: tap.seen(TO_ACCEPTOR, A_ABORT))
            again = await in_thread(echoscu, LOOPBACK, tap.port, "AIOSCP")
    _ok(again)
    aborts = tap.seen(TO_ACCEPTOR, A_ABORT)
    assert len(aborts) == 1
    assert tap.seen(TO_REQUESTOR, A_ABORT) == []
    assert len(tap.seen(TO_REQUESTOR, A_RELEASE_RP)) == 1  # for the second echoscu only


async def test_our_acceptor_rejection_seen_by_echoscu() -> None:
    require_executable(ECHOSCU)
    async with aiodicom.Client("AIOSCP", listen_port=0, require_called_ae_title=True) as server:
        assert server.listen_port
        proc = await in_thread(echoscu, LOOPBACK, server.listen_port, "SOMEONE")
    assert proc.returncode != 0
    assert "Called AE Title Not Recognized" in proc.stdout + proc.stderr


async def test_dcmqrscp_rejects_unknown_called_ae_title(dcmqrscp: DcmQrScp) -> None:
    async with aiodicom.Client("AIOSCU") as client:
        with pytest.raises(aiodicom.AssociationRejected) as info:
            await client.peer(dcmqrscp.host, dcmqrscp.port, "NOSUCHAE").echo()
    assert "called AE title not recognized" in str(info.value)
    # rejected permanently, by the service user, reason 7
    assert (info.value.result, info.value.source, info.value.reason) == (1, 1, 7)


# ---------------------------------------------------------------------------------------------
# Presentation context negotiation
# ---------------------------------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("which", ["storescp", "dcmqrscp"])
async def test_unsupported_abstract_syntax_rejected_others_accepted(
    which: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(which)
    proposals = [
        ContextProposal(BOGUS_SOP_CLASS, UNCOMPRESSED_TRANSFER_SYNTAXES),
        ContextProposal(VERIFICATION, UNCOMPRESSED_TRANSFER_SYNTAXES),
    ]
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer(server.host, server.port, server.ae_title)
        async with peer.associate(proposals) as session:
            contexts = session.contexts
            assert sorted(contexts) == [1, 3]
            assert contexts[1].abstract_syntax == BOGUS_SOP_CLASS
            assert contexts[1].result == ABSTRACT_SYNTAX_NOT_SUPPORTED
            assert not contexts[1].accepted
            assert contexts[1].transfer_syntax is None
            assert contexts[3].abstract_syntax == VERIFICATION
            assert contexts[3].result == ACCEPTANCE
            assert contexts[3].transfer_syntax in UNCOMPRESSED_TRANSFER_SYNTAXES
            await session.echo()
            with pytest.raises(aiodicom.NoAcceptedContext, match="abstract syntax not supported"):
                session.association.context(BOGUS_SOP_CLASS)


async def test_transfer_syntax_only_rejection_pynetdicom(pynetdicom_echo_scp: Any) -> None:
    """Verification offered in JPEG Baseline only: the SOP class is known, the syntax is not."""
    proposals = [
        ContextProposal(VERIFICATION, (JPEG_BASELINE,)),
        ContextProposal(VERIFICATION, (IMPLICIT_VR_LE,)),
    ]
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer(LOOPBACK, pynetdicom_echo_scp.port, pynetdicom_echo_scp.ae_title)
        async with peer.associate(proposals) as session:
            assert session.contexts[1].result == TRANSFER_SYNTAX_NOT_SUPPORTED
            assert session.contexts[1].transfer_syntax is None
            assert session.contexts[3].result == ACCEPTANCE
            assert session.contexts[3].transfer_syntax == IMPLICIT_VR_LE
            await session.echo()


async def test_transfer_syntax_only_rejection_dcmtk(
    storescp_factory: Callable[..., StoreScp], corpus: Corpus
) -> None:
    """storescp without +xa takes the uncompressed syntaxes only."""
    scp = storescp_factory(accept_all=False)
    ct = corpus.instances[0].sop_class_uid
    proposals = [
        ContextProposal(ct, (JPEG_BASELINE,)),
        ContextProposal(ct, (EXPLICIT_VR_LE,)),
        ContextProposal(VERIFICATION, (IMPLICIT_VR_LE,)),
    ]
    client = aiodicom.Client("AIOSCU")
    async with client.peer(scp.host, scp.port, scp.ae_title).associate(proposals) as session:
        assert session.contexts[1].result == TRANSFER_SYNTAX_NOT_SUPPORTED
        assert session.contexts[3].result == ACCEPTANCE
        assert session.contexts[3].transfer_syntax == EXPLICIT_VR_LE
        assert session.contexts[5].result == ACCEPTANCE
        await session.echo()


# ---------------------------------------------------------------------------------------------
# Fragmentation: a 4096-byte maximum PDU length on one side or the other
# ---------------------------------------------------------------------------------------------


def _p_data(tap: PduTap, direction: str) -> list[SeenPdu]:
    return tap.seen(direction, P_DATA_TF)


async def test_cget_with_small_pdus_is_byte_identical(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    """Both sides announce 4096: dcmqrscp fragments each C-STORE, we reassemble it unchanged."""
    qr = dcmqrscp_factory(max_pdu=SMALL_PDU)
    series = max(corpus.series, key=lambda s: len(s.instances))
    files = {i.sop_instance_uid: i for i in series.instances}
    expected = {uid: _data_set_bytes(info.path) for uid, info in files.items()}
    assert all(len(data) > 2 * SMALL_PDU for data in expected.values())
    query = Query.series(
        StudyInstanceUID=series.study_instance_uid, SeriesInstanceUID=series.series_instance_uid
    )
    sink = MemorySink()
    async with PduTap(qr.host, qr.port) as tap, \
            aiodicom.Client("AIOSCU", max_pdu_length=SMALL_PDU) as client:
        result = await client.peer(LOOPBACK, tap.port, qr.ae_title).get(
            query, sink=sink, sop_classes=[series.sop_class_uid])
    assert result.ok, result
    assert sorted(result.completed) == sorted(files)
    arrived = {inst.sop_instance_uid: inst for inst in sink}
    assert set(arrived) == set(files)
    for uid, inst in arrived.items():
        assert inst.transfer_syntax_uid == files[uid].transfer_syntax_uid
        assert bytes(inst.data) == expected[uid], uid
    # Data sets of more than 8 kB, yet no P-DATA-TF above 4096 bytes: each was fragmented.
    assert max(p.length for p in _p_data(tap, TO_REQUESTOR)) <= SMALL_PDU
    assert max(p.length for p in _p_data(tap, TO_ACCEPTOR)) <= SMALL_PDU


def _uid_list_query(wanted: list[str], *return_keys: str) -> Query:
    # 150 decoy UIDs of 34 characters: an identifier of about 5.3 kB
    decoys = [f"2.25.{n}" for n in range(10**28, 10**28 + 150)]
    return Query.study(StudyInstanceUID=[*decoys, *wanted]).with_keys(
        **dict.fromkeys(return_keys, ""))


async def test_cfind_big_identifier_to_small_pdu_dcmqrscp(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    """A UID-list identifier larger than dcmqrscp's 4096-byte PDU: we fragment, it reassembles."""
    qr = dcmqrscp_factory(max_pdu=SMALL_PDU)
    wanted = [s.study_instance_uid for s in corpus.studies[:3]]
    query = _uid_list_query(wanted, "PatientName")
    async with PduTap(qr.host, qr.port) as tap, \
            aiodicom.Client("AIOSCU", max_pdu_length=SMALL_PDU) as client:
        found = await client.peer(LOOPBACK, tap.port, qr.ae_title).find(query).all()
    assert sorted(str(d.StudyInstanceUID) for d in found) == sorted(wanted)
    outgoing = _p_data(tap, TO_ACCEPTOR)
    assert max(p.length for p in outgoing) <= SMALL_PDU
    assert sum(p.length for p in outgoing) > SMALL_PDU  # so it took several PDUs


def _big_study(n: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = f"Groß^Ünïcode{n}"
    ds.PatientID = f"BIG{n:03d}"
    ds.StudyInstanceUID = f"2.25.{7 * 10**20 + n}"
    ds.StudyDate = "20240115"
    # Many values of a multi-valued key: each response identifier is far above 4096 bytes.
    ds.SOPClassesInStudy = [f"1.2.840.10008.5.1.4.1.1.{k}.{n}" for k in range(300)]
    return ds


async def test_cfind_big_identifiers_both_ways_pynetdicom(
    pynetdicom_find_scp_factory: Callable[..., Any],
) -> None:
    records = [_big_study(n) for n in range(5)]
    scp = pynetdicom_find_scp_factory(records, max_pdu=SMALL_PDU)
    wanted = [str(r.StudyInstanceUID) for r in records[1:4]]
    query = _uid_list_query(wanted, "SOPClassesInStudy", "PatientName")
    async with PduTap(LOOPBACK, scp.port) as tap, \
            aiodicom.Client("AIOSCU", max_pdu_length=SMALL_PDU) as client:
        found = await client.peer(LOOPBACK, tap.port, scp.ae_title).find(query).all()
    # pynetdicom got our fragmented identifier whole ...
    assert len(scp.identifiers) == 1
    assert list(scp.identifiers[0].StudyInstanceUID) == list(
        query.to_dataset().StudyInstanceUID)
    assert scp.requestor_max_pdus == [SMALL_PDU]
    # ... and we reassembled its fragmented responses.
    assert [str(d.StudyInstanceUID) for d in found] == wanted
    for match, record in zip(found, records[1:4], strict=True):
        assert list(match.SOPClassesInStudy) == list(record.SOPClassesInStudy)
        assert str(match.PatientName) == str(record.PatientName)
    for direction in (TO_ACCEPTOR, TO_REQUESTOR):
        pdus = _p_data(tap, direction)
        assert max(p.length for p in pdus) <= SMALL_PDU, direction
        assert sum(p.length for p in pdus) > SMALL_PDU, direction


async def test_storescu_to_our_acceptor_with_small_pdu(corpus: Corpus) -> None:
    """DCMTK storescu fragments for our 4096-byte maximum; what arrives is what it sent."""
    require_executable(STORESCU)
    instances: list[InstanceInfo] = list(corpus.instances[:6])
    assert all(i.path.stat().st_size > 2 * SMALL_PDU for i in instances)
    received: list[Instance] = []

    async def record(instance: Instance) -> int:
        received.append(instance)
        return 0x0000

    async with aiodicom.Client(
        "AIOSCP", listen_port=0, max_pdu_length=SMALL_PDU, unexpected_deliveries=record
    ) as server:
        assert server.listen_port
        async with PduTap(LOOPBACK, server.listen_port) as tap:
            proc = await in_thread(
                storescu, LOOPBACK, tap.port, "AIOSCP", instances, args=["-xe"])
    _ok(proc)
    by_uid = {i.sop_instance_uid: i for i in received}
    assert len(received) == len(by_uid) == len(instances)
    for info in instances:
        got = by_uid[info.sop_instance_uid]
        assert got.sop_class_uid == info.sop_class_uid
        assert got.transfer_syntax_uid == EXPLICIT_VR_LE
        assert got.source_ae_title == "STORESCU"
        assert bytes(got.data) == _data_set_bytes(info.path), info.sop_instance_uid
    # Data sets of more than 8 kB, yet no P-DATA-TF above 4096 bytes: each was fragmented.
    assert max(p.length for p in _p_data(tap, TO_ACCEPTOR)) <= SMALL_PDU
    _ended_by_release(tap, TO_ACCEPTOR)


@pytest.mark.parametrize(
    ("syntax", "storescu_option"), [(JPEGLosslessSV1, "-xs"), (RLELossless, "-xr")]
)
async def test_compressed_storescu_to_our_acceptor_with_small_pdu(
    corpus: Corpus, tmp_path: Path, syntax: str, storescu_option: str
) -> None:
    """Encapsulated pixel data: our acceptor takes the sender's own transfer syntax (no
    conversion by storescu) and the data sets arrive unchanged, with our 4096-byte maximum."""
    require_executable(STORESCU)
    series = compressed_copy(corpus.series[0], tmp_path / "compressed", syntax)
    received: list[Instance] = []

    async def record(instance: Instance) -> int:
        received.append(instance)
        return 0x0000

    async with aiodicom.Client(
        "AIOSCP", listen_port=0, max_pdu_length=SMALL_PDU, unexpected_deliveries=record
    ) as server:
        assert server.listen_port
        proc = await in_thread(
            storescu, LOOPBACK, server.listen_port, "AIOSCP", series.files, args=[storescu_option])
    _ok(proc)
    by_uid = {i.sop_instance_uid: i for i in received}
    assert len(received) == len(by_uid) == len(series.instances)
    for path in series.files:
        # The UID from the file: compressed_copy's RLE path lets pydicom give new UIDs.
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert by_uid[uid].transfer_syntax_uid == syntax
        assert bytes(by_uid[uid].data) == _data_set_bytes(path), uid


async def test_store_to_small_pdu_storescp_is_byte_identical(
    storescp_factory: Callable[..., StoreScp], corpus: Corpus
) -> None:
    """We fragment big C-STORE data sets for storescp's 4096 bytes; it writes them bit for bit."""
    scp = storescp_factory(max_pdu=SMALL_PDU, extra_args=["+B"])
    instances = list(corpus.instances[:4])
    assert all(i.path.stat().st_size > 2 * SMALL_PDU for i in instances)
    async with PduTap(scp.host, scp.port) as tap, aiodicom.Client("AIOSCU") as client:
        result = await client.peer(LOOPBACK, tap.port, scp.ae_title).store(
            [i.path for i in instances])
    assert result.ok and len(result.succeeded) == len(instances), result
    written = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
               for p in scp.received_files()}
    assert set(written) == {i.sop_instance_uid for i in instances}
    for info in instances:
        assert _data_set_bytes(written[info.sop_instance_uid]) == _data_set_bytes(info.path)
    # Data sets of more than 8 kB, yet no P-DATA-TF above 4096 bytes: each was fragmented.
    assert max(p.length for p in _p_data(tap, TO_ACCEPTOR)) <= SMALL_PDU


# ---------------------------------------------------------------------------------------------
# Abort, both directions
# ---------------------------------------------------------------------------------------------


async def test_peer_abort_during_echo(scripted_echo_scp: Callable[..., ScriptedEchoScp]) -> None:
    def abort(event: Any) -> int:
        event.assoc.abort()
        return 0x0000

    scp = scripted_echo_scp(abort)
    async with PduTap(LOOPBACK, scp.port) as tap, aiodicom.Client("AIOSCU") as client:
        with pytest.raises(aiodicom.AssociationAborted) as info:
            await client.peer(LOOPBACK, tap.port, scp.ae_title).echo()
    assert not isinstance(info.value, aiodicom.ConnectionClosed)
    # pynetdicom's user abort: source 0 (service user), reason 0
    assert (info.value.source, info.value.reason) == (0, 0)
    assert "aborted by the service user" in str(info.value)
    # and nothing of ours followed it: neither A-ABORT nor A-RELEASE-RQ
    assert [p.pdu_type for p in tap.seen(TO_REQUESTOR)][-1] == A_ABORT
    assert tap.seen(TO_ACCEPTOR, A_ABORT) == tap.seen(TO_ACCEPTOR, A_RELEASE_RQ) == []


async def test_our_abort_is_seen_by_pynetdicom(
    scripted_echo_scp: Callable[..., ScriptedEchoScp],
) -> None:
    scp = scripted_echo_scp(lambda event: 0x0000)
    async with PduTap(LOOPBACK, scp.port) as tap, \
            aiodicom.Client("AIOSCU").peer(LOOPBACK, tap.port, scp.ae_title).associate() \
            as session:
        await session.echo()
        await session.association.abort()
        assert not session.association.is_established
        assert not session.usable
    assert await _wait_for(scp.aborted)
    assert not scp.released.is_set()
    aborts = tap.seen(TO_ACCEPTOR, A_ABORT)
    assert len(aborts) == 1
    assert aborts[0].head[2:4] == b"\x00\x00"  # source 0 (service user), reason 0
    assert tap.seen(TO_ACCEPTOR, A_RELEASE_RQ) == []


# ---------------------------------------------------------------------------------------------
# DIMSE timeout
# ---------------------------------------------------------------------------------------------


async def test_dimse_timeout_then_abort(scripted_echo_scp: Callable[..., ScriptedEchoScp]) -> None:
    """A C-ECHO answered too late: DicomTimeoutError, and the association is aborted rather
    than released (a release would wait behind the stalled operation)."""
    unblock = threading.Event()

    def stall(event: Any) -> int:
        unblock.wait(3)
        return 0x0000

    scp = scripted_echo_scp(stall)
    try:
        async with PduTap(LOOPBACK, scp.port) as tap, \
                aiodicom.Client("AIOSCU", timeouts=aiodicom.Timeouts(dimse=0.5)) as client:
            async with client.peer(LOOPBACK, tap.port, scp.ae_title).associate() as session:
                with pytest.raises(aiodicom.DicomTimeoutError):
                    await session.echo()
            assert session.association.closed.is_set()
        assert tap.seen(TO_ACCEPTOR, A_RELEASE_RQ) == []
        assert len(tap.seen(TO_ACCEPTOR, A_ABORT)) == 1
        assert await _wait_for(scp.aborted)
    finally:
        unblock.set()


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    require_module("cryptography")
    return _self_signed(tmp_path)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost and its key (PEM, no password)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiodicom test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost"),
            ]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


def _client_ssl(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))


def _server_ssl(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


async def test_tls_aiodicom_to_aiodicom(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    async with aiodicom.Client("AIOSCP", listen_port=0, server_ssl_context=_server_ssl(cert, key)) \
            as server:
        assert server.listen_port
        async with aiodicom.Client("AIOSCU", ssl_context=_client_ssl(cert)) as client:
            await client.peer(LOOPBACK, server.listen_port, "AIOSCP").echo()
        # A plain TCP requestor does not get through the TLS acceptor ...
        async with aiodicom.Client("AIOSCU", timeouts=aiodicom.Timeouts(acse=5)) as plain:
            with pytest.raises(aiodicom.DicomError):
                await plain.peer(LOOPBACK, server.listen_port, "AIOSCP").echo()
        # ... nor does one that does not trust the acceptor's certificate.
        other_cert, _ = _self_signed(tls_files[0].parent / "other")
        async with aiodicom.Client("AIOSCU", ssl_context=_client_ssl(other_cert)) as wary:
            with pytest.raises(aiodicom.AssociationError, match="CERTIFICATE_VERIFY_FAILED"):
                await wary.peer(LOOPBACK, server.listen_port, "AIOSCP").echo()


async def test_tls_dcmtk_echoscu_against_our_acceptor(tls_files: tuple[Path, Path]) -> None:
    require_executable(ECHOSCU)
    cert, key = tls_files
    async with aiodicom.Client("AIOSCP", listen_port=0, server_ssl_context=_server_ssl(cert, key)) \
            as server:
        assert server.listen_port
        # +tla: TLS without a client certificate; +cf: trust our self-signed certificate
        proc = await in_thread(
            echoscu, LOOPBACK, server.listen_port, "AIOSCP", args=["+tla", "+cf", str(cert), "-v"])
    _ok(proc)
    assert "Received Echo Response (Success)" in proc.stdout + proc.stderr


async def test_tls_against_dcmtk_storescp(
    tls_files: tuple[Path, Path], storescp_factory: Callable[..., StoreScp], corpus: Corpus
) -> None:
    cert, key = tls_files
    # -ic: storescp does not ask for a client certificate
    scp = storescp_factory(extra_args=["+tls", str(key), str(cert), "-ic"])
    instances = list(corpus.instances[:2])
    async with aiodicom.Client("AIOSCU", ssl_context=_client_ssl(cert)) as client:
        peer = client.peer(scp.host, scp.port, scp.ae_title)
        await peer.echo()
        result = await peer.store([i.path for i in instances])
    assert result.ok and len(result.succeeded) == len(instances), result
    written = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in
               scp.received_files()}
    assert written == {i.sop_instance_uid for i in instances}


async def test_tls_acceptor_drops_a_silent_connection(tls_files: tuple[Path, Path]) -> None:
    """A peer that connects and never starts the TLS handshake is not kept for ever."""
    cert, key = tls_files
    listener = await transport.Listener.bind(
        LOOPBACK, 0, _server_ssl(cert, key), handshake_timeout=0.3)
    handled: list[object] = []

    async def handler(stream: anyio.abc.ByteStream) -> None:
        handled.append(stream)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handler)
        async with await anyio.connect_tcp(LOOPBACK, listener.port) as silent:
            with anyio.fail_after(10), pytest.raises(
                (anyio.EndOfStream, anyio.BrokenResourceError)
            ):
                await silent.receive()
        tasks.cancel_scope.cancel()
    await listener.aclose()
    assert handled == []
