"""C-MOVE and C-GET SCU (PS3.4 C.4.2, C.4.3): instances into a sink, progress as events.

A :class:`Retrieval` can be awaited for its :class:`RetrieveResult`, or entered with ``async with``
and iterated for :class:`Progress` and :class:`InstanceArrived` events as they happen. C-GET
instances arrive as C-STORE requests on the retrieval's own association (routed to us by the
dispatcher); C-MOVE instances arrive at the client's acceptor and are routed here by
:class:`aiodicom.routing.DeliveryRouter`. Either way an instance is handed to the sink before the
sender is told it was stored, so every instance the peer counts as completed is in the sink.

Leaving ``async with`` early, or cancelling the awaiting task, sends C-CANCEL and waits (bounded)
for the peer's final response; :attr:`Retrieval.result` then says what arrived. A failure status,
or an association that ends before the final response, raises :class:`RetrieveError` whose
``result`` holds the same account.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydicom import Dataset

from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.dimse import (
    C_ECHO_RQ,
    C_GET_RQ,
    C_MOVE_RQ,
    C_STORE_RQ,
    C_STORE_RSP,
    DATASET_PRESENT,
    NO_DATASET,
    DataSetOpener,
    DataSetWriter,
    DimseMessage,
)
from aiodicom.errors import DicomError, DicomTimeoutError, DimseError, QueryError, StatusError
from aiodicom.instance import Instance
from aiodicom.model import QueryModel
from aiodicom.negotiation import PresentationContext
from aiodicom.query import Query
from aiodicom.query import retrieve_identifier as identifier_for_retrieve
from aiodicom.series import Series, SeriesError, split_series
from aiodicom.services.cancel import CANCEL_TIMEOUT, cancel_operation
from aiodicom.services.echo import echo_response
from aiodicom.sinks import DirectorySink, MemorySink, Sink, as_sink
from aiodicom.spool import SpooledFile
from aiodicom.status import StatusCategory, status_category, status_meaning

if TYPE_CHECKING:
    from aiodicom.routing import DeliveryRouter
    from aiodicom.session import Session

log = logging.getLogger("aiodicom.retrieve")

NOT_AUTHORIZED = 0x0124
"""C-STORE status for a delivery no retrieval wants (PS3.7 C.5.8: Refused, not authorized)."""
NO_FINAL_RESPONSE = 0xC000
"""The status a result carries when the association ended before the peer's final response
(:attr:`RetrieveResult.interrupted` then says why): a failure, as nothing confirms the rest."""


@attrs.frozen
class Progress:
    """A pending response: the peer's sub-operation counts (``None`` where it sent none)."""

    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None


@attrs.frozen
class InstanceArrived:
    """An instance was handed to the sink."""

    instance: Instance


RetrieveEvent = Progress | InstanceArrived


@attrs.frozen
class RetrieveResult:
    """How a C-MOVE or C-GET ended, and what arrived."""

    status: int
    """The final status; :data:`NO_FINAL_RESPONSE` when none came (see :attr:`interrupted`)."""
    status_text: str
    error_comment: str | None
    completed: tuple[str, ...]
    """SOP Instance UIDs that arrived and were stored by the sink, in arrival order. Empty for
    a C-MOVE to another AE: only the peer's counts (:attr:`sub_operations`) tell then."""
    failed: tuple[str, ...]
    """The peer's Failed SOP Instance UID List (0008,0058) plus instances we could not store."""
    warning: tuple[str, ...]
    bytes_received: int
    """Data set bytes of the instances in :attr:`completed`."""
    sub_operations: Progress
    """The peer's last reported counts."""
    cancelled: bool = False
    """We cancelled (left ``async with`` early, or the task was cancelled)."""
    interrupted: str | None = None
    """Why the retrieval ended without its normal course (association aborted or closed,
    DIMSE timeout); ``None`` otherwise."""
    sink: Sink | MemorySink | DirectorySink | None = attrs.field(
        default=None, eq=False, repr=False
    )
    """Where the instances went."""

    @property
    def ok(self) -> bool:
        return status_category(self.status) in (StatusCategory.SUCCESS, StatusCategory.WARNING)

    def instances(self) -> list[Instance]:
        """The instances in :attr:`completed`, from a :class:`MemorySink` or read back from the
        files of a :class:`DirectorySink` (other sinks keep nothing we could give back)."""
        sink = self.sink
        if isinstance(sink, MemorySink):
            return [sink.instances[uid] for uid in self.completed if uid in sink.instances]
        if isinstance(sink, DirectorySink):
            return [sink.instance(uid) for uid in self.completed if uid in sink.paths]
        raise TypeError(
            f"the instances went to {sink!r}, which does not keep them: retrieve into a "
            "MemorySink or a DirectorySink to get them back from the result"
        )

    def series(self, series_instance_uid: str | None = None) -> Series:
        """The instances that arrived as a :class:`~aiodicom.series.Series` (e.g. for
        ``.to_sitk()``). Without ``series_instance_uid`` exactly one series must have arrived."""
        groups = split_series(self.instances())
        if series_instance_uid is not None:
            if series_instance_uid not in groups:
                raise SeriesError(f"no instance of series {series_instance_uid} arrived")
            return groups[series_instance_uid]
        if len(groups) != 1:
            found = ", ".join(sorted(groups)) or "none"
            raise SeriesError(
                f"{len(groups)} series arrived ({found}): name one with series(uid)"
            )
        return next(iter(groups.values()))


class RetrieveError(StatusError):
    """A retrieval ended with a failure status (or was cut short); ``result`` has what arrived."""

    def __init__(self, result: RetrieveResult, message: str | None = None) -> None:
        super().__init__(result.status, result.status_text, result.error_comment)
        self.result = result
        if message:
            self.args = (message,)


class MoveDestinationUnknown(RetrieveError):
    """The PACS does not know the AE title we asked it to send to."""


def _model_of(sop_class_uid: str | None) -> QueryModel | None:
    for model in QueryModel:
        if sop_class_uid is not None and sop_class_uid in (
            model.move_sop_class, model.get_sop_class
        ):
            return model
    return None


def retrieve_model(query: Query | Dataset) -> QueryModel:
    """The information model to retrieve ``query`` with: a :class:`Query`'s own; for a C-FIND
    match, which does not say, Patient Root at PATIENT level and Study Root otherwise."""
    if isinstance(query, Query):
        return query.model
    return QueryModel.PATIENT_ROOT if query.get("QueryRetrieveLevel") == "PATIENT" \
        else QueryModel.STUDY_ROOT


def retrieve_sop_class(model: QueryModel, kind: Literal["move", "get"]) -> str:
    """The Move or Get SOP Class UID of ``model``; :class:`QueryError` for the worklist."""
    uid = model.move_sop_class if kind == "move" else model.get_sop_class
    if uid is None:
        raise QueryError(f"the {model.value} model has no C-{kind.upper()}")
    return uid


def retrieve_identifier(query: Query | Dataset, sop_class_uid: str | None = None) -> Dataset:
    """The C-MOVE/C-GET identifier of a :class:`Query` or a C-FIND match, for the model whose
    Move or Get SOP class is ``sop_class_uid``: see :func:`aiodicom.query.retrieve_identifier`.
    """
    return identifier_for_retrieve(query, _model_of(sop_class_uid))


def store_response(request: DimseMessage, status: int) -> DimseMessage:
    return DimseMessage(
        request.context_id,
        {
            "CommandField": C_STORE_RSP,
            "MessageIDBeingRespondedTo": request.message_id,
            "AffectedSOPClassUID": request.command.get("AffectedSOPClassUID"),
            "AffectedSOPInstanceUID": request.command.get("AffectedSOPInstanceUID"),
            "CommandDataSetType": NO_DATASET,
            "Status": status,
        },
        None,
    )


def _unrecognized_response(request: DimseMessage) -> DimseMessage:
    return DimseMessage(
        request.context_id,
        {
            "CommandField": request.command_field | 0x8000,
            "MessageIDBeingRespondedTo": request.message_id,
            "CommandDataSetType": NO_DATASET,
            "Status": 0x0211,  # Unrecognized operation: the association lives on
        },
        None,
    )


def instance_from_request(
    request: DimseMessage, transfer_syntax_uid: str, source_ae_title: str | None
) -> Instance:
    if request.data is None:
        raise DimseError("C-STORE-RQ without a data set")
    spool = request.writer if isinstance(request.writer, SpooledFile) else None
    if spool is not None and spool.error is not None:
        raise SpoolError(f"could not write the received data set to disk: {spool.error}")
    return Instance(
        sop_class_uid=str(request.command.get("AffectedSOPClassUID", "")),
        sop_instance_uid=str(request.command.get("AffectedSOPInstanceUID", "")),
        transfer_syntax_uid=transfer_syntax_uid,
        data=request.data,
        source_ae_title=source_ae_title,
        spool=spool,
    )


class SpoolError(DimseError):
    """A data set written to disk while it arrived could not be written whole."""


def release_spool(request: DimseMessage) -> None:
    """Remove the temporary file of a C-STORE whose instance was not kept (refused, failed)."""
    if isinstance(request.writer, SpooledFile) and not request.writer.committed:
        request.writer.discard()


def spool_opener(
    retrieval: Retrieval, contexts: Mapping[int, PresentationContext], source_ae_title: str | None
) -> DataSetOpener:
    """Writes the C-STOREs of ``retrieval`` straight to files when its sink is a directory."""

    def open_data(context_id: int, command: dict[str, object]) -> DataSetWriter | None:
        if retrieval.closed:
            return None
        return spool_for(retrieval.sink, contexts.get(context_id), command, source_ae_title)

    return open_data


def spool_for(
    sink: object, context: PresentationContext | None, command: dict[str, object],
    source_ae_title: str | None,
) -> DataSetWriter | None:
    """A writer putting the data set of a C-STORE-RQ straight into a file of ``sink`` when it
    is a DirectorySink; ``None`` (received in memory) otherwise."""
    if not isinstance(sink, DirectorySink) or command.get("CommandField") != C_STORE_RQ:
        return None
    if context is None or context.transfer_syntax is None:
        return None
    return sink.open_spool(
        str(command.get("AffectedSOPClassUID", "")),
        str(command.get("AffectedSOPInstanceUID", "")),
        context.transfer_syntax,
        source_ae_title,
    )


MatchCounter = Callable[[Dataset], Awaitable[int]]
"""Counts (by C-FIND) what a retrieve identifier matches at the peer."""


class Retrieval:
    """A C-MOVE or C-GET; await it, or ``async with`` it and iterate its events.

    ``router``: the client's :class:`~aiodicom.routing.DeliveryRouter`, for a C-MOVE whose
    instances come to our own acceptor. ``destination_address``: our acceptor's (host, port),
    named in the error when the PACS does not know the destination. ``count_matches``: used
    only to tell, after a bare 0xC000 refusal, whether the PACS holds what we asked for.
    """

    def __init__(
        self,
        kind: Literal["move", "get"],
        query: Query | Dataset,
        *,
        sop_class_uid: str,
        sink: Sink | MemorySink | DirectorySink | None = None,
        session: Session | None = None,
        open_session: Callable[[Retrieval], AbstractAsyncContextManager[Session]] | None = None,
        destination: str | None = None,
        router: DeliveryRouter | None = None,
        destination_address: tuple[str, int] | None = None,
        count_matches: MatchCounter | None = None,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> None:
        if (session is None) == (open_session is None):
            raise TypeError("give exactly one of session and open_session")
        if kind == "move" and not destination:
            raise TypeError("a C-MOVE needs a destination AE title")
        self.kind = kind
        self.identifier = retrieve_identifier(query, sop_class_uid)
        self.sop_class_uid = sop_class_uid
        self.sink = sink if sink is not None else MemorySink()
        self._deliver = as_sink(self.sink)
        self._session = session
        self._open_session = open_session
        self.destination = destination
        self._router = router
        self.destination_address = destination_address
        self._count_matches = count_matches
        self.priority = priority
        self.cancel_timeout = cancel_timeout
        self.message_id: int | None = None
        self.peer_ae_title: str | None = None
        """The AE title we called (the PACS's)."""
        self.calling_ae_title: str | None = None
        """Our own AE title on the association."""
        self.result: RetrieveResult | None = None
        self._completed: list[str] = []
        self._local_failures: list[str] = []
        # PS3.4 gives no UID list for warning sub-operations; only our own stores could add here.
        self._warnings: list[str] = []
        self._bytes = 0
        self._last_activity = 0.0
        self._inflight = 0
        self._idle: anyio.Event | None = None
        self._closed = False
        self._events: MemoryObjectSendStream[RetrieveEvent] | None = None
        self._receive_events: MemoryObjectReceiveStream[RetrieveEvent] | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._failure: DicomError | None = None

    @property
    def closed(self) -> bool:
        """The result is being written: instances arriving now are refused."""
        return self._closed

    @property
    def expects_delivery(self) -> bool:
        """Instances of this retrieval come to our acceptor (a C-MOVE to ourselves)."""
        return self._router is not None

    # --- ways to use it -----------------------------------------------------------------------

    def __await__(self) -> Generator[object, None, RetrieveResult]:
        return self._drive().__await__()

    async def __aenter__(self) -> Retrieval:
        send, receive = anyio.create_memory_object_stream[RetrieveEvent](64)
        self._events, self._receive_events = send, receive
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._drive_keeping_failure, send)
        return self

    async def _drive_keeping_failure(self, send: MemoryObjectSendStream[RetrieveEvent]) -> None:
        with send:
            try:
                await self._drive()
            except DicomError as exc:
                self._failure = exc

    def __aiter__(self) -> AsyncIterator[RetrieveEvent]:
        if self._receive_events is None:
            raise RuntimeError(
                "iterate a retrieval inside 'async with': async with peer.move(...) as r"
            )
        return self._iterate(self._receive_events)

    async def _iterate(
        self, events: MemoryObjectReceiveStream[RetrieveEvent]
    ) -> AsyncIterator[RetrieveEvent]:
        async for event in events:
            yield event
        if self._failure is not None:
            raise self._failure

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tasks is not None and self._receive_events is not None
        self._receive_events.close()  # no one listens any more: the driver must not wait on us
        if exc_type is not None or self.result is None:
            # Left early: the driver's cancellation sends C-CANCEL and drains (bounded).
            self._tasks.cancel_scope.cancel()
        suppress = await self._tasks.__aexit__(exc_type, exc, tb)
        if exc_type is None and self._failure is not None:
            raise self._failure
        return suppress

    # --- instances ------------------------------------------------------------------------------

    async def _emit(self, event: RetrieveEvent) -> None:
        if self._events is not None:
            try:
                await self._events.send(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._events = None

    async def accept_instance(self, instance: Instance) -> int:
        """Hand one arrived instance to the sink; the status to answer its C-STORE with."""
        if self._closed:
            # The result is written: an instance stored now would be in the sink but not in it.
            return NOT_AUTHORIZED
        self._inflight += 1
        try:
            return await self._store(instance)
        finally:
            self._inflight -= 1
            if self._inflight == 0 and self._idle is not None:
                self._idle.set()

    def record_local_failure(self, sop_instance_uid: str) -> None:
        """An instance of this retrieval arrived but could not be kept."""
        self._local_failures.append(sop_instance_uid)

    async def _store(self, instance: Instance) -> int:
        self._last_activity = anyio.current_time()
        uid = instance.sop_instance_uid
        try:
            await self._deliver(instance)
        except OSError as exc:
            log.error("could not store %s: %s", uid, exc)
            self._local_failures.append(uid)
            return 0xA700  # Refused: out of resources
        except Exception as exc:
            log.error("sink refused %s: %s", uid, exc)
            self._local_failures.append(uid)
            return 0xC000  # Error: cannot understand
        self._completed.append(uid)
        self._bytes += memoryview(instance.data).nbytes
        await self._emit(InstanceArrived(instance))
        return 0x0000

    async def _settle(self) -> None:
        """Refuse further instances and wait for those being stored (a C-MOVE's deliveries run
        in the acceptor's tasks), so that the result and the sink agree. A sink that hangs
        must not make the retrieval hang: the wait is bounded like a cancel's."""
        self._closed = True
        with anyio.move_on_after(self.cancel_timeout):
            while self._inflight:
                self._idle = anyio.Event()
                await self._idle.wait()
        if self._inflight:
            log.warning(
                "%s: %d instance(s) still in the sink after %s s are left out of the result",
                self._what(), self._inflight, self.cancel_timeout,
            )

    async def handle_request(self, request: DimseMessage, session: Session) -> None:
        """A request the peer sends on a C-GET's association: its C-STORE sub-operations."""
        association = session.association
        if request.command_field == C_ECHO_RQ:
            await association.send_message(echo_response(request))
            return
        if request.command_field != C_STORE_RQ:
            log.warning("refused %s on a C-GET association", request.name)
            await association.send_message(_unrecognized_response(request))
            return
        context = association.contexts.get(request.context_id)
        if context is None or context.transfer_syntax is None:
            status = 0x0122  # Refused: SOP class not supported
        else:
            peer = association.request
            try:
                instance = instance_from_request(
                    request, context.transfer_syntax, peer.called_ae_title if peer else None
                )
            except SpoolError as exc:
                uid = str(request.command.get("AffectedSOPInstanceUID", ""))
                log.error("could not store %s: %s", uid, exc)
                self.record_local_failure(uid)
                status = 0xA700  # Refused: out of resources
            except DimseError as exc:
                log.warning("malformed C-STORE during a C-GET: %s", exc)
                status = 0xC000  # Error: cannot understand; the C-GET goes on
            else:
                status = await self.accept_instance(instance)
            finally:
                release_spool(request)
        await association.send_message(store_response(request, status))

    # --- the work -----------------------------------------------------------------------------

    async def _drive(self) -> RetrieveResult:
        async with AsyncExitStack() as stack:
            session = self._session
            if session is None:
                assert self._open_session is not None
                session = await stack.enter_async_context(self._open_session(self))
            request = session.association.request
            self.peer_ae_title = request.called_ae_title if request else None
            self.calling_ae_title = request.calling_ae_title if request else None
            if self.kind == "get":
                dispatcher = session.dispatcher
                previous = dispatcher.request_handler
                dispatcher.request_handler = lambda message: self.handle_request(message, session)
                stack.callback(setattr, dispatcher, "request_handler", previous)
                association = session.association
                previous_opener = association.open_data
                association.open_data = spool_opener(
                    self, association.contexts, self.peer_ae_title
                )
                stack.callback(setattr, association, "open_data", previous_opener)
            result, failure = await self._exchange(session)
        if failure is not None:
            raise RetrieveError(result, self._interrupted_message(result)) from failure
        return await self._check(result)

    async def _exchange(self, session: Session) -> tuple[RetrieveResult, DicomError | None]:
        dispatcher = session.dispatcher
        context = session.association.context(self.sop_class_uid)
        transfer_syntax = context.transfer_syntax
        assert transfer_syntax is not None
        command: dict[str, object] = {
            "CommandField": C_MOVE_RQ if self.kind == "move" else C_GET_RQ,
            "AffectedSOPClassUID": self.sop_class_uid,
            "Priority": self.priority,
            "CommandDataSetType": DATASET_PRESENT,
        }
        if self.kind == "move":
            command["MoveDestination"] = self.destination
        router = self._router
        # Deliveries are matched by this Message ID, so it comes from the client-wide router.
        wanted_id = router.allocate_message_id() if router is not None else None
        async with dispatcher.operation(wanted_id) as message_id:
            self.message_id = message_id
            expecting = router.expecting(self) if router is not None else nullcontext()
            async with expecting:
                command["MessageID"] = message_id
                await dispatcher.send(DimseMessage(
                    context.context_id, command,
                    encode_dataset(self.identifier, transfer_syntax),
                ))
                counts = Progress(None, None, None, None)
                final: DimseMessage | None = None
                failure: DicomError | None = None
                cancelled = False
                try:
                    while final is None:
                        response = await self._next_response(session, message_id)
                        status = response.status_code
                        counts = _counts(response, counts)
                        if status_category(status) is StatusCategory.PENDING:
                            await self._emit(counts)
                        else:
                            final = response
                except DicomError as exc:
                    failure = exc
                finally:
                    with anyio.CancelScope(shield=True):
                        if final is None:
                            # No failure means we were cancelled (or a non-DICOM error).
                            cancelled = failure is None
                            if not dispatcher.ended:
                                final = await cancel_operation(
                                    session, context.context_id, message_id,
                                    self.cancel_timeout, f"C-{self.kind.upper()}",
                                )
                            if final is not None:
                                counts = _counts(final, counts)
                        await self._settle()
                    self.result = self._result(
                        final, counts, cancelled, transfer_syntax, failure
                    )
        return self.result, failure

    async def _next_response(self, session: Session, message_id: int) -> DimseMessage:
        """Wait for a response; instances arriving count as activity for the DIMSE timeout,
        since a peer may send no pending response until every sub-operation is done."""
        queued = session.dispatcher.take_queued(message_id)
        if queued is not None:
            return queued  # already here: no timeout to run
        timeout = session.association.timeouts.dimse
        self._last_activity = anyio.current_time()
        while True:
            with anyio.move_on_after(timeout):
                return await session.dispatcher.next_response(message_id, timeout=None)
            assert timeout is not None
            if anyio.current_time() - self._last_activity >= timeout:
                raise DicomTimeoutError(
                    f"no response and no instance for {timeout} s during C-{self.kind.upper()}"
                )

    def _result(
        self,
        final: DimseMessage | None,
        counts: Progress,
        cancelled: bool,
        transfer_syntax: str,
        failure: DicomError | None,
    ) -> RetrieveResult:
        failed_remote: list[str] = []
        interrupted = f"{type(failure).__name__}: {failure}" if failure is not None else None
        if final is None:
            if cancelled:
                status = 0xFE00
                status_text = status_meaning(status, self.kind)
                comment: str | None = "the peer did not confirm the cancel; association aborted"
            else:
                status = NO_FINAL_RESPONSE
                status_text = "Failed: the association ended before the final response"
                comment = None
        else:
            status = final.status_code
            status_text = status_meaning(status, self.kind)
            raw = final.command.get("ErrorComment")
            comment = str(raw) if raw else None
            failed_remote = _failed_list(final, transfer_syntax)
        completed = tuple(dict.fromkeys(self._completed))
        failed = tuple(dict.fromkeys(failed_remote + self._local_failures))
        return RetrieveResult(
            status=status,
            status_text=status_text,
            error_comment=comment,
            completed=completed,
            failed=failed,
            warning=tuple(self._warnings),
            bytes_received=self._bytes,
            sub_operations=counts,
            cancelled=cancelled,
            interrupted=interrupted,
            sink=self.sink,
        )

    # --- telling what went wrong ----------------------------------------------------------------

    def _what(self) -> str:
        peer = f" from {self.peer_ae_title}" if self.peer_ae_title else ""
        return f"C-{self.kind.upper()}{peer}"

    def _interrupted_message(self, result: RetrieveResult) -> str:
        arrived = len(result.completed)
        reported = result.sub_operations
        told = ""
        if reported.remaining is not None:
            told = f"; the peer had last reported {reported.remaining} sub-operation(s) remaining"
        return (
            f"{self._what()} interrupted ({result.interrupted}): {arrived} instance(s) had "
            f"arrived and are in the sink (see .result.completed){told}"
        )

    def _refused_before_start(self, result: RetrieveResult) -> bool:
        """A bare Cxxx failure: no sub-operation counted, nothing arrived, no comment."""
        counts = result.sub_operations
        return (
            (result.status & 0xF000) == 0xC000
            and not result.error_comment
            and not result.completed
            and not result.failed
            and not any((counts.completed, counts.failed, counts.warning, counts.remaining))
        )

    def _destination_advice(self) -> str:
        where = "its host and port"
        if self.destination_address is not None:
            host, port = self.destination_address
            shown = "this machine's address" if host in ("0.0.0.0", "::", "") else f"host {host}"
            where = f"{shown} and port {port}"
        return (
            f"Configure AE title {self.destination!r} with {where} in the PACS's list of DICOM "
            "nodes (DCMTK dcmqrscp: HostTable in its configuration file; Orthanc: "
            "DicomModalities), or retrieve with C-GET instead."
        )

    async def _check(self, result: RetrieveResult) -> RetrieveResult:
        category = status_category(result.status)
        if result.cancelled or category in (StatusCategory.SUCCESS, StatusCategory.WARNING):
            if category is StatusCategory.WARNING:
                log.warning(
                    "%s ended with 0x%04X (%s): %d failed", self._what(), result.status,
                    result.status_text, len(result.failed),
                )
            return result
        if category is StatusCategory.CANCEL:
            raise RetrieveError(result, (
                f"{self._what()} ended with 0xFE00 (cancelled) though we did not cancel: "
                f"{len(result.completed)} instance(s) arrived"
            ))
        if self.kind == "move" and result.status == 0xA801:
            raise MoveDestinationUnknown(result, (
                f"{self._what()} refused with 0xA801 (move destination unknown): the PACS does "
                f"not know the AE title {self.destination!r}. " + self._destination_advice()
            ))
        if self.kind == "move" and self._refused_before_start(result):
            matches = await self._matches_at_peer()
            if matches:
                # Orthanc answers 0xC000 alike for an unknown or unreachable destination and for
                # an identifier matching nothing; a C-FIND tells the two apart.
                raise MoveDestinationUnknown(result, (
                    f"{self._what()} failed with 0x{result.status:04X} before any "
                    f"sub-operation, though the PACS holds {matches} match(es) for the "
                    "identifier (checked with C-FIND): it does not know the move destination "
                    f"{self.destination!r}, or cannot connect to the address it has for it. "
                    + self._destination_advice()
                ))
            if matches == 0:
                raise RetrieveError(result, (
                    f"{self._what()} failed with 0x{result.status:04X}: the PACS holds nothing "
                    f"matching the identifier ({_describe_identifier(self.identifier)})"
                ))
        raise RetrieveError(result)

    async def _matches_at_peer(self) -> int | None:
        if self._count_matches is None:
            return None
        try:
            return await self._count_matches(self.identifier)
        except (DicomError, ValueError) as exc:
            log.info("could not check the C-MOVE identifier with C-FIND: %s", exc)
            return None


def _describe_identifier(identifier: Dataset) -> str:
    parts: list[str] = []
    for element in identifier:
        if element.keyword != "SpecificCharacterSet":
            parts.append(f"{element.keyword}={element.value}")
    return ", ".join(parts)


def _counts(response: DimseMessage, previous: Progress) -> Progress:
    def pick(keyword: str, old: int | None) -> int | None:
        value = response.command.get(keyword)
        return value if isinstance(value, int) else old

    return Progress(
        pick("NumberOfRemainingSuboperations", None),
        pick("NumberOfCompletedSuboperations", previous.completed),
        pick("NumberOfFailedSuboperations", previous.failed),
        pick("NumberOfWarningSuboperations", previous.warning),
    )


def _failed_list(response: DimseMessage, transfer_syntax: str) -> list[str]:
    if response.data is None:
        return []
    try:
        identifier = decode_dataset(response.data, transfer_syntax)
        value = identifier.get("FailedSOPInstanceUIDList")
    except Exception:
        return []
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(uid) for uid in _as_iterable(value)]


def _as_iterable(value: object) -> Iterable[object]:
    return value if isinstance(value, Iterable) else [value]


__all__ = [
    "NOT_AUTHORIZED",
    "NO_FINAL_RESPONSE",
    "InstanceArrived",
    "MatchCounter",
    "MoveDestinationUnknown",
    "Progress",
    "Retrieval",
    "RetrieveError",
    "RetrieveEvent",
    "RetrieveResult",
    "instance_from_request",
    "retrieve_identifier",
    "retrieve_model",
    "retrieve_sop_class",
    "store_response",
]
