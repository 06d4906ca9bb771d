"""C-MOVE and C-GET SCU (PS3.4 C.4.2, C.4.3): instances into a sink, progress as events.

A :class:`Retrieval` can be awaited for its :class:`RetrieveResult`, or entered with ``async with``
and iterated for :class:`Progress` and :class:`InstanceArrived` events as they happen. C-GET
instances arrive as C-STORE requests on the retrieval's own association (routed to us by the
dispatcher); C-MOVE instances arrive at the client's acceptor and are routed here by
:class:`aiodicom.routing.DeliveryRouter`. Either way an instance is handed to the sink before the
sender is told it was stored, so every instance the peer counts as completed is in the sink.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydicom import Dataset

from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.dimse import (
    C_CANCEL_RQ,
    C_GET_RQ,
    C_MOVE_RQ,
    C_STORE_RQ,
    C_STORE_RSP,
    DATASET_PRESENT,
    NO_DATASET,
    DimseMessage,
)
from aiodicom.errors import DicomError, DicomTimeoutError, DimseError, StatusError
from aiodicom.instance import Instance
from aiodicom.query import Query
from aiodicom.sinks import MemorySink, Sink, as_sink
from aiodicom.status import StatusCategory, status_category, status_meaning

if TYPE_CHECKING:
    from aiodicom.session import Session

log = logging.getLogger("aiodicom.retrieve")

CANCEL_TIMEOUT = 10.0
UNIQUE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


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
    status_text: str
    error_comment: str | None
    completed: tuple[str, ...]
    """SOP Instance UIDs that arrived and were stored by the sink."""
    failed: tuple[str, ...]
    """The peer's Failed SOP Instance UID List (0008,0058) plus instances we could not store."""
    warning: tuple[str, ...]
    bytes_received: int
    sub_operations: Progress
    """The peer's last reported counts."""
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return status_category(self.status) in (StatusCategory.SUCCESS, StatusCategory.WARNING)


class RetrieveError(StatusError):
    """A retrieval ended with a failure status (or was cut short); ``result`` has what arrived."""

    def __init__(self, result: RetrieveResult, message: str | None = None) -> None:
        super().__init__(result.status, result.status_text, result.error_comment)
        self.result = result
        if message:
            self.args = (message,)


class MoveDestinationUnknown(RetrieveError):
    """The PACS does not know the AE title we asked it to send to."""


def retrieve_identifier(query: Query | Dataset) -> Dataset:
    """The C-MOVE/C-GET identifier: the level and the unique keys that have values."""
    full = query.to_dataset() if isinstance(query, Query) else query
    identifier = Dataset()
    identifier.QueryRetrieveLevel = full.QueryRetrieveLevel
    if "SpecificCharacterSet" in full:
        identifier.SpecificCharacterSet = full.SpecificCharacterSet
    for keyword in UNIQUE_KEYS:
        value = full.get(keyword)
        if value not in (None, ""):
            identifier[keyword] = full[keyword]
    return identifier


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


def instance_from_request(
    request: DimseMessage, transfer_syntax_uid: str, source_ae_title: str | None
) -> Instance:
    if request.data is None:
        raise DimseError("C-STORE-RQ without a data set")
    return Instance(
        sop_class_uid=str(request.command.get("AffectedSOPClassUID", "")),
        sop_instance_uid=str(request.command.get("AffectedSOPInstanceUID", "")),
        transfer_syntax_uid=transfer_syntax_uid,
        data=request.data,
        source_ae_title=source_ae_title,
    )


class Retrieval:
    """A C-MOVE or C-GET; await it, or ``async with`` it and iterate its events."""

    def __init__(
        self,
        kind: Literal["move", "get"],
        query: Query | Dataset,
        *,
        sop_class_uid: str,
        sink: Sink | MemorySink | None = None,
        session: Session | None = None,
        open_session: Callable[[Retrieval], AbstractAsyncContextManager[Session]] | None = None,
        destination: str | None = None,
        message_id: int | None = None,
        expect_delivery: Callable[[Retrieval], AbstractAsyncContextManager[None]] | None = None,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> None:
        if (session is None) == (open_session is None):
            raise TypeError("give exactly one of session and open_session")
        self.kind = kind
        self.identifier = retrieve_identifier(query)
        self.sop_class_uid = sop_class_uid
        self.sink = sink if sink is not None else MemorySink()
        self._deliver = as_sink(self.sink)
        self._session = session
        self._open_session = open_session
        self.destination = destination
        self.message_id = message_id
        self._expect_delivery = expect_delivery
        self.priority = priority
        self.cancel_timeout = cancel_timeout
        self.peer_ae_title: str | None = None
        self.result: RetrieveResult | None = None
        self._completed: list[str] = []
        self._local_failures: list[str] = []
        # PS3.4 gives no UID list for warning sub-operations; only our own stores can add here.
        self._warnings: list[str] = []
        self._bytes = 0
        self._last_activity = 0.0
        self._events: MemoryObjectSendStream[RetrieveEvent] | None = None
        self._receive_events: MemoryObjectReceiveStream[RetrieveEvent] | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._failure: DicomError | None = None

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
            raise RuntimeError("iterate a retrieval inside 'async with': async with peer.move(...) as r")
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

    # --- the work -----------------------------------------------------------------------------

    async def _emit(self, event: RetrieveEvent) -> None:
        if self._events is not None:
            try:
                await self._events.send(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._events = None

    async def accept_instance(self, instance: Instance) -> int:
        """Hand one arrived instance to the sink; the status to answer its C-STORE with."""
        self._last_activity = anyio.current_time()
        uid = instance.sop_instance_uid
        try:
            await self._deliver(instance)
        except OSError as exc:
            log.error("could not store %s: %s", uid, exc)
            self._local_failures.append(uid)
            return 0xA700  # Refused: out of resources
        except Exception as exc:  # noqa: BLE001 - a sink's failure is reported, never lost
            log.error("sink refused %s: %s", uid, exc)
            self._local_failures.append(uid)
            return 0xC000  # Error: cannot understand
        self._completed.append(uid)
        self._bytes += memoryview(instance.data).nbytes
        await self._emit(InstanceArrived(instance))
        return 0x0000

    async def handle_store_request(self, request: DimseMessage, session: Session) -> None:
        """C-STORE sub-operation of a C-GET, arriving on our own association."""
        if request.command_field != C_STORE_RQ:
            raise DimseError(f"unexpected {request.name} during a C-GET")
        context = session.association.contexts.get(request.context_id)
        if context is None or context.transfer_syntax is None:
            status = 0x0122  # Refused: SOP class not supported
        else:
            peer = session.association.request
            instance = instance_from_request(
                request, context.transfer_syntax, peer.called_ae_title if peer else None
            )
            status = await self.accept_instance(instance)
        await session.association.send_message(store_response(request, status))

    async def _drive(self) -> RetrieveResult:
        async with AsyncExitStack() as stack:
            session = self._session
            if session is None:
                assert self._open_session is not None
                session = await stack.enter_async_context(self._open_session(self))
            if self.kind == "get":
                session.dispatcher.request_handler = \
                    lambda message: self.handle_store_request(message, session)
            request = session.association.request
            self.peer_ae_title = request.called_ae_title if request else None
            return await self._exchange(session, stack)
        raise AssertionError("unreachable")  # pragma: no cover - the block always returns

    async def _exchange(self, session: Session, stack: AsyncExitStack) -> RetrieveResult:
        dispatcher = session.dispatcher
        context = session.association.context(self.sop_class_uid)
        assert context.transfer_syntax is not None
        command: dict[str, object] = {
            "CommandField": C_MOVE_RQ if self.kind == "move" else C_GET_RQ,
            "AffectedSOPClassUID": self.sop_class_uid,
            "Priority": self.priority,
            "CommandDataSetType": DATASET_PRESENT,
        }
        if self.kind == "move":
            command["MoveDestination"] = self.destination
        async with dispatcher.operation(self.message_id) as message_id:
            self.message_id = message_id
            if self._expect_delivery is not None:
                await stack.enter_async_context(self._expect_delivery(self))
            command["MessageID"] = message_id
            await dispatcher.send(DimseMessage(
                context.context_id, command,
                encode_dataset(self.identifier, context.transfer_syntax),
            ))
            counts = Progress(None, None, None, None)
            final: DimseMessage | None = None
            cancelled = False
            try:
                while final is None:
                    response = await self._next_response(session, message_id)
                    status = response.status if response.status is not None else 0xC000
                    counts = _counts(response, counts)
                    if status_category(status) is StatusCategory.PENDING:
                        await self._emit(counts)
                    else:
                        final = response
            finally:
                if final is None:
                    cancelled = True
                    with anyio.CancelScope(shield=True):
                        final = await self._cancel(session, context.context_id, message_id)
                self.result = self._result(final, counts, cancelled, context.transfer_syntax)
        return self._check(self.result)

    async def _next_response(self, session: Session, message_id: int) -> DimseMessage:
        """Wait for a response; instances arriving count as activity for the DIMSE timeout,
        since a peer may send no pending response until every sub-operation is done."""
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

    async def _cancel(
        self, session: Session, context_id: int, message_id: int
    ) -> DimseMessage | None:
        dispatcher = session.dispatcher
        if dispatcher.ended:
            return None
        try:
            await dispatcher.send(DimseMessage(
                context_id,
                {
                    "CommandField": C_CANCEL_RQ,
                    "MessageIDBeingRespondedTo": message_id,
                    "CommandDataSetType": NO_DATASET,
                },
                None,
            ))
            with anyio.move_on_after(self.cancel_timeout):
                while True:
                    response = await dispatcher.next_response(message_id, timeout=None)
                    status = response.status if response.status is not None else 0xC000
                    if status_category(status) is not StatusCategory.PENDING:
                        return response
        except Exception as exc:  # noqa: BLE001 - any failure here means: give up the association
            log.info("C-CANCEL did not complete: %s", exc)
        await session.association.abort()
        return None

    def _result(
        self, final: DimseMessage | None, counts: Progress, cancelled: bool, transfer_syntax: str
    ) -> RetrieveResult:
        failed_remote: list[str] = []
        if final is None:
            status = 0xFE00 if cancelled else 0xC000
            comment: str | None = "the peer did not confirm the cancel; association aborted"
        else:
            status = final.status if final.status is not None else 0xC000
            raw = final.command.get("ErrorComment")
            comment = str(raw) if raw else None
            failed_remote = _failed_list(final, transfer_syntax)
        completed = tuple(dict.fromkeys(self._completed))
        failed = tuple(dict.fromkeys(failed_remote + self._local_failures))
        return RetrieveResult(
            status=status,
            status_text=status_meaning(status, self.kind),
            error_comment=comment,
            completed=completed,
            failed=failed,
            warning=tuple(self._warnings),
            bytes_received=self._bytes,
            sub_operations=counts,
            cancelled=cancelled,
        )

    def _check(self, result: RetrieveResult) -> RetrieveResult:
        if result.cancelled or status_category(result.status) is not StatusCategory.FAILURE:
            return result
        if self.kind == "move" and _destination_unknown(result):
            raise MoveDestinationUnknown(result, (
                f"C-MOVE refused, status 0x{result.status:04X} ({result.status_text}"
                + (f": {result.error_comment}" if result.error_comment else "")
                + f"): the PACS {self.peer_ae_title or ''} does not know the move destination "
                f"{self.destination!r}. Configure it there as a DICOM node with our host and "
                "port (dcmqrscp: HostTable; Orthanc: DicomModalities), or use C-GET."
            ))
        raise RetrieveError(result)


def _destination_unknown(result: RetrieveResult) -> bool:
    if result.status == 0xA801:
        return True
    # Orthanc answers C000 with no sub-operation at all; its comment names the modality.
    comment = (result.error_comment or "").lower()
    nothing_moved = not result.completed and not result.sub_operations.completed
    return (result.status & 0xF000) == 0xC000 and nothing_moved and (
        "modality" in comment or "destination" in comment or "unknown" in comment
    )


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
    except Exception:  # noqa: BLE001 - a garbled list must not hide the status
        return []
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(uid) for uid in value]


__all__ = [
    "InstanceArrived",
    "MoveDestinationUnknown",
    "Progress",
    "RetrieveError",
    "RetrieveEvent",
    "RetrieveResult",
    "Retrieval",
    "instance_from_request",
    "retrieve_identifier",
    "store_response",
]
