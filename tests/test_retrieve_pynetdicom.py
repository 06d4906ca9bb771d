"""C-MOVE / C-GET against pynetdicom Q/R SCPs written here, for what DCMTK and Orthanc never do:
deliveries without Move Originator information, an association aborted in the middle of a
C-GET, failure and warning statuses with a Failed SOP Instance UID List.

The SCPs run in pynetdicom's threads while the test's event loop serves aiodicom.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from peers import LOOPBACK, require_module
from peers.corpus import Corpus, InstanceInfo
from pydicom import Dataset, dcmread

import aiodicom
from aiodicom.instance import Instance
from aiodicom.query import Query
from aiodicom.services.retrieve import RetrieveError
from aiodicom.sinks import DirectorySink, MemorySink

pytestmark = pytest.mark.interop

AE = "AIOSCU"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]

# What the handler does per request: the datasets to send, then optionally a final status and
# the Failed SOP Instance UID List to send with it, or "abort" after the datasets.
Plan = Callable[[Dataset], tuple[list[Dataset], int | str | None, list[str]]]
# C-FIND, when served: the matches (pending identifiers) for a request's identifier.
Finder = Callable[[Dataset], list[Dataset]]


@pytest.fixture(autouse=True)
def _pynetdicom() -> None:
    require_module("pynetdicom")


class QrScp:
    """A pynetdicom Study Root MOVE and GET SCP serving from ``instances`` (files).

    ``plan`` decides per request what is sent; by default every instance whose Study, Series
    and SOP Instance UIDs match the identifier, then success. ``destinations`` maps move
    destination AE titles to (host, port).
    """

    def __init__(
        self,
        instances: Sequence[InstanceInfo],
        *,
        ae_title: str = "PYQR",
        destinations: dict[str, tuple[str, int]] | None = None,
        plan: Plan | None = None,
        finder: Finder | None = None,
    ) -> None:
        self.instances = list(instances)
        self.finder = finder
        self.ae_title = ae_title
        self.destinations = dict(destinations or {})
        self.plan = plan or self.matching
        self.port = 0
        self._ae: Any = None
        self.cancel_seen = threading.Event()

    def matching(self, identifier: Dataset) -> tuple[list[Dataset], int | str | None, list[str]]:
        chosen = []
        for info in self.instances:
            ok = True
            for keyword, value in (
                ("StudyInstanceUID", info.study_instance_uid),
                ("SeriesInstanceUID", info.series_instance_uid),
                ("SOPInstanceUID", info.sop_instance_uid),
            ):
                asked = identifier.get(keyword)
                if asked and value not in ([asked] if isinstance(asked, str) else list(asked)):
                    ok = False
            if ok:
                chosen.append(dcmread(info.path))
        return chosen, None, []

    def start(self) -> QrScp:
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = False
        ae.add_supported_context(STUDY_ROOT_MOVE, TRANSFER_SYNTAXES)
        ae.add_supported_context(STUDY_ROOT_GET, TRANSFER_SYNTAXES)
        if self.finder is not None:
            ae.add_supported_context(STUDY_ROOT_FIND, TRANSFER_SYNTAXES)
        for uid in {info.sop_class_uid for info in self.instances}:
            # C-GET: we send C-STOREs on the requestor's association (SCU role for storage);
            # C-MOVE: the same classes on the association we open to the destination.
            ae.add_supported_context(uid, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
            ae.add_requested_context(uid, TRANSFER_SYNTAXES)
        handlers = [
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_CONN_OPEN, _nodelay),
            (evt.EVT_DIMSE_RECV, self._on_dimse_recv),
        ]
        server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=handlers)
        self.port = int(server.server_address[1])
        self._ae = ae
        return self

    def stop(self) -> None:
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None

    def _on_dimse_recv(self, event: Any) -> None:
        command = getattr(event.message, "command_set", None)
        if command is not None and getattr(command, "CommandField", None) == 0x0FFF:
            self.cancel_seen.set()

    def _on_move(self, event: Any) -> Iterator[Any]:
        yield self.destinations.get(str(event.move_destination).strip(), (None, None))
        yield from self._sub_operations(event)

    def _on_get(self, event: Any) -> Iterator[Any]:
        yield from self._sub_operations(event)

    def _on_find(self, event: Any) -> Iterator[Any]:
        assert self.finder is not None
        for match in self.finder(event.identifier):
            yield 0xFF00, match

    def _sub_operations(self, event: Any) -> Iterator[Any]:
        datasets, final, failed = self.plan(event.identifier)
        yield len(datasets) + len(failed)
        for ds in datasets:
            yield 0xFF00, ds
        if final == "abort":
            event.assoc.abort()
            return
        if final == "hold":  # silent until the requestor cancels (bounded: a hang guard)
            self.cancel_seen.wait(30)
            answer = Dataset()
            answer.FailedSOPInstanceUIDList = failed
            yield 0xFE00, answer
            return
        if isinstance(final, int):
            answer = Dataset()
            answer.FailedSOPInstanceUIDList = failed
            yield final, answer


def _nodelay(event: Any) -> None:
    # pynetdicom leaves Nagle on; each small C-STORE response would stall ~40 ms.
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@pytest.fixture
def qr_scp() -> Iterator[Callable[..., QrScp]]:
    started: list[QrScp] = []

    def make(instances: Sequence[InstanceInfo], **kwargs: Any) -> QrScp:
        scp = QrScp(instances, **kwargs).start()
        started.append(scp)
        return scp

    yield make
    for scp in started:
        scp.stop()


@pytest.fixture
def without_originator(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's C-MOVE SCP always names the originator; these senders will not."""
    from pynetdicom.association import Association

    original = Association.send_c_store

    def send_c_store(self: Any, dataset: Any, msg_id: int = 1, priority: int = 2,
                     originator_aet: Any = None, originator_id: Any = None) -> Any:
        return original(self, dataset, msg_id, priority)

    monkeypatch.setattr(Association, "send_c_store", send_c_store)


def _series_query(info: InstanceInfo | Any) -> Query:
    return Query.series(
        StudyInstanceUID=info.study_instance_uid, SeriesInstanceUID=info.series_instance_uid
    )


class Barrier:
    """A sink wrapper that holds each retrieval's first instance until every retrieval has
    received one: the moves then certainly overlap at our acceptor."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.all_in = anyio.Event()
        self.gave_up = False

    def sink(self) -> Callable[[Instance], Awaitable[None]]:
        memory = MemorySink()
        first = [True]

        async def deliver(instance: Instance) -> None:
            if first[0]:
                first[0] = False
                self.arrived += 1
                if self.arrived == self.parties:
                    self.all_in.set()
                with anyio.move_on_after(30) as guard:  # a hang guard, never a measurement
                    await self.all_in.wait()
                self.gave_up |= guard.cancelled_caught
            await memory(instance)

        deliver.memory = memory  # type: ignore[attr-defined]
        return deliver


# ---------------------------------------------------------------------------------------------
# Routing without Move Originator Message ID
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("without_originator")
async def test_concurrent_moves_without_originator_are_routed_by_uids(
    qr_scp: Callable[..., QrScp], corpus: Corpus
) -> None:
    first, second = corpus.series[1], corpus.series[2]  # two series of one study
    received: list[Instance] = []

    # Matching by UIDs is asked for: by default a delivery must name its move.
    by_uids = aiodicom.AccessPolicy(deliveries_by_uids=True)
    async with aiodicom.Client(AE, listen_port=0, access=by_uids) as client:
        assert client.listen_port is not None
        scp = qr_scp(corpus.instances, destinations={AE: (LOOPBACK, client.listen_port)})
        peer = client.peer(LOOPBACK, scp.port, scp.ae_title)
        barrier = Barrier(2)
        sinks = [barrier.sink(), barrier.sink()]
        results: list[Any] = [None, None]

        async def move(index: int, series: Any) -> None:
            results[index] = await peer.move(_series_query(series), sink=sinks[index])

        async with anyio.create_task_group() as tg:
            tg.start_soon(move, 0, first)
            tg.start_soon(move, 1, second)
    assert not barrier.gave_up

    for result, series, sink in zip(results, (first, second), sinks, strict=True):
        expected = [i.sop_instance_uid for i in series.instances]
        assert sorted(result.completed) == sorted(expected)
        assert result.sub_operations.completed == len(expected)
        memory = sink.memory  # type: ignore[attr-defined]
        assert sorted(memory.instances) == sorted(expected)
        received.extend(memory)
    assert all(i.source_ae_title == "PYQR" for i in received)


@pytest.mark.usefixtures("without_originator")
async def test_delivery_the_move_did_not_ask_for_is_refused(
    qr_scp: Callable[..., QrScp], corpus: Corpus
) -> None:
    wanted, stray = corpus.series[1], corpus.series[4].instances[0]

    def plan(identifier: Dataset) -> tuple[list[Dataset], int | str | None, list[str]]:
        datasets = [dcmread(i.path) for i in wanted.instances] + [dcmread(stray.path)]
        return datasets, None, []

    unexpected: list[Instance] = []

    async def handler(instance: Instance) -> int:
        unexpected.append(instance)
        return 0x0124

    by_uids = aiodicom.AccessPolicy(deliveries_by_uids=True)
    async with aiodicom.Client(
        AE, listen_port=0, unexpected_deliveries=handler, access=by_uids
    ) as client:
        assert client.listen_port is not None
        scp = qr_scp(corpus.instances, destinations={AE: (LOOPBACK, client.listen_port)}, plan=plan)
        result = await client.peer(LOOPBACK, scp.port, scp.ae_title).move(_series_query(wanted))

    expected = sorted(i.sop_instance_uid for i in wanted.instances)
    assert sorted(result.completed) == expected
    # The sender counted our refusal as a failed sub-operation: Warning with the list.
    assert result.status == 0xB000 and result.ok
    assert result.failed == (stray.sop_instance_uid,)
    assert [i.sop_instance_uid for i in unexpected] == [stray.sop_instance_uid]
    assert set(result.sink.instances) == set(expected)  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# A C-GET cut short
# ---------------------------------------------------------------------------------------------


async def test_get_aborted_midway_keeps_what_arrived(
    qr_scp: Callable[..., QrScp], corpus: Corpus, tmp_path: Path
) -> None:
    series = corpus.series[0]
    kept = 3

    def plan(identifier: Dataset) -> tuple[list[Dataset], int | str | None, list[str]]:
        return [dcmread(i.path) for i in series.instances[:kept]], "abort", []

    scp = qr_scp(series.instances, plan=plan)
    sink = DirectorySink(tmp_path / "out")
    async with aiodicom.Client(AE) as client:
        with pytest.raises(RetrieveError) as caught:
            await client.peer(LOOPBACK, scp.port, scp.ae_title).get(
                _series_query(series), sink=sink
            )

    result = caught.value.result
    expected = [i.sop_instance_uid for i in series.instances[:kept]]
    assert list(result.completed) == expected
    assert result.interrupted is not None and "Abort" in result.interrupted
    assert "interrupted" in str(caught.value) and f"{kept} instance(s)" in str(caught.value)
    assert not result.cancelled and not result.ok
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert sorted(p.stem for p in files) == sorted(expected)
    assert not [p for p in files if p.name.startswith(".") or p.suffix == ".tmp"]
    # What is on disk is what the peer sent.
    for uid in expected:
        assert sink.instance(uid).dataset.SOPInstanceUID == uid


async def test_silent_peer_times_out_cancels_and_raises_with_the_result(
    qr_scp: Callable[..., QrScp], corpus: Corpus
) -> None:
    series = corpus.series[0]
    sent, held = series.instances[:2], [i.sop_instance_uid for i in series.instances[2:]]

    def plan(identifier: Dataset) -> tuple[list[Dataset], int | str | None, list[str]]:
        return [dcmread(i.path) for i in sent], "hold", held

    scp = qr_scp(series.instances, plan=plan)
    async with aiodicom.Client(AE, timeouts=aiodicom.Timeouts(dimse=1.0)) as client:
        with pytest.raises(RetrieveError) as caught:
            await client.peer(LOOPBACK, scp.port, scp.ae_title).get(_series_query(series))

    result = caught.value.result
    assert scp.cancel_seen.is_set()
    assert result.status == 0xFE00 and not result.cancelled  # we did not choose to stop
    assert result.interrupted is not None and "DicomTimeoutError" in result.interrupted
    assert list(result.completed) == [i.sop_instance_uid for i in sent]
    assert set(held) <= set(result.failed)


async def test_get_failure_status_raises_with_the_result(
    qr_scp: Callable[..., QrScp], corpus: Corpus
) -> None:
    series = corpus.series[0]
    sent, refused = series.instances[:2], [i.sop_instance_uid for i in series.instances[2:]]

    def plan(identifier: Dataset) -> tuple[list[Dataset], int | str | None, list[str]]:
        return [dcmread(i.path) for i in sent], 0xA702, refused

    scp = qr_scp(series.instances, plan=plan)
    async with aiodicom.Client(AE) as client:
        with pytest.raises(RetrieveError) as caught:
            await client.peer(LOOPBACK, scp.port, scp.ae_title).get(_series_query(series))

    result = caught.value.result
    assert caught.value.status == result.status == 0xA702
    assert "unable to perform sub-operations" in result.status_text
    assert list(result.completed) == [i.sop_instance_uid for i in sent]
    assert set(refused) <= set(result.failed)
    assert result.bytes_received == sum(
        len(memoryview(i.data)) for i in result.instances()
    ) > 0


async def test_sink_failure_is_a_failed_sub_operation(
    qr_scp: Callable[..., QrScp], corpus: Corpus
) -> None:
    series = corpus.series[0]
    bad = series.instances[1].sop_instance_uid
    memory = MemorySink()

    async def picky(instance: Instance) -> None:
        if instance.sop_instance_uid == bad:
            raise ValueError("not this one")
        await memory(instance)

    scp = qr_scp(series.instances)
    async with aiodicom.Client(AE) as client:
        result = await client.peer(LOOPBACK, scp.port, scp.ae_title).get(
            _series_query(series), sink=picky
        )

    assert result.status == 0xB000 and result.ok  # warning: returned, not raised
    assert result.failed == (bad,)
    assert bad not in result.completed and len(result.completed) == len(series.instances) - 1
    assert result.sub_operations.failed == 1
    assert set(memory.instances) == set(result.completed)
    with pytest.raises(TypeError, match="does not keep them"):
        result.instances()


# ---------------------------------------------------------------------------------------------
# Move Originator present: several moves of the SAME series at once
# ---------------------------------------------------------------------------------------------


async def test_same_series_twice_at_once_routed_by_message_id(
    qr_scp: Callable[..., QrScp], corpus: Corpus
) -> None:
    series = corpus.series[3]
    lock = threading.Lock()
    identifiers: list[Dataset] = []

    def plan(identifier: Dataset) -> tuple[list[Dataset], int | str | None, list[str]]:
        with lock:
            identifiers.append(identifier)
        return [dcmread(i.path) for i in series.instances], None, []

    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        scp = qr_scp(corpus.instances, destinations={AE: (LOOPBACK, client.listen_port)}, plan=plan)
        peer = client.peer(LOOPBACK, scp.port, scp.ae_title)
        barrier = Barrier(2)
        sinks = [barrier.sink(), barrier.sink()]
        results: list[Any] = [None, None]

        async def move(index: int) -> None:
            results[index] = await peer.move(_series_query(series), sink=sinks[index])

        async with anyio.create_task_group() as tg:
            tg.start_soon(move, 0)
            tg.start_soon(move, 1)
    assert not barrier.gave_up

    expected = sorted(i.sop_instance_uid for i in series.instances)
    for result, sink in zip(results, sinks, strict=True):
        assert sorted(result.completed) == expected
        assert sorted(sink.memory.instances) == expected  # type: ignore[attr-defined]
    assert len(identifiers) == 2


def _ignoring_series_description(corpus: Corpus) -> Finder:
    """A C-FIND that, like dcmqrscp, neither matches nor returns SeriesDescription."""

    def find(identifier: Dataset) -> list[Dataset]:
        level = identifier.QueryRetrieveLevel
        out: dict[str, Dataset] = {}
        for study in corpus.studies:
            for series in study.series:
                for info in series.instances:
                    values = {
                        "PatientID": info.patient_id, "StudyDate": study.study_date,
                        "StudyInstanceUID": info.study_instance_uid,
                        "SeriesInstanceUID": info.series_instance_uid,
                        "SOPInstanceUID": info.sop_instance_uid,
                        "SOPClassUID": info.sop_class_uid, "Modality": series.modality,
                    }
                    if any(
                        identifier.get(keyword) not in (None, "", value)
                        for keyword, value in values.items()
                    ):
                        continue
                    match = Dataset()
                    match.QueryRetrieveLevel = level
                    for elem in identifier:
                        if elem.keyword in values:
                            setattr(match, elem.keyword, values[elem.keyword])
                    unique = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID"}.get(
                        level, "SOPInstanceUID"
                    )
                    out.setdefault(values[unique], match)
        return list(out.values())

    return find


async def test_retrieve_series_falls_back_to_the_whole_series_when_uid_lists_are_refused(
    qr_scp: Callable[..., QrScp], corpus: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    # List matching on SOP Instance UID is optional (PS3.4 C.2.2.2.3): this peer refuses it.
    series = next(s for study in corpus.studies for s in study.series if len(s.instances) >= 3)
    requests: list[Dataset] = []

    def plan(identifier: Dataset) -> tuple[list[Dataset], int | str | None, list[str]]:
        requests.append(identifier)
        asked = identifier.get("SOPInstanceUID")
        if asked is not None and not isinstance(asked, str):
            return [], 0xC000, list(asked)
        return QrScp.matching(scp, identifier)

    scp = qr_scp(series.instances, plan=plan, finder=_ignoring_series_description(corpus))
    async with aiodicom.Client(AE) as client:
        selection = await client.peer(LOOPBACK, scp.port, scp.ae_title).retrieve_series(
            method="get", StudyInstanceUID=series.study_instance_uid,
            SeriesInstanceUID=series.series_instance_uid,
            SeriesDescription=series.series_description,
        )

    (retrieved,) = selection.series
    assert sorted(i.sop_instance_uid for i in retrieved.instances) == sorted(
        i.sop_instance_uid for i in series.instances
    )
    # The probe alone, the refused UID list, then the series whole (the probe crosses twice).
    assert [str(r.QueryRetrieveLevel) for r in requests] == ["IMAGE", "IMAGE", "SERIES"]
    assert len(requests[1].SOPInstanceUID) == len(series.instances) - 1
    (candidate,) = selection.selected
    assert candidate.retrieval is not None and candidate.retrieval.ok
    # The ignored SeriesDescription was checked on a probe: no warning that it was ignored.
    assert selection.ignored_keys == ("SeriesDescription",)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


async def test_retrieve_series_falls_back_when_a_uid_list_silently_matches_nothing(
    qr_scp: Callable[..., QrScp], corpus: Corpus
) -> None:
    series = next(s for study in corpus.studies for s in study.series if len(s.instances) >= 3)
    levels: list[str] = []

    def plan(identifier: Dataset) -> tuple[list[Dataset], int | str | None, list[str]]:
        levels.append(str(identifier.QueryRetrieveLevel))
        if not isinstance(identifier.get("SOPInstanceUID", ""), str):
            return [], None, []  # success, zero sub-operations
        return QrScp.matching(scp, identifier)

    scp = qr_scp(series.instances, plan=plan, finder=_ignoring_series_description(corpus))
    async with aiodicom.Client(AE) as client:
        selection = await client.peer(LOOPBACK, scp.port, scp.ae_title).retrieve_series(
            method="get", StudyInstanceUID=series.study_instance_uid,
            SeriesDescription=series.series_description,
        )
    (retrieved,) = selection.series
    assert len(retrieved.instances) == len(series.instances)
    assert levels == ["IMAGE", "IMAGE", "SERIES"]
