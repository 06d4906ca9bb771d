"""The parts of retrieval that need no peer: identifiers, routing decisions, storage contexts,
reading Part 10 files back, and the result's helpers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, JPEGLosslessSV1, MRImageStorage, RLELossless

from aiodicom.access import AccessPolicy
from aiodicom.datasets import encode_dataset
from aiodicom.fileio import FileMetaError, split_part10, write_part10_atomic
from aiodicom.instance import Instance, read_part10
from aiodicom.negotiation import MAX_CONTEXTS
from aiodicom.query import Query, QueryError, QueryModel
from aiodicom.routing import DeliveryRouter
from aiodicom.series import SeriesError
from aiodicom.services.get_contexts import get_proposals, sop_classes_from, storage_proposals
from aiodicom.services.retrieve import (
    Progress,
    Retrieval,
    RetrieveResult,
    retrieve_identifier,
    retrieve_model,
    retrieve_sop_class,
)
from aiodicom.sinks import DirectorySink, MemorySink

EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"


def _match(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# ---------------------------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------------------------


def test_identifier_from_a_match_keeps_only_the_models_unique_keys() -> None:
    match = _match("SERIES", PatientID="P1", PatientName="Doe^J", StudyInstanceUID="1.2",
                   SeriesInstanceUID="1.2.3", Modality="CT", SpecificCharacterSet="ISO_IR 100")
    study_root = retrieve_identifier(match, STUDY_ROOT_MOVE)
    assert [e.keyword for e in study_root] == [
        "SpecificCharacterSet", "QueryRetrieveLevel", "StudyInstanceUID", "SeriesInstanceUID"
    ]
    patient_root = retrieve_identifier(match, PATIENT_ROOT_MOVE)
    assert patient_root.PatientID == "P1" and "PatientName" not in patient_root
    # Keys below the level never go out, even when the match carries them.
    study = retrieve_identifier(_match("STUDY", StudyInstanceUID="1.2", SOPInstanceUID="9"),
                                STUDY_ROOT_MOVE)
    assert "SOPInstanceUID" not in study


def test_identifier_keeps_uid_lists() -> None:
    match = _match("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3",
                   SOPInstanceUID=["1.2.3.4", "1.2.3.5"])
    assert list(retrieve_identifier(match, STUDY_ROOT_MOVE).SOPInstanceUID) == [
        "1.2.3.4", "1.2.3.5"
    ]


@pytest.mark.parametrize(("match", "key"), [
    (_match("SERIES", StudyInstanceUID="1.2"), "SeriesInstanceUID"),
    (_match("SERIES", StudyInstanceUID="1.2", SeriesInstanceUID=""), "SeriesInstanceUID"),
    (_match("WARD", StudyInstanceUID="1.2"), "QueryRetrieveLevel"),
    (_match("PATIENT", PatientID="P1"), "QueryRetrieveLevel"),  # Study Root has no PATIENT
])
def test_identifier_refuses_what_cannot_be_retrieved(match: Dataset, key: str) -> None:
    with pytest.raises(QueryError) as caught:
        retrieve_identifier(match, STUDY_ROOT_MOVE)
    assert caught.value.key == key


def test_identifier_of_a_match_and_of_a_query_follow_the_same_rules() -> None:
    # A wildcard cannot name what to fetch, whether it comes from a query or a match.
    with pytest.raises(QueryError) as caught:
        retrieve_identifier(_match("PATIENT", PatientID="P*"), PATIENT_ROOT_MOVE)
    assert caught.value.key == "PatientID"
    with pytest.raises(QueryError):
        retrieve_identifier(Query.patient(PatientID="P*"))
    # Non-ASCII text with no character set declared goes out as UTF-8, declared so.
    match = _match("PATIENT", PatientID="Müller-1")
    assert retrieve_identifier(match, PATIENT_ROOT_MOVE).SpecificCharacterSet == "ISO_IR 192"
    query = Query.patient(PatientID="Müller-1")
    assert retrieve_identifier(query).SpecificCharacterSet == "ISO_IR 192"
    # A declared character set is kept, so the peer decodes the values as they were meant.
    latin = Query.patient(PatientID="Müller-1", character_set="ISO_IR 100")
    assert retrieve_identifier(latin).SpecificCharacterSet == "ISO_IR 100"


def test_identifier_from_a_query_is_validated() -> None:
    query = Query.series(StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", Modality="CT")
    identifier = retrieve_identifier(query)
    assert identifier.SeriesInstanceUID == "1.2.3" and "Modality" not in identifier
    with pytest.raises(QueryError):
        retrieve_identifier(Query.study(PatientID="P1"))


def test_model_and_sop_class_of_what_is_retrieved() -> None:
    assert retrieve_model(_match("PATIENT", PatientID="P")) is QueryModel.PATIENT_ROOT
    assert retrieve_model(_match("STUDY", StudyInstanceUID="1")) is QueryModel.STUDY_ROOT
    assert retrieve_model(Query.study(model=QueryModel.PATIENT_ROOT, StudyInstanceUID="1")) \
        is QueryModel.PATIENT_ROOT
    assert retrieve_sop_class(QueryModel.STUDY_ROOT, "move") == STUDY_ROOT_MOVE
    with pytest.raises(QueryError):
        retrieve_sop_class(QueryModel.WORKLIST, "get")


# ---------------------------------------------------------------------------------------------
# Storage contexts for C-GET
# ---------------------------------------------------------------------------------------------


def test_get_proposals_fit_the_context_limit_and_keep_uncompressed_first() -> None:
    proposals = get_proposals("1.2.840.10008.5.1.4.1.2.2.3")
    assert len(proposals) <= MAX_CONTEXTS
    storage = proposals[1:]
    assert all(p.scp_role and not p.scu_role for p in storage)
    # Each class's first context is the uncompressed one: some senders use the first only.
    first_of = {}
    for proposal in storage:
        first_of.setdefault(proposal.abstract_syntax, proposal.transfer_syntaxes)
    assert all(EXPLICIT_LE in syntaxes for syntaxes in first_of.values())


def test_storage_proposals_for_known_classes_and_chosen_syntaxes() -> None:
    proposals = storage_proposals([CTImageStorage, MRImageStorage])
    assert {p.abstract_syntax for p in proposals} == {CTImageStorage, MRImageStorage}
    assert (JPEGLosslessSV1,) in {p.transfer_syntaxes for p in proposals}
    chosen = storage_proposals([CTImageStorage, MRImageStorage], transfer_syntaxes=[RLELossless])
    assert [(p.abstract_syntax, p.transfer_syntaxes) for p in chosen] == [
        (CTImageStorage, (RLELossless,)), (MRImageStorage, (RLELossless,))
    ]
    with pytest.raises(ValueError, match="empty"):
        storage_proposals([CTImageStorage], transfer_syntaxes=[])


def test_sop_classes_from_a_match_or_a_query() -> None:
    assert sop_classes_from(_match("STUDY", SOPClassesInStudy=[CTImageStorage, MRImageStorage])) \
        == [CTImageStorage, MRImageStorage]
    assert sop_classes_from(Query.image(StudyInstanceUID="1", SeriesInstanceUID="2",
                                        SOPClassUID=CTImageStorage)) == [CTImageStorage]
    assert sop_classes_from(Query.study(StudyInstanceUID="1")) is None


# ---------------------------------------------------------------------------------------------
# Routing decisions
# ---------------------------------------------------------------------------------------------


def _instance(study: str, series: str, sop: str) -> Instance:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    return Instance(CTImageStorage, sop, EXPLICIT_LE, encode_dataset(ds, EXPLICIT_LE))


def _move(identifier: Dataset, message_id: int, peer: str, calling: str = "AIOSCU") -> Retrieval:
    @contextlib.asynccontextmanager
    async def never(_: Retrieval) -> AsyncIterator[Any]:  # the association is never opened
        raise AssertionError("not used")
        yield

    move = Retrieval("move", identifier, sop_class_uid=STUDY_ROOT_MOVE, open_session=never,
                     destination=calling)
    move.message_id, move.peer_ae_title, move.calling_ae_title = message_id, peer, calling
    return move


@contextlib.asynccontextmanager
async def _active(router: DeliveryRouter, *moves: Retrieval) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for move in moves:
            await stack.enter_async_context(router.expecting(move))
        yield


def _command(message_id: int | None = None, originator: str | None = None) -> dict[str, object]:
    command: dict[str, object] = {"CommandField": 1}
    if message_id is not None:
        command["MoveOriginatorMessageID"] = message_id
    if originator is not None:
        command["MoveOriginatorApplicationEntityTitle"] = originator
    return command


async def test_routing_by_originator_message_id() -> None:
    router = DeliveryRouter()
    same = _match("STUDY", StudyInstanceUID="1.1")
    a, b = _move(same, 7, "PACS"), _move(same, 8, "OTHER")
    delivery = _instance("1.1", "1.1.1", "1.1.1.1")
    async with _active(router, a, b):
        assert router.route(_command(7, "AIOSCU"), "PACS", delivery) is a
        assert router.route(_command(8, "AIOSCU"), "OTHER", delivery) is b
        assert router.route(_command(8), "OTHER", delivery) is b
        # pynetdicom names itself as the originator.
        assert router.route(_command(7, "PACS"), "PACS", delivery) is a
        # Somebody else's C-MOVE with us as destination, even if its Message ID is one of ours.
        assert router.route(_command(7, "THIRD"), "PACS", delivery) is None
        # Another AE than the PACS the move was sent to, with the right Message ID: not its.
        assert router.route(_command(7, "AIOSCU"), "OTHER", delivery) is None
        assert router.route(_command(7, "AIOSCU"), "ELSEWHERE", delivery) is None
        # Without originator: by default nobody's, even from the right PACS.
        assert router.route(_command(), "PACS", delivery) is None
    assert router.active == 0


async def test_routing_without_originator_by_uids() -> None:
    router = DeliveryRouter(AccessPolicy(deliveries_by_uids=True))
    study = _move(_match("STUDY", StudyInstanceUID="1.1"), 1, "PACS")
    series = _move(_match("SERIES", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.1"), 2, "PACS")
    image = _move(_match("IMAGE", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.2",
                         SOPInstanceUID=["1.2.2.5", "1.2.2.6"]), 3, "PACS")
    async with _active(router, study, series, image):
        assert router.route(_command(), "PACS", _instance("1.1", "1.1.9", "1.1.9.1")) is study
        assert router.route(_command(), "PACS", _instance("1.2", "1.2.1", "1.2.1.1")) is series
        assert router.route(_command(), "PACS", _instance("1.2", "1.2.2", "1.2.2.6")) is image
        assert router.route(_command(), "PACS", _instance("1.2", "1.2.2", "1.2.2.7")) is None
        # A Message ID naming no active move decides alone: never the UIDs.
        assert router.route(_command(99, "AIOSCU"), "PACS",
                            _instance("1.1", "1.1.9", "1.1.9.2")) is None
        # Only from the PACS the moves were sent to.
        assert router.route(_command(), "PACS_STORE",
                            _instance("1.2", "1.2.1", "1.2.1.3")) is None
    assert router.route(_command(), "PACS", _instance("1.1", "1.1.9", "1.1.9.1")) is None


async def test_message_ids_are_unique_among_active_moves() -> None:
    router = DeliveryRouter()
    first = router.allocate_message_id()
    move = _move(_match("STUDY", StudyInstanceUID="1"), first, "PACS")
    async with router.expecting(move):
        assert router.allocate_message_id() != first
        clash = _move(_match("STUDY", StudyInstanceUID="2"), first, "PACS")
        with pytest.raises(Exception, match="already used"):
            async with router.expecting(clash):
                pass
        assert router.active == 1


# ---------------------------------------------------------------------------------------------
# Part 10 files read back, results as series
# ---------------------------------------------------------------------------------------------


def _ct(index: int, series: str = "1.2.3") -> Instance:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"1.2.3.{index}"
    ds.StudyInstanceUID = "1.2"
    ds.SeriesInstanceUID = series
    ds.ImagePositionPatient = [0, 0, index * 2]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes([index, 0]) * 4
    return Instance(CTImageStorage, ds.SOPInstanceUID, EXPLICIT_LE,
                    encode_dataset(ds, EXPLICIT_LE), source_ae_title="PACS")


def test_part10_round_trip_keeps_the_bytes(tmp_path: Path) -> None:
    instance = _ct(1)
    path = tmp_path / "a.dcm"
    write_part10_atomic(path, instance)
    back = read_part10(path)
    assert back == instance
    assert dcmread(path).SOPInstanceUID == instance.sop_instance_uid
    meta, data = split_part10(path.read_bytes())
    assert meta["transfer_syntax_uid"] == EXPLICIT_LE and bytes(data) == bytes(instance.data)


def test_part10_read_refuses_what_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(FileMetaError, match="DICM"):
        split_part10(bytes(200))
    # Preamble and prefix, but a meta group without Transfer Syntax UID.
    with pytest.raises(FileMetaError, match="Transfer Syntax"):
        split_part10(bytes(128) + b"DICM" + b"\x08\x00\x16\x00UI\x02\x001\x00")


async def test_result_series_from_memory_and_directory(tmp_path: Path) -> None:
    memory, directory = MemorySink(), DirectorySink(tmp_path)
    arrived = [_ct(3), _ct(1), _ct(2), _ct(5, series="1.2.4")]
    for instance in arrived:
        await memory(instance)
        await directory(instance)
    await memory(_ct(9))  # in the sink from an earlier retrieval, not in this result
    completed = tuple(i.sop_instance_uid for i in arrived)
    for sink in (memory, directory):
        result = RetrieveResult(0, "Success", None, completed, (), (), 0,
                                Progress(None, 4, 0, 0), sink=sink)
        assert [i.sop_instance_uid for i in result.instances()] == list(completed)
        with pytest.raises(SeriesError, match="2 series arrived"):
            result.series()
        series = result.series("1.2.3")
        assert [str(ds.SOPInstanceUID) for ds in series.datasets()] == [
            "1.2.3.1", "1.2.3.2", "1.2.3.3"
        ]
        with pytest.raises(SeriesError, match="no instance of series"):
            result.series("9.9")
    assert sorted(i.sop_instance_uid for i in directory) == sorted(completed)
    assert len(directory) == 4
