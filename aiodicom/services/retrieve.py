"""C-MOVE and C-GET SCU (PS3.4 C.4.2, C.4.3): instances into a sink, progress as events.

A :class:`Retrieval` can be awaited for its :class:`RetrieveResult`, or iterated (``async for``,
inside ``async with`` or not) for :class:`Progress` and :class:`InstanceArrived` events as they
happen. C-GET instances arrive as C-STORE requests on the retrieval's own association, received
by :mod:`aiodicom.services.storage_scp`; C-MOVE instances arrive at the client's acceptor and are
routed here by :class:`aiodicom.routing.DeliveryRouter`. Either way an instance is handed to the
sink before the sender is told it was stored, so every instance the peer counts as completed is
in the sink.

Like a C-FIND, the iteration is one async generator that does the work as it is pulled: leaving
``async with`` early, closing the iteration, breaking out of a plain ``async for`` (the C-CANCEL
then follows as soon as the generator is collected, see :mod:`aiodicom.services.find`) or
cancelling the awaiting task sends C-CANCEL and waits (bounded) for the peer's final response;
:attr:`Retrieval.result` then says what arrived. A failure status, or an association that ends
before the final response, raises :class:`RetrieveError` whose ``result`` holds the same account.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
)
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    aclosing,
    asynccontextmanager,
    nullcontext,
)
from types import TracebackType
from typing import Literal, Protocol

import anyio
import attrs
from pydicom import Dataset

from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.dimse import C_GET_RQ, C_MOVE_RQ, DATASET_PRESENT, DimseMessage
from aiodicom.errors import DicomError, DicomTimeoutError, QueryError, StatusError
from aiodicom.instance import Instance
from aiodicom.model import QueryModel
from aiodicom.negotiation import PresentationContext
from aiodicom.query import Query
from aiodicom.query import retrieve_identifier as identifier_for_retrieve
from aiodicom.series import Series, SeriesError, split_series
from aiodicom.services.cancel import CANCEL_TIMEOUT, cancel_operation
from aiodicom.services.channel import ServiceChannel
from aiodicom.services.storage_scp import (
    OneRecipient,
    answer_request,
    data_opener,
    receive_store,
    store_into,
)
from aiodicom.sinks import DirectorySink, MemorySink, Sink, as_sink
from aiodicom.status import Status, StatusCategory, status_category, status_meaning
from aiodicom.transport import loop_time

log = logging.getLogger("aiodicom.retrieve")

NO_FINAL_RESPONSE = Status.UNABLE_TO_PROCESS
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


MatchCounter = Callable[[Dataset], Awaitable[int]]
"""Counts (by C-FIND) what a retrieve identifier matches at the peer."""

ChannelOpener = Callable[["Retrieval"], AbstractAsyncContextManager[ServiceChannel]]
"""Opens the association a retrieval runs on, given the retrieval (which it may look at)."""

MAX_QUEUED_EVENTS = 64
"""Events a C-MOVE's deliveries may queue for an iterating consumer before they wait for it:
a consumer falling behind then slows the sender down rather than memory growing."""


class MoveRouter(Protocol):
    """Routes the deliveries of our C-MOVEs to them (:class:`aiodicom.routing.DeliveryRouter`
    is one): deliveries name their move by its Message ID, so the router hands those out."""

    def allocate_message_id(self) -> int: ...

    def expecting(self, move: Retrieval) -> AbstractAsyncContextManager[None]: ...


class Retrieval:
    """A C-MOVE or C-GET: await it, or iterate its events (with or without ``async with``).

    ``router``: the client's :class:`~aiodicom.routing.DeliveryRouter`, for a C-MOVE whose
    instances come to our own acceptor. ``destination_address``: our acceptor's (host, port),
    named in the error when the PACS does not know the destination. ``count_matches``: used
    only to tell, after a bare 0xC000 refusal, whether the PACS holds what we asked for.

    Nothing is sent before it is awaited or iterated, and it runs once.
    """

    def __init__(
        self,
        kind: Literal["move", "get"],
        query: Query | Dataset,
        *,
        sop_class_uid: str,
        sink: Sink | MemorySink | DirectorySink | None = None,
        session: ServiceChannel | None = None,
        open_session: ChannelOpener | None = None,
        destination: str | None = None,
        router: MoveRouter | None = None,
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
        self.peer_address: str | None = None
        """The IP address of the PACS on the association (``None`` when unknown)."""
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
        self._started = False
        # Set while iterated: events wait here for the consumer (None: nobody listens).
        self._events: deque[RetrieveEvent] | None = None
        self._wake: anyio.CancelScope | None = None
        self._room: anyio.Event | None = None
        # Inside 'async with' the generator is held, to be closed on exit. Otherwise weakly:
        # it refers to this object, and a plain 'async for' that breaks must leave it to be
        # collected (which closes it) at once, not when a reference cycle is found.
        self._generator: AsyncGenerator[RetrieveEvent, None] | None = None
        self._loose_generator: weakref.ref[AsyncGenerator[RetrieveEvent, None]] | None = None
        self._entered = False

    #: Its instances were asked for: received the way its sink keeps them (see Recipient).
    requested = True

    @property
    def closed(self) -> bool:
        """The result is being written: instances arriving now are refused."""
        return self._closed

    # --- ways to use it -----------------------------------------------------------------------

    def __await__(self) -> Generator[object, None, RetrieveResult]:
        return self._drive().__await__()

    async def _drive(self) -> RetrieveResult:
        async with aclosing(self._run()) as events:
            async for _ in events:
                pass  # none come: nobody listens
        assert self.result is not None
        return self.result

    def __aiter__(self) -> AsyncIterator[RetrieveEvent]:
        """The events, as they happen: the retrieval runs as they are read, and stops (with
        C-CANCEL) when the iteration is closed early, like a C-FIND's."""
        generator = self._generator
        if generator is None and self._loose_generator is not None:
            generator = self._loose_generator()
        if generator is None:
            self._events = deque()
            generator = self._run()
            if self._entered:
                self._generator = generator
            else:
                self._loose_generator = weakref.ref(generator)
        return generator

    async def __aenter__(self) -> Retrieval:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop early: C-CANCEL if the peer is still sending, then release what we opened."""
        generator, self._generator = self._generator, None
        if generator is not None:
            await generator.aclose()

    # --- instances ------------------------------------------------------------------------------

    def _queue(self, event: RetrieveEvent) -> None:
        """Keep ``event`` for the consumer, if one iterates."""
        if self._events is not None:
            self._events.append(event)
            if self._wake is not None:
                self._wake.cancel()  # the iteration waits for a response: hand this out first

    async def _emit(self, event: RetrieveEvent) -> None:
        """Keep ``event`` for the consumer; a delivery's waits while the consumer is behind."""
        events = self._events
        if events is None:
            return
        self._queue(event)
        # Deliveries to our acceptor (other tasks) wait for a consumer that fell behind. A
        # C-GET's come from the iterating task itself, between two reads: never wait there.
        while len(events) > MAX_QUEUED_EVENTS and self.kind == "move" and not self._closed:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()

    def _take_events(self) -> list[RetrieveEvent]:
        events = self._events
        if not events:
            return []
        taken = list(events)
        events.clear()
        self._make_room()
        return taken

    def _make_room(self) -> None:
        room, self._room = self._room, None
        if room is not None:
            room.set()

    async def accept_instance(self, instance: Instance) -> int:
        """Hand one arrived instance to the sink; the status to answer its C-STORE with."""
        if self._closed:
            # The result is written: an instance stored now would be in the sink but not in it.
            return Status.NOT_AUTHORIZED
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
        self._last_activity = loop_time()
        uid = instance.sop_instance_uid
        status = await store_into(self._deliver, instance)
        if status != Status.SUCCESS:
            self._local_failures.append(uid)
            return status
        self._completed.append(uid)
        self._bytes += instance.size
        await self._emit(InstanceArrived(instance))
        return status

    async def _settle(self) -> None:
        """Refuse further instances and wait for those being stored (a C-MOVE's deliveries run
        in the acceptor's tasks), so that the result and the sink agree. A sink that hangs
        must not make the retrieval hang: the wait is bounded like a cancel's."""
        self._closed = True
        self._make_room()  # deliveries waiting for the consumer go on: their events are kept
        with anyio.move_on_after(self.cancel_timeout):
            while self._inflight:
                self._idle = anyio.Event()
                await self._idle.wait()
        if self._inflight:
            log.warning(
                "%s: %d instance(s) still in the sink after %s s are left out of the result",
                self._what(), self._inflight, self.cancel_timeout,
            )

    # --- the work -----------------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[RetrieveEvent, None]:
        # One generator for the whole retrieval, as for a C-FIND: closing it early runs the
        # C-CANCEL in its 'finally' before the association is released. No cancel scope stays
        # open across a 'yield', so it may be closed from another task (by the collector).
        if self._started:
            raise RuntimeError("a retrieval runs once: make another to retrieve again")
        self._started = True
        async with AsyncExitStack() as stack:
            if isinstance(self.sink, DirectorySink):
                # Its file made ahead for a next instance: none comes once this ends.
                stack.callback(self.sink.release_spare)
            session = self._session
            if session is None:
                assert self._open_session is not None
                session = await stack.enter_async_context(self._open_session(self))
            association = session.association
            request = association.request
            self.peer_ae_title = request.called_ae_title if request else None
            self.calling_ae_title = request.calling_ae_title if request else None
            self.peer_address = association.peer_address
            context = association.context(self.sop_class_uid)
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
            dispatcher = session.dispatcher
            router = self._router
            # Deliveries are matched by this Message ID, so it comes from the client-wide router.
            wanted_id = router.allocate_message_id() if router is not None else None
            async with dispatcher.operation(wanted_id) as message_id:
                self.message_id = message_id
                expecting = router.expecting(self) if router is not None else nullcontext()
                async with expecting, self._receiving_stores(session):
                    command["MessageID"] = message_id
                    await dispatcher.send(DimseMessage(
                        context.context_id, command,
                        encode_dataset(self.identifier, transfer_syntax),
                    ))
                    counts = Progress(None, None, None, None)
                    final: DimseMessage | None = None
                    failure: DicomError | None = None
                    try:
                        while final is None:
                            counts, final = await self._responses(session, message_id, counts)
                            for event in self._take_events():
                                yield event
                    except DicomError as exc:
                        failure = exc
                    finally:
                        with anyio.CancelScope(shield=True):
                            # No failure means we were cancelled or closed early.
                            cancelled = final is None and failure is None
                            if final is None and not dispatcher.ended:
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
        # What arrived before the final response, not yet handed out.
        for event in self._take_events():
            yield event
        result = self.result
        assert result is not None
        if failure is not None:
            raise RetrieveError(result, self._interrupted_message(result)) from failure
        await self._check(result)

    @asynccontextmanager
    async def _receiving_stores(self, session: ServiceChannel) -> AsyncIterator[None]:
        """A C-GET's instances come as C-STOREs on its own association: receive them for the
        life of the block. Entered once the operation holds the association (a C-GET before
        may still be answering its cancel), so that its C-STOREs do not come here."""
        if self.kind != "get":
            yield
            return
        association = session.association
        dispatcher = session.dispatcher
        source = self.peer_ae_title or ""
        routing = OneRecipient(self, self.accept_instance)

        async def receive(request: DimseMessage, context: PresentationContext) -> DimseMessage:
            return await receive_store(request, context, source, routing)

        async def handle(request: DimseMessage) -> None:
            await association.send_message(
                await answer_request(request, association.contexts, receive)
            )

        previous = dispatcher.request_handler, association.open_data
        dispatcher.request_handler = handle
        association.open_data = data_opener(routing, association.contexts, source)
        try:
            yield
        finally:
            dispatcher.request_handler, association.open_data = previous

    async def _responses(
        self, session: ServiceChannel, message_id: int, counts: Progress
    ) -> tuple[Progress, DimseMessage | None]:
        """Read responses, folding pending ones into ``counts``, until the final one or until
        the consumer has events to take (the final response is then ``None``). Instances
        arriving count as activity for the DIMSE timeout, since a peer may send no pending
        response until every sub-operation is done."""
        dispatcher = session.dispatcher
        timeout = session.association.timeouts.dimse
        self._last_activity = loop_time()
        while not self._events:
            # One timer for as many responses as come before an event is due, not one per
            # response: each pushes the deadline on only once half of it is used up (moving
            # it re-arms a timer), so it can run out after timeout/2 idle seconds; the check
            # below then waits out the rest from the last activity.
            deadline = math.inf if timeout is None else self._last_activity + timeout
            with anyio.CancelScope(deadline=deadline) as scope:
                self._wake = scope
                try:
                    while True:
                        response = await dispatcher.next_response(message_id, timeout=None)
                        counts = _counts(response, counts)
                        if status_category(response.status_code) is not StatusCategory.PENDING:
                            return counts, response
                        now = self._last_activity = loop_time()
                        if self._events is not None:
                            self._wake = None  # no need to interrupt ourselves for this one
                            self._queue(counts)
                            return counts, None
                        if timeout is not None and scope.deadline - now < timeout / 2:
                            scope.deadline = now + timeout
                finally:
                    self._wake = None
            if self._events:
                break  # woken to hand out an event (a C-MOVE's delivery)
            assert timeout is not None  # nothing else ends the scope
            if loop_time() - self._last_activity >= timeout:
                raise DicomTimeoutError(
                    f"no response and no instance for {timeout} s during C-{self.kind.upper()}"
                )
        return counts, None

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
                status: int = Status.CANCEL
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
            (result.status & 0xF000) == Status.UNABLE_TO_PROCESS  # any Cxxx
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
        if self.kind == "move" and result.status == Status.MOVE_DESTINATION_UNKNOWN:
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
    "MAX_QUEUED_EVENTS",
    "NO_FINAL_RESPONSE",
    "ChannelOpener",
    "InstanceArrived",
    "MatchCounter",
    "MoveDestinationUnknown",
    "MoveRouter",
    "Progress",
    "Retrieval",
    "RetrieveError",
    "RetrieveEvent",
    "RetrieveResult",
    "retrieve_identifier",
    "retrieve_model",
    "retrieve_sop_class",
]
