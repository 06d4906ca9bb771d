"""Deliveries to a running C-MOVE (issue 14, symptom 6): a C-STORE joins the move only when it
comes from the PACS the move was sent to and carries its Move Originator Message ID; Message
IDs start at random. A third AE storing during the move with the right Move Originator Message
ID is refused (0x0124) or quarantined; the PACS's own deliveries still arrive (also from DCMTK
dcmqrscp and Orthanc, whose sub-operations echo our random Message IDs back)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from peers import LOOPBACK, in_thread, require_module
from peers.corpus import Corpus
from peers.dcmtk import DcmQrScp
from peers.orthanc import Orthanc
from pydicom.dataset import Dataset

import aiodicom
from aiodicom import AccessPolicy, Instance, MemorySink, Query
from aiodicom.datasets import encode_dataset
from aiodicom.dispatcher import Dispatcher
from aiodicom.routing import DeliveryRouter
from aiodicom.server import QRServer
from aiodicom.services.retrieve import Retrieval, RetrieveResult
from aiodicom.testing.pytest_plugin import QRScp
from aiodicom.testing.synthetic import synthetic_datasets

AE = "AIOSCU"
NOT_AUTHORIZED = 0x0124
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _forged() -> Dataset:
    """An instance no PACS holds: what an intruder tries to slip into our move."""
    return next(iter(synthetic_datasets(seed="forged", rows=8, columns=8, slices=1)))


async def _study_query(client: aiodicom.Client) -> Query:
    study = (await client.find(Query.study(PatientID="AIO-0001", StudyDate="20240312")).all())[0]
    return Query.study(StudyInstanceUID=study.StudyInstanceUID)


class Intrusion:
    """The move's sink: at its first instance (the move is then running, waiting for our
    C-STORE-RSP) ``attack`` stores the forged instance naming the move; every instance the
    move receives is kept."""

    def __init__(self, attack: Callable[[int], Any]) -> None:
        self.attack = attack
        self.move: Retrieval | None = None
        self.kept = MemorySink()
        self.attacked = False
        self.outcome: object = None

    async def __call__(self, instance: Instance) -> None:
        if not self.attacked:
            # Set first: should the forged instance reach the move, it must not attack again.
            self.attacked = True
            assert self.move is not None and self.move.message_id is not None
            self.outcome = await self.attack(self.move.message_id)
        await self.kept(instance)


async def _own_scu_attack(listen_port: int, calling: str, message_id: int) -> int:
    async with aiodicom.Client(calling, peer=(LOOPBACK, listen_port, AE)) as intruder:
        result = await intruder.store([_forged()], move_originator=(AE, message_id))
    return result.outcomes[0].status


async def _move_with_intrusion(
    qrscp: QRScp, attack: Callable[[int, int], Awaitable[object]], **client_args: Any
) -> tuple[Intrusion, RetrieveResult]:
    """A C-MOVE of one study from the Q/R SCP to our client; ``attack(listen_port,
    message_id)`` runs while it is under way."""
    async with aiodicom.Client(AE, peer=qrscp.peer, listen_port=0, **client_args) as client:
        port = client.listen_port
        assert port is not None
        qrscp.add_move_destination(AE, LOOPBACK, port)
        query = await _study_query(client)
        sink = Intrusion(lambda message_id: attack(port, message_id))
        sink.move = client.move(query, sink=sink)
        return sink, await sink.move


async def _intruder(port: int, message_id: int) -> int:
    return await _own_scu_attack(port, "INTRUDER", message_id)


async def test_store_from_a_third_ae_during_a_move_is_refused(aiodicom_qrscp: QRScp) -> None:
    """Our own SCU as the intruder, with the running move's Message ID and our AE title as
    originator: refused (0x0124) by default; the PACS's deliveries all reach the move."""
    sink, result = await _move_with_intrusion(aiodicom_qrscp, _intruder)
    assert sink.outcome == NOT_AUTHORIZED
    forged_uid = _forged().SOPInstanceUID
    assert result.status == 0 and result.ok and not result.failed
    assert forged_uid not in result.completed
    assert forged_uid not in sink.kept.instances
    assert sorted(sink.kept.instances) == sorted(result.completed)
    assert result.sub_operations.completed == len(result.completed) > 0


async def test_store_from_a_third_ae_during_a_move_is_quarantined(aiodicom_qrscp: QRScp) -> None:
    """With ``unexpected_deliveries`` a sink, the intruder's instance is kept there (a
    quarantine), never in the move's result."""
    quarantine = MemorySink()
    sink, result = await _move_with_intrusion(
        aiodicom_qrscp, _intruder, unexpected_deliveries=quarantine
    )
    forged_uid = _forged().SOPInstanceUID
    assert sink.outcome == 0x0000
    assert list(quarantine.instances) == [forged_uid]
    assert quarantine.instances[forged_uid].source_ae_title == "INTRUDER"
    assert forged_uid not in result.completed and forged_uid not in sink.kept.instances
    assert result.ok and result.sub_operations.completed == len(result.completed) > 0


@pytest.mark.interop
async def test_pynetdicom_intruder_during_a_move_is_refused(aiodicom_qrscp: QRScp) -> None:
    """pynetdicom as the intruder's SCU, naming our move as originator (AE title and ID)."""
    require_module("pynetdicom")
    from pynetdicom import AE as PynetdicomAE

    forged = _forged()

    def store(port: int, message_id: int) -> int:
        ae = PynetdicomAE(ae_title="EVIL")
        ae.add_requested_context(CT, EXPLICIT_LE)
        assoc = ae.associate(LOOPBACK, port, ae_title=AE)
        assert assoc.is_established
        try:
            status = assoc.send_c_store(forged, originator_aet=AE, originator_id=message_id)
            return int(status.Status)
        finally:
            assoc.release()

    sink, result = await _move_with_intrusion(
        aiodicom_qrscp, lambda port, message_id: in_thread(store, port, message_id)
    )
    assert sink.outcome == NOT_AUTHORIZED
    assert forged.SOPInstanceUID not in result.completed
    assert result.ok and result.sub_operations.completed == len(result.completed) > 0


async def test_pacs_calling_back_under_another_ae_title_is_refused() -> None:
    """A PACS sending from another AE title than the one we called (here our Q/R SCP, reached
    as "ARCHIVE" but storing as "AIOQR") is not the PACS the move was sent to."""
    refused: list[Instance] = []

    async def unexpected(instance: Instance) -> int:
        refused.append(instance)
        return NOT_AUTHORIZED

    async with QRServer("AIOQR", listen_port=0) as server:
        for dataset in synthetic_datasets(rows=8, columns=8, slices=2):
            server.index.store(_instance(dataset))
        async with aiodicom.Client(AE, listen_port=0, unexpected_deliveries=unexpected) as client:
            assert client.listen_port is not None
            server.add_move_destination(AE, LOOPBACK, client.listen_port)
            peer = client.peer(LOOPBACK, server.listen_port, "ARCHIVE")
            study = (await peer.find(Query.study(StudyInstanceUID="")).all())[0]
            result = await peer.move(Query.study(StudyInstanceUID=study.StudyInstanceUID))
    # Every sub-operation refused by us, so failed at the sender: a warning with the list.
    assert result.status == 0xB000 and not result.completed
    assert sorted(result.failed) == sorted(i.sop_instance_uid for i in refused)
    assert len(refused) > 0


def _instance(dataset: Dataset) -> Instance:
    return Instance(dataset.SOPClassUID, dataset.SOPInstanceUID, EXPLICIT_LE,
                    encode_dataset(dataset, EXPLICIT_LE))


# --- the rule, move by move --------------------------------------------------------------------


def _move(message_id: int, peer: str, address: str | None) -> Retrieval:
    @contextlib.asynccontextmanager
    async def never(_: Retrieval) -> AsyncIterator[Any]:
        raise AssertionError("not used")
        yield

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = "1.2.3"
    move = Retrieval("move", identifier, sop_class_uid="1.2.840.10008.5.1.4.1.2.2.2",
                     open_session=never, destination=AE)
    move.message_id, move.peer_ae_title, move.calling_ae_title = message_id, peer, AE
    move.peer_address = address
    return move


def _delivery() -> Instance:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CT, "1.2.3.4.5"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    return _instance(ds)


async def test_a_delivery_must_come_from_the_address_the_move_was_sent_to() -> None:
    router = DeliveryRouter()
    move = _move(4321, "PACS", "10.0.0.5")
    named = {"MoveOriginatorMessageID": 4321, "MoveOriginatorApplicationEntityTitle": AE}
    async with router.expecting(move):
        assert router.route(named, "PACS", _delivery(), "10.0.0.5") is move
        assert router.route(named, "PACS", _delivery(), "::ffff:10.0.0.5") is move
        assert router.route(named, "PACS", _delivery(), "10.0.0.6") is None
        assert router.route(named, "PACS", _delivery(), None) is None
        assert router.route(named, "INTRUDER", _delivery(), "10.0.0.5") is None
        assert router.route({**named, "MoveOriginatorMessageID": 4322}, "PACS",
                            _delivery(), "10.0.0.5") is None
        # No Move Originator Message ID: nobody's, unless UIDs were asked for.
        assert router.route({}, "PACS", _delivery(), "10.0.0.5") is None
    # A cluster sending from another node: the address check can be turned off.
    lenient = DeliveryRouter(AccessPolicy(check_delivery_address=False))
    async with lenient.expecting(move):
        assert lenient.route(named, "PACS", _delivery(), "10.0.0.6") is move
        assert lenient.route(named, "INTRUDER", _delivery(), "10.0.0.6") is None
    # A PACS on this machine may call back from another loopback address than we reached.
    local = _move(77, "PACS", "::1")
    async with router.expecting(local):
        assert router.route({"MoveOriginatorMessageID": 77}, "PACS", _delivery(),
                            "127.0.0.1") is local


# --- Message IDs -------------------------------------------------------------------------------


def test_message_ids_start_at_random_and_wrap_without_zero() -> None:
    firsts = {Dispatcher(cast(Any, None)).next_message_id() for _ in range(32)}
    assert all(1 <= first <= 0xFFFF for first in firsts)
    assert len(firsts) > 1 and firsts != {1}
    dispatcher = Dispatcher(cast(Any, None))
    dispatcher._last_message_id = 0xFFFF
    assert dispatcher.next_message_id() == 1  # wraps past 65535 to 1, never 0
    router = DeliveryRouter()
    ids = {router.allocate_message_id() for _ in range(32)}
    assert all(1 <= i <= 0xFFFF for i in ids) and len(ids) > 1


@pytest.mark.interop
@pytest.mark.parametrize("which", ["dcmqrscp", "orthanc"])
async def test_random_message_ids_with_dcmtk_and_orthanc(
    which: str, request: pytest.FixtureRequest, corpus: Corpus
) -> None:
    """C-ECHO, C-FIND and C-MOVEs with random Message IDs: the peers answer and their
    sub-operations name our moves, so every delivery reaches its move."""
    series = corpus.series[0]
    ids: list[int] = []
    async with aiodicom.Client(AE, listen_port=0) as client:
        port = client.listen_port
        assert port is not None
        with contextlib.ExitStack() as stack:
            if which == "dcmqrscp":
                factory = cast(Callable[..., DcmQrScp], request.getfixturevalue("dcmqrscp_factory"))
                qr = factory(move_destinations=[(AE, LOOPBACK, port)])
                peer = client.peer(qr.host, qr.port, qr.ae_title)
            else:
                orthanc = cast(Orthanc, request.getfixturevalue("orthanc"))
                stack.enter_context(orthanc.temporary_modality(AE, AE, LOOPBACK, port))
                peer = client.peer(orthanc.host, orthanc.port, orthanc.ae_title)
            await peer.echo()
            query = Query.series(StudyInstanceUID=series.study_instance_uid,
                                 SeriesInstanceUID=series.series_instance_uid)
            assert len(await peer.find(query).all()) == 1
            for _ in range(3):
                move = peer.move(query)
                result = await move
                assert move.message_id is not None
                ids.append(move.message_id)
                assert sorted(result.completed) == sorted(
                    i.sop_instance_uid for i in series.instances
                )
                assert result.ok and not result.failed
    assert ids != [1, 2, 3]  # not counted from 1 (each drawn at random, 1-65535)
