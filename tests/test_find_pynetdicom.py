"""C-FIND against an in-process pynetdicom Q/R SCP: statuses, cancel, backpressure, character
sets, extended negotiation, strictness and the hierarchy helper.

The SCP here is :class:`peers.pynetdicom_scp.FindScp` extended to answer SOP Class Extended
Negotiation, count the bytes it has really written to its socket, and record A-ABORTs.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio
import pytest
from peers import require_module
from peers.corpus import Corpus, load_datasets
from peers.pynetdicom_scp import FindScp, match_identifier, response_identifier
from pydicom import Dataset

import aiodicom
from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.errors import AssociationAborted, DicomError
from aiodicom.negotiation import ContextProposal
from aiodicom.query import Level, Query, QueryError, QueryModel
from aiodicom.services.find import FindError, FindOptions
from aiodicom.session import Session
from aiodicom.uids import (
    EXPLICIT_VR_LE,
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
)

pytestmark = pytest.mark.interop

Answers = Iterable[tuple[Any, Dataset | None]]


class Scp(FindScp):
    """FindScp that also answers extended negotiation, counts bytes written, counts A-ABORTs.

    ``accept_extended``: application information to accept for every SOP class the requestor
    proposes it for (``None``: no item in the A-ASSOCIATE-AC).
    """

    def __init__(self, *args: Any, accept_extended: bytes | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accept_extended = accept_extended
        self.proposed_extended: list[dict[str, bytes]] = []
        self.bytes_sent = 0
        self.aborts = 0

    def _configure(self, ae: Any) -> list[tuple[Any, Callable[..., Any]]]:
        from pynetdicom import evt

        return [
            *super()._configure(ae),
            (evt.EVT_SOP_EXTENDED, self._on_extended),
            (evt.EVT_DATA_SENT, self._on_data_sent),
            (evt.EVT_PDU_RECV, self._on_pdu_recv),
        ]

    def _on_extended(self, event: Any) -> dict[str, bytes]:
        proposed = {str(uid): bytes(info) for uid, info in event.app_info.items()}
        with self._lock:
            self.proposed_extended.append(proposed)
        if self.accept_extended is None:
            return {}
        return {uid: self.accept_extended for uid in proposed}

    def _on_data_sent(self, event: Any) -> None:
        with self._lock:
            self.bytes_sent += len(event.data)

    def _on_pdu_recv(self, event: Any) -> None:
        # Recorded by the connection's reader thread: the association's own thread may be
        # busy in a C-FIND handler, which is where EVT_ABORTED would come from.
        if type(event.pdu).__name__ == "A_ABORT_RQ":
            with self._lock:
                self.aborts += 1


@pytest.fixture(scope="module")
def shared_scp() -> Iterator[Scp]:
    require_module("pynetdicom")
    scp = Scp()
    scp.start()
    yield scp
    scp.stop()  # stopping a pynetdicom server takes ~0.5 s: one for the whole module


@pytest.fixture
def make_scp(shared_scp: Scp) -> Callable[..., Scp]:
    """``make(datasets, responder=, delay=, final_status=, accept_extended=)``: the module's
    SCP, configured afresh and with its records cleared."""

    def make(
        datasets: Any = (),
        *,
        responder: Any = None,
        delay: float = 0.0,
        final_status: int = 0x0000,
        accept_extended: bytes | None = None,
    ) -> Scp:
        scp = shared_scp
        with scp._lock:
            scp.datasets = list(datasets)
            scp.responder = responder
            scp.delay = delay
            scp.final_status = final_status
            scp.accept_extended = accept_extended
            for records in (scp.identifiers, scp.cancels, scp.cancelled, scp.pendings_sent,
                            scp.proposed_extended, scp.requestor_max_pdus):
                records.clear()
            scp.associations = scp.bytes_sent = scp.aborts = 0
        return scp

    return make


def study_records(n: int, *, name: str = "Doe^John") -> list[Dataset]:
    records = []
    for i in range(n):
        ds = Dataset()
        ds.PatientName = name
        ds.PatientID = f"P{i:04d}"
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.2.1125.{i + 1}"
        ds.StudyDate = "20240105"
        ds.StudyTime = "101500"
        ds.AccessionNumber = f"A{i:04d}"
        ds.StudyID = f"S{i}"
        records.append(ds)
    return records


def by_level(records: list[Dataset]) -> Callable[[Dataset], Answers]:
    """A responder that answers at the identifier's level, one response per entity."""

    def respond(identifier: Dataset) -> Answers:
        unique = Level(identifier.QueryRetrieveLevel).unique_key
        seen: set[str] = set()
        for ds in records:
            if match_identifier(identifier, ds) and ds[unique].value not in seen:
                seen.add(ds[unique].value)
                yield 0xFF00, response_identifier(identifier, ds)

    return respond


def status(code: int, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment is not None:
        ds.ErrorComment = comment
    return ds


STUDY_CONTEXT = ContextProposal(STUDY_ROOT_FIND, UNCOMPRESSED_TRANSFER_SYNTAXES)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------------------------------
# Statuses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0xA700, "out of resources"),
        (0xA900, "does not match SOP class"),
        (0xC000, "unable to process"),
        (0xC123, "unable to process"),
        (0x0122, "SOP class not supported"),
        (0x0124, "not authorized"),
    ],
)
async def test_failure_status_raises_find_error(
    make_scp: Callable[..., Scp], code: int, words: str
) -> None:
    records = study_records(2)

    def respond(identifier: Dataset) -> Answers:
        for ds in records:
            yield 0xFF00, response_identifier(identifier, ds)
        yield status(code, "database on fire"), None

    scp = make_scp(responder=respond)
    seen = []
    async with aiodicom.Client("AIOSCU") as client:
        find = client.peer("127.0.0.1", scp.port, scp.ae_title).find(Query.study(PatientID=None))
        with pytest.raises(FindError) as caught:
            async for match in find:
                seen.append(match.PatientID)
    error = caught.value
    assert seen == ["P0000", "P0001"]  # the matches before the failure were delivered
    assert error.status == code
    assert error.error_comment == "database on fire"
    assert words.lower() in error.meaning.lower()
    message = str(error)
    assert f"0x{code:04X}" in message and "database on fire" in message
    assert words.lower() in message.lower()
    assert error.result.matches == 2 and find.result == error.result
    assert not scp.cancels


async def test_fe00_that_we_did_not_ask_for_is_truncation(make_scp: Callable[..., Scp]) -> None:
    scp = make_scp(study_records(3), final_status=0xFE00)
    async with aiodicom.Client("AIOSCU") as client:
        find = client.peer("127.0.0.1", scp.port, scp.ae_title).find(Query.study(PatientID=None))
        matches = await find.all()
    assert len(matches) == 3
    assert find.result is not None
    assert find.result.truncated and not find.result.cancelled
    assert any("truncated" in w for w in find.result.warnings)
    assert not scp.cancels


@pytest.mark.parametrize("final", [0x0000, 0xA700])
async def test_peer_sending_only_the_final_response(
    make_scp: Callable[..., Scp], final: int
) -> None:
    scp = make_scp(responder=lambda identifier: [(final, None)])
    async with aiodicom.Client("AIOSCU") as client:
        find = client.peer("127.0.0.1", scp.port, scp.ae_title).find(Query.study(PatientID=None))
        if final == 0:
            assert await find.all() == []
        else:
            with pytest.raises(FindError):
                await find.all()
    assert find.result is not None
    assert find.result.status == final and find.result.matches == 0


async def test_ff01_is_reported(make_scp: Callable[..., Scp]) -> None:
    records = study_records(2)
    scp = make_scp(
        responder=lambda identifier: [
            (0xFF00, response_identifier(identifier, records[0])),
            (0xFF01, response_identifier(identifier, records[1])),
        ]
    )
    async with aiodicom.Client("AIOSCU") as client:
        find = client.peer("127.0.0.1", scp.port, scp.ae_title).find(Query.study(PatientID=None))
        assert len(await find.all()) == 2
    assert find.result is not None
    assert find.result.optional_keys_unsupported
    assert any("FF01" in w for w in find.result.warnings)


# --------------------------------------------------------------------------------------------
# Cancel: each way of stopping early sends C-CANCEL and leaves the association usable
# --------------------------------------------------------------------------------------------

QUERY = Query.study(PatientID=None)


async def _stop_after_three(session: Session, how: str) -> None:
    if how == "async with":
        find = session.find(QUERY)
        n = 0
        async with find:
            async for _ in find:
                n += 1
                if n == 3:
                    break
        assert find.result is not None and find.result.cancelled
    elif how == "aclose":
        find = session.find(QUERY)
        iterator = aiter(find)
        for _ in range(3):
            await anext(iterator)
        await find.aclose()
        assert find.result is not None and find.result.cancelled
        assert find.result.status == 0xFE00 and not find.result.truncated
    elif how == "plain break":
        # No async with, no variable: the generator is closed when the loop drops it, by a task
        # the event loop starts; the next operation on the association waits for it.
        n = 0
        async for _ in session.find(QUERY):
            n += 1
            if n == 3:
                break
    elif how == "cancel scope":
        find = session.find(QUERY)
        n = 0
        with anyio.CancelScope() as scope:
            async for _ in find:  # no async with: the cancellation reaches the generator
                n += 1
                if n == 3:
                    scope.cancel()
        assert scope.cancelled_caught
        assert find.result is not None and find.result.cancelled
    elif how == "task cancelled":
        find = session.find(QUERY)
        three = anyio.Event()

        async def consume() -> None:
            n = 0
            async with find:
                async for _ in find:
                    n += 1
                    if n == 3:
                        three.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await three.wait()
            tg.cancel_scope.cancel()
        assert find.result is not None and find.result.cancelled
    elif how == "timeout":
        find = session.find(QUERY)
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.3):
                async with find:
                    async for _ in find:
                        await anyio.sleep(0.05)  # the deadline passes in the consumer's body
        assert find.result is not None and find.result.cancelled
    else:  # pragma: no cover
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["async with", "aclose", "plain break", "cancel scope", "task cancelled", "timeout"]
)
async def test_cancel_then_same_association_serves_another_find(
    make_scp: Callable[..., Scp], how: str
) -> None:
    records = study_records(300)
    scp = make_scp(records, delay=0.01)  # about 3 s of matches: the cancel arrives mid-stream
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        # Bounded: a C-CANCEL that never went out would leave the next find waiting for ever.
        with anyio.fail_after(20):
            async with peer.associate([STUDY_CONTEXT]) as session:
                await _stop_after_three(session, how)
                scp.delay = 0.0
                again = await session.find(Query.study(PatientID="P000*")).all()
                assert sorted(str(m.PatientID) for m in again) == [f"P{i:04d}" for i in range(10)]
                assert session.usable
    assert scp.associations == 1
    assert len(scp.identifiers) == 2
    assert len(scp.cancels) == 1
    # The C-CANCEL named the C-FIND that the SCP was running, and the SCP stopped it.
    assert [c.message_id_being_responded_to for c in scp.cancels] == scp.cancelled
    assert scp.pendings_sent[0] < len(records)


async def test_peer_find_break_releases_its_association(make_scp: Callable[..., Scp]) -> None:
    scp = make_scp(study_records(300), delay=0.01)
    async with aiodicom.Client("AIOSCU") as client:
        find = client.peer("127.0.0.1", scp.port, scp.ae_title).find(QUERY)
        async with find:
            async for _ in find:
                break
        assert find.result is not None and find.result.cancelled
        assert find.result.status == 0xFE00
    assert scp.cancelled == [c.message_id_being_responded_to for c in scp.cancels]
    assert len(scp.cancels) == 1
    assert scp.aborts == 0  # released, not aborted


async def test_peer_ignoring_cancel_gets_aborted(make_scp: Callable[..., Scp]) -> None:
    records = study_records(3)
    blocked = threading.Event()

    def respond(identifier: Dataset) -> Answers:
        yield 0xFF00, response_identifier(identifier, records[0])
        yield 0xFF00, response_identifier(identifier, records[1])
        blocked.wait(30)  # never answers the C-CANCEL

    scp = make_scp(responder=respond)
    try:
        async with aiodicom.Client("AIOSCU") as client:
            peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
            async with peer.associate([STUDY_CONTEXT]) as session:
                find = session.find(QUERY, cancel_timeout=0.5)
                async with find:
                    async for _ in find:
                        break
                assert find.result is not None and find.result.cancelled
                assert "aborted" in (find.result.error_comment or "")
                assert not session.usable
                with pytest.raises(AssociationAborted):
                    await session.find(QUERY).all()
        assert len(scp.cancels) == 1
        assert wait_until(lambda: scp.aborts == 1)
    finally:
        blocked.set()


# --------------------------------------------------------------------------------------------
# Backpressure
# --------------------------------------------------------------------------------------------


async def test_slow_consumer_bounds_what_the_peer_can_send(make_scp: Callable[..., Scp]) -> None:
    total = 10_000
    comment = "x" * 4000  # ~4 KB a match: 40 MB in all, far beyond the socket buffers

    def respond(identifier: Dataset) -> Answers:
        for i in range(total):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientID = f"P{i:05d}"
            ds.PatientComments = comment
            yield 0xFF00, ds

    scp = make_scp(responder=respond)
    async with aiodicom.Client("AIOSCU") as client:
        find = client.peer("127.0.0.1", scp.port, scp.ae_title).find(
            Query.study(PatientID=None, PatientComments=None)
        )
        consumed = 0
        async with find:
            async for match in find:
                consumed += 1
                if consumed == 10:
                    # Stop pulling until the peer cannot write any more (its writes block on
                    # full socket buffers), then see how much it has managed to send.
                    await anyio.to_thread.run_sync(_wait_until_stalled, scp)
                    at_checkpoint = scp.bytes_sent
                assert match.PatientID == f"P{consumed - 1:05d}"
        sent_in_all = scp.bytes_sent
    assert consumed == total
    assert sent_in_all > total * len(comment)
    # Unbounded buffering would let the peer write all 40 MB while we held 10 matches; with
    # pull-based reading only the kernel's socket buffers (a few MB) fill up.
    print(f"sent at checkpoint {at_checkpoint}, in all {sent_in_all}")
    assert at_checkpoint < sent_in_all / 2


def _wait_until_stalled(scp: Scp) -> None:
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = scp.bytes_sent
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 0.5:
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Character sets
# --------------------------------------------------------------------------------------------

NAMES = [
    ("ISO_IR 100", "Lindqvist^Åsa"),
    ("ISO_IR 192", "山田^太郎"),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
]


async def test_responses_in_each_character_set_decode_to_str(
    make_scp: Callable[..., Scp],
) -> None:
    records = []
    for i, (charset, name) in enumerate(NAMES):
        ds = study_records(1)[0]
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.PatientID = f"CS{i}"
        ds.StudyDescription = "Knie rechts" if i else "Knä höger"
        records.append(ds)
    scp = make_scp(records)
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        matches = await peer.find(Query.study(PatientID="CS*", StudyDescription=None)).all()
    assert [str(m.PatientName) for m in matches] == [name for _, name in NAMES]
    assert matches[0].StudyDescription == "Knä höger"
    # Decoded in place: an element copied into a data set without that character set keeps
    # its text.
    for match, (_, name) in zip(matches, NAMES, strict=True):
        copy = Dataset()
        copy.add(match["PatientName"])
        assert str(copy.PatientName) == name


@pytest.mark.parametrize(
    ("character_set", "name", "sent_as"),
    [
        (None, "Müller^Jürgen", "ISO_IR 192"),
        (None, "山田^太郎", "ISO_IR 192"),
        ("ISO_IR 100", "Müller^Jürgen", "ISO_IR 100"),
    ],
)
async def test_non_ascii_query_values_are_encoded(
    make_scp: Callable[..., Scp], character_set: str | None, name: str, sent_as: str
) -> None:
    record = study_records(1, name=name)[0]
    record.SpecificCharacterSet = "ISO_IR 192"
    scp = make_scp([record])
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        query = Query.study(PatientName=name, character_set=character_set)
        matches = await peer.find(query).all()
    identifier = scp.identifiers[0]
    assert identifier.SpecificCharacterSet == sent_as
    assert str(identifier.PatientName) == name  # the bytes are what the charset says
    assert [str(m.PatientName) for m in matches] == [name]


# --------------------------------------------------------------------------------------------
# Hierarchical rules and SOP Class Extended Negotiation
# --------------------------------------------------------------------------------------------

NOT_HIERARCHICAL = Query.series(Modality="MR")  # no StudyInstanceUID


async def test_non_hierarchical_query_refused_before_anything_is_sent(
    make_scp: Callable[..., Scp],
) -> None:
    scp = make_scp(study_records(1))
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        with pytest.raises(QueryError) as caught:
            await peer.find(NOT_HIERARCHICAL).all()
        assert caught.value.key == "StudyInstanceUID"
        assert "StudyInstanceUID" in str(caught.value)
        with pytest.raises(QueryError):
            peer.find(Query.study(Modality="MR"))  # a key below the level: refused at once
    assert scp.associations == 0 and scp.identifiers == []


async def test_relational_not_accepted_is_refused_after_association(
    make_scp: Callable[..., Scp],
) -> None:
    scp = make_scp(study_records(1), accept_extended=None)
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        find = peer.find(NOT_HIERARCHICAL, options=FindOptions(relational=True))
        with pytest.raises(QueryError, match="did not accept relational"):
            await find.all()
        assert find.negotiated == FindOptions()
        # A hierarchical query asking for relational works whether or not it was accepted.
        ok = peer.find(Query.study(PatientID=None), options=FindOptions(relational=True))
        assert len(await ok.all()) == 1
    assert scp.proposed_extended == [{STUDY_ROOT_FIND: b"\x01"}] * 2
    assert scp.associations == 2
    assert len(scp.identifiers) == 1  # only the hierarchical one was sent


async def test_relational_accepted_lets_the_query_through(make_scp: Callable[..., Scp]) -> None:
    record = study_records(1)[0]
    record.SeriesInstanceUID = "1.2.3.4"
    record.Modality = "MR"
    record.SeriesNumber = 1
    scp = make_scp([record], accept_extended=b"\x01\x00\x00\x00")
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        find = peer.find(NOT_HIERARCHICAL, options=FindOptions(relational=True))
        assert find.negotiated is None
        matches = await find.all()
    assert [m.SeriesInstanceUID for m in matches] == ["1.2.3.4"]
    assert find.negotiated == FindOptions(relational=True)
    assert find.result is not None and find.result.negotiated == FindOptions(relational=True)
    assert scp.identifiers[0].QueryRetrieveLevel == "SERIES"


@pytest.mark.parametrize(
    ("accepted", "expected"),
    [
        (b"\x01\x01\x01\x01", FindOptions(True, True, True, True)),
        (b"\x00\x01", FindOptions(datetime_matching=True)),
        (b"\x01\x00\x00\x01\x01", FindOptions(relational=True, timezone_adjustment=True)),
    ],
)
async def test_all_options_proposed_and_accepted_ones_visible(
    make_scp: Callable[..., Scp], accepted: bytes, expected: FindOptions
) -> None:
    scp = make_scp(study_records(1), accept_extended=accepted)
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        find = peer.find(
            Query.study(PatientID=None, StudyDate=("20240101", "20240131"), StudyTime="1000-"),
            options=FindOptions(True, True, True, True),
        )
        await find.all()
    assert scp.proposed_extended == [{STUDY_ROOT_FIND: b"\x01\x01\x01\x01"}]
    assert find.negotiated == expected
    assert find.result is not None
    unaccepted = [w for w in find.result.warnings if "did not accept" in w]
    if expected.fuzzy_names:
        assert not unaccepted
    else:
        assert unaccepted and "fuzzy" in unaccepted[0]


async def test_session_find_uses_the_options_negotiated_for_the_session(
    make_scp: Callable[..., Scp],
) -> None:
    record = study_records(1)[0]
    record.Modality = "CT"
    record.SeriesInstanceUID = "1.2.3.5"
    record.SeriesNumber = 5  # an empty IS as last element trips decode_dataset (see report)
    scp = make_scp([record], accept_extended=b"\x01")
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        async with peer.associate(
            [STUDY_CONTEXT],
            extended_negotiation=[FindOptions(relational=True).negotiation_item(STUDY_ROOT_FIND)],
        ) as session:
            find = session.find(
                NOT_HIERARCHICAL.with_keys(Modality="CT"), options=FindOptions(relational=True)
            )
            assert len(await find.all()) == 1
            with pytest.raises(QueryError):  # relational not asked for: hierarchical rules
                session.find(NOT_HIERARCHICAL)


# --------------------------------------------------------------------------------------------
# Keys the peer ignores or contradicts
# --------------------------------------------------------------------------------------------


async def test_contradicting_matches_reported_and_filtered_when_strict(
    make_scp: Callable[..., Scp],
) -> None:
    records = study_records(3)
    records[1].PatientName = "Roe^Richard"

    def ignore_name(identifier: Dataset) -> Answers:
        # A peer that does not match on PatientName but returns it.
        for ds in records:
            yield 0xFF00, response_identifier(identifier, ds)

    scp = make_scp(responder=ignore_name)
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        query = Query.study(PatientName="Doe^*")
        lenient = peer.find(query)
        assert len(await lenient.all()) == 3
        strict = peer.find(query, strict=True)
        kept = await strict.all()
    assert [m.PatientID for m in kept] == ["P0000", "P0002"]
    for find in (lenient, strict):
        assert find.result is not None and find.result.contradicting == 1
        assert any("contradict" in w for w in find.result.warnings)
    assert strict.result is not None and strict.result.matches == 2


async def test_matching_key_absent_from_every_response_is_reported(
    make_scp: Callable[..., Scp], caplog: pytest.LogCaptureFixture
) -> None:
    records = study_records(2)

    def drop_description(identifier: Dataset) -> Answers:
        for ds in records:
            out = response_identifier(identifier, ds)
            del out.StudyDescription
            yield 0xFF00, out

    scp = make_scp(responder=drop_description)
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        find = peer.find(Query.study(StudyDescription="CT*"))
        assert len(await find.all()) == 2
    assert find.result is not None and find.result.ignored_keys == ("StudyDescription",)
    assert "StudyDescription" in caplog.text


# --------------------------------------------------------------------------------------------
# The hierarchy helper
# --------------------------------------------------------------------------------------------


async def test_find_series_walks_study_then_series_on_one_association(
    make_scp: Callable[..., Scp], corpus: Corpus
) -> None:
    scp = make_scp(responder=by_level(load_datasets(corpus.instances)))
    january = corpus.studies_between("20240101", "20240131")
    expected = [s for st in january for s in st.series if s.modality == "MR"]
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        helper = peer.find_series(
            StudyDate=("20240101", "20240131"), Modality="MR", StudyDescription=None
        )
        series = await helper.all()
    assert scp.associations == 1
    levels = [str(i.QueryRetrieveLevel) for i in scp.identifiers]
    assert levels == ["STUDY"] + ["SERIES"] * len(january)
    assert all("Modality" not in i for i in scp.identifiers[:1])  # series key kept below
    assert sorted(s.SeriesInstanceUID for s in series) == sorted(
        s.series_instance_uid for s in expected
    )
    for match in series:
        study = corpus.study(match.StudyInstanceUID)
        assert match.QueryRetrieveLevel == "SERIES"
        assert match.StudyDescription == study.study_description  # from the STUDY match
        assert match.StudyDate == study.study_date
        assert str(match.PatientName) == study.patient_name
    assert helper.result is not None
    assert helper.result.queries == 1 + len(january) and helper.result.matches == len(expected)


async def test_find_series_patient_root_and_session(
    make_scp: Callable[..., Scp], corpus: Corpus
) -> None:
    scp = make_scp(responder=by_level(load_datasets(corpus.instances)))
    patient = corpus.patient("AIO0001")
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        context = ContextProposal(PATIENT_ROOT_FIND, UNCOMPRESSED_TRANSFER_SYNTAXES)
        async with peer.associate([context]) as session:
            series = await session.find_series(
                model=QueryModel.PATIENT_ROOT, PatientID="AIO0001"
            ).all()
            images = await session.find_images(
                model=QueryModel.PATIENT_ROOT, PatientID="AIO0001", SeriesNumber="2"
            ).all()
    assert scp.associations == 1
    assert sorted(s.SeriesInstanceUID for s in series) == sorted(
        s.series_instance_uid for s in patient.series
    )
    second = [s for s in patient.series if s.series_number == 2]
    assert sorted(i.SOPInstanceUID for i in images) == sorted(
        i.sop_instance_uid for s in second for i in s.instances
    )
    assert all(i.PatientID == "AIO0001" and i.SeriesNumber == 2 for i in images)


async def test_find_series_cancel_stops_the_running_find(
    make_scp: Callable[..., Scp],
) -> None:
    records = []
    for i in range(200):
        ds = study_records(1)[0]
        ds.SeriesInstanceUID = f"1.2.3.{i}"
        ds.Modality = "CT"
        ds.SeriesNumber = i
        records.append(ds)
    scp = make_scp(responder=by_level(records), delay=0.01)
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        async with peer.associate([STUDY_CONTEXT]) as session:
            helper = session.find_series(PatientID="P0000")
            # Each level is read whole before yielding, so a cancel reaches the SERIES C-FIND
            # while it streams (200 answers, 10 ms apart), not after the first match.
            with anyio.move_on_after(0.5) as scope:
                async with helper:
                    async for _ in helper:
                        pytest.fail("a level is yielded only once read whole")
            assert scope.cancelled_caught
            assert helper.result is not None and helper.result.cancelled
            assert len(await session.find(Query.study(PatientID="P0000")).all()) == 1
    assert [str(i.QueryRetrieveLevel) for i in scp.identifiers] == ["STUDY", "SERIES", "STUDY"]
    assert len(scp.cancels) == 1 and scp.cancelled == [scp.cancels[0].message_id_being_responded_to]


async def test_find_series_merges_text_from_another_character_set(
    make_scp: Callable[..., Scp],
) -> None:
    study = study_records(1, name="山田^太郎")[0]
    study.SpecificCharacterSet = "ISO_IR 192"
    study.StudyDescription = "腹部"
    series = Dataset()
    series.SpecificCharacterSet = "ISO_IR 100"  # cannot hold the study's text
    series.StudyInstanceUID = study.StudyInstanceUID
    series.SeriesInstanceUID = "1.2.3.9"
    series.SeriesDescription = "Bäcken"
    series.Modality = "CT"
    series.SeriesNumber = 1

    def respond(identifier: Dataset) -> Answers:
        record = study if identifier.QueryRetrieveLevel == "STUDY" else series
        yield 0xFF00, response_identifier(identifier, record)

    scp = make_scp(responder=respond)
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", scp.port, scp.ae_title)
        [match] = await peer.find_series(
            PatientID="P0000", StudyDescription=None, SeriesDescription=None
        ).all()
    assert str(match.PatientName) == "山田^太郎" and match.StudyDescription == "腹部"
    assert match.SeriesDescription == "Bäcken"
    # Written out again, the mix needs (and got) a character set that holds both.
    copy = decode_dataset(encode_dataset(match, EXPLICIT_VR_LE), EXPLICIT_VR_LE)
    assert str(copy.PatientName) == "山田^太郎" and copy.SeriesDescription == "Bäcken"
    assert copy.SpecificCharacterSet == "ISO_IR 192"


def test_find_series_refuses_keys_below_series() -> None:
    client = aiodicom.Client("AIOSCU")
    peer = client.peer("127.0.0.1", 1, "X")
    with pytest.raises(QueryError) as caught:
        peer.find_series(PatientID="X", SOPInstanceUID="1.2")
    assert caught.value.key == "SOPInstanceUID"


def test_no_reference_cycle_keeps_an_abandoned_find_alive() -> None:
    # The plain-break form relies on the generator being freed as soon as the loop drops it,
    # by reference counting alone.
    peer = aiodicom.Client("AIOSCU").peer("127.0.0.1", 1, "X")
    for make in (lambda: peer.find(QUERY), lambda: peer.find_series(PatientID="X")):
        generator = aiter(make())  # the Find itself is dropped here, as in `async for`
        alive = weakref.ref(generator)
        gc.disable()
        try:
            del generator
            assert alive() is None
        finally:
            gc.enable()


def test_errors_are_dicom_errors() -> None:
    assert issubclass(FindError, DicomError) and issubclass(QueryError, DicomError)
