"""An established association: the sans-I/O state machine driven over a transport connection.

This layer turns bytes into whole DIMSE messages and back. It does not know about services or
Message IDs; :mod:`aiodicom.dispatcher` reads from it and routes.
"""

from __future__ import annotations

import logging
import math
import ssl
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from itertools import chain

import anyio
import anyio.abc
import attrs

from aiodicom.dimse import DimseMessage, encode_message, encode_short_message
from aiodicom.errors import (
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    ConnectionClosed,
    DicomTimeoutError,
    DimseError,
    NoAcceptedContext,
)
from aiodicom.limits import Limits
from aiodicom.negotiation import PresentationContext, requestor_contexts
from aiodicom.pacing import pace
from aiodicom.pdu import PDU_HEADER_LENGTH, AssociateAC, AssociateRJ, AssociateRQ, describe_abort
from aiodicom.reassembly import DataSetOpener, MessageAssembler
from aiodicom.statemachine import (
    Aborted,
    AssociateAccepted,
    AssociateRejected,
    AssociateRequestReceived,
    AssociationStateMachine,
    DataReceived,
    ReleaseConfirmed,
    ReleaseRequested,
)
from aiodicom.statemachine import (
    ConnectionClosed as ConnectionClosedEvent,
)
from aiodicom.transport import Connection, connect
from aiodicom.uids import uid_name
from aiodicom.wiredump import (
    DIMSE_LOG,
    PDU_LOG,
    dump_abort,
    dump_associate_ac,
    dump_associate_rj,
    dump_associate_rq,
    dump_message,
    dump_release,
)

log = logging.getLogger("aiodicom.association")

DEFAULT_MAX_PDU_LENGTH = 256 * 1024
"""What we tell peers we can receive: large PDUs mean fewer reads and less Python per byte."""
DECODE_SLICE_PDUS = 24
"""Whole PDUs decoded in one step: about half a millisecond of work when they are small C-FIND
responses (twice as many kept the loop p99 above 10 ms with 20 C-FINDs). Counted in PDUs, not
bytes: most of the work is per PDU and per message, so large PDUs (a memory copy each) are
still decoded a whole read at a time."""


@attrs.frozen
class Timeouts:
    """Seconds; ``None`` waits for ever.

    ``connect``: TCP connect. ``acse``: association establishment and release. ``dimse``: the wait
    for each response of an operation. ``network``: silence on an established association.
    ``artim``: how long an acceptor waits for A-ASSOCIATE-RQ and for the peer to close after a
    reject, release or abort.

    A peer that stops answering in the middle of an operation surfaces after ``dimse`` seconds
    plus the wait for its answer to our C-CANCEL (the operation's ``cancel_timeout``, 10 s):
    70 s with the defaults, chosen for PACS that take long over a first C-FIND response. For
    interactive use lower both, e.g. ``Timeouts(dimse=15)`` and ``cancel_timeout=3``. What
    bounds peers that open associations to *us* is :class:`~aiodicom.Limits`.
    """

    connect: float | None = 30.0
    acse: float | None = 30.0
    dimse: float | None = 60.0
    network: float | None = None
    artim: float = 30.0


class Association:
    """One association, requestor or acceptor side, once established."""

    def __init__(
        self,
        connection: Connection,
        machine: AssociationStateMachine,
        *,
        timeouts: Timeouts,
    ) -> None:
        self._connection = connection
        self._machine = machine
        self.timeouts = timeouts
        # fast_acquire: no trip through the event loop per message sent when nobody else sends.
        self._send_lock = anyio.Lock(fast_acquire=True)
        self._assembler = MessageAssembler()
        self._inbox: deque[DimseMessage] = deque()
        machine.on_data_value = self._data_value
        self._value_error: DimseError | None = None
        self.request: AssociateRQ | None = None
        self.response: AssociateAC | None = None
        self.contexts: dict[int, PresentationContext] = {}
        self.peer_max_pdu_length = 0
        self._releasing = False
        self._ended = False
        # Whole PDUs may be left in the receive buffer: decode them before reading again.
        self._undecoded = False
        self.closed = anyio.Event()
        #: Seconds without a byte received before the association is aborted (``None``: no
        #: limit); not counted while :meth:`working` (we owe the peer a response, it waits).
        self.idle_timeout = timeouts.network
        self._limits: Limits | None = None
        self._working = 0
        # The PDU arriving at the front of the buffer (its offset in the stream) and the
        # seconds spent waiting for it: what the minimum receive rate is checked on.
        self._pdu_offset = -1
        self._pdu_waited = 0.0
        # Decided once per association: with DEBUG off for these loggers, the send and receive
        # paths pay one attribute test per whole message and never format anything.
        self._dump_pdus = PDU_LOG.isEnabledFor(logging.DEBUG)
        self._dump_messages = DIMSE_LOG.isEnabledFor(logging.DEBUG)

    @property
    def peer_address(self) -> str | None:
        """The IP address of the other end (``None`` when unknown)."""
        return self._connection.peer_address

    # --- establishment ----------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        rq: AssociateRQ,
        *,
        timeouts: Timeouts,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Association:
        """Connect and negotiate; raises :class:`AssociationRejected` on A-ASSOCIATE-RJ."""
        machine = AssociationStateMachine(
            requestor=True, max_receive_pdu_size=_receive_limit(max_pdu_length)
        )
        machine.request_association(rq)
        connection = await connect(
            host, port, ssl_context=ssl_context, timeout=timeouts.connect
        )
        machine.connection_made()
        association = cls(connection, machine, timeouts=timeouts)
        association.request = rq
        if association._dump_pdus:
            PDU_LOG.debug("%s", dump_associate_rq(rq, sent=True))
        try:
            await association._flush()
            with anyio.fail_after(timeouts.acse):
                while association.response is None:
                    for event in await association._receive_events():
                        association._handle_establishment(event)
        except TimeoutError as exc:
            await association.abort()
            raise DicomTimeoutError(
                f"no answer to A-ASSOCIATE-RQ from {host}:{port} within {timeouts.acse} s"
            ) from exc
        except BaseException:
            await association._close_stream()
            raise
        return association

    def _handle_establishment(self, event: object) -> None:
        if self._dump_pdus:
            self._dump_event(event)
        if isinstance(event, AssociateAccepted):
            assert self.request is not None
            self.response = event.response
            self._set_contexts(requestor_contexts(self.request, event.response))
            self.peer_max_pdu_length = event.response.user_information.max_pdu_length or 0
        elif isinstance(event, AssociateRejected):
            rj = event.response
            raise AssociationRejected(rj.result, rj.source, rj.reason)
        else:
            self._raise_for_end(event)

    @classmethod
    async def accept(
        cls,
        connection: Connection,
        decide: Callable[[AssociateRQ], Awaitable[AssociateAC | AssociateRJ]],
        *,
        timeouts: Timeouts,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        contexts_for: Callable[[AssociateRQ, AssociateAC], dict[int, PresentationContext]]
        | None = None,
        limits: Limits | None = None,
    ) -> Association | None:
        """Run the acceptor side up to an established association (``None`` if rejected).

        With ``limits`` the peer is held to them: idle timeout, minimum receive rate, largest
        command set."""
        machine = AssociationStateMachine(
            requestor=False, max_receive_pdu_size=_receive_limit(max_pdu_length)
        )
        machine.connection_made()
        association = cls(connection, machine, timeouts=timeouts)
        if limits is not None:
            association._limits = limits
            association._assembler.max_command_bytes = limits.max_command_bytes
            if timeouts.network is None or limits.idle_timeout < timeouts.network:
                association.idle_timeout = limits.idle_timeout
        try:
            with anyio.fail_after(timeouts.artim):
                while association.request is None:
                    for event in await association._receive_events():
                        if isinstance(event, AssociateRequestReceived):
                            association.request = event.request
                            if association._dump_pdus:
                                PDU_LOG.debug("%s", dump_associate_rq(event.request, sent=False))
                        else:
                            if association._dump_pdus:
                                association._dump_event(event)
                            association._raise_for_end(event)
                    if association.request is None and association.closed.is_set():
                        raise ConnectionClosed("the connection closed before A-ASSOCIATE-RQ")
        except (TimeoutError, AssociationError):
            await association._close_stream()
            return None
        rq = association.request
        answer = await decide(rq)
        if isinstance(answer, AssociateAC):
            try:
                machine.accept(answer)
            except ValueError as exc:
                # An answer that cannot be encoded (echoing a peer's oversized role selection
                # UID, say) is the request's fault: reject it, close within ARTIM.
                log.warning("rejected an A-ASSOCIATE-RQ from %s: cannot answer it: %s",
                            rq.calling_ae_title, exc)
                answer = AssociateRJ(result=1, source=1, reason=1)
        if isinstance(answer, AssociateRJ):
            if association._dump_pdus:
                PDU_LOG.debug("%s", dump_associate_rj(answer, sent=True))
            machine.reject(answer)
            await association._flush()
            await association._await_close()
            return None
        association.response = answer
        if association._dump_pdus:
            PDU_LOG.debug("%s", dump_associate_ac(answer, rq, sent=True))
        association.peer_max_pdu_length = rq.user_information.max_pdu_length or 0
        if contexts_for is not None:
            association._set_contexts(contexts_for(rq, answer))
        await association._flush()
        return association

    def _set_contexts(self, contexts: dict[int, PresentationContext]) -> None:
        self.contexts = contexts
        # A PDV on any other context is refused at once, never buffered.
        self._assembler.accepted_contexts = frozenset(
            context_id for context_id, context in contexts.items() if context.accepted
        )

    # --- sending ----------------------------------------------------------------------------

    async def send_message(self, message: DimseMessage) -> None:
        """Send one whole DIMSE message; messages never interleave on the wire."""
        if self._dump_messages:
            DIMSE_LOG.debug("%s", dump_message(message, sent=True))
        first = encode_short_message(message, self.peer_max_pdu_length)
        if first is not None:
            writes: Iterator[bytes] = iter(())
            second = None
        else:
            writes = encode_message(message, self.peer_max_pdu_length)
            first = next(writes)
            second = next(writes, None)
        if second is None and self._connection.whole_writes and not self._send_lock.locked():
            # The usual case, a small message: it goes to the transport in one write, before
            # anything else can run, so it needs no lock to stay whole (only a large message
            # being sent in pieces holds it).
            if self._ended:
                raise AssociationAborted("the association has already ended")
            self._machine.send_encoded_data(first)
            await self._flush()
            return
        async with self._send_lock:
            if self._ended:
                raise AssociationAborted("the association has already ended")
            sent_any = False
            try:
                for pdus in chain((first,) if second is None else (first, second), writes):
                    self._machine.send_encoded_data(pdus)
                    sent_any = True
                    await self._flush()
            except BaseException:
                # Half a message on the wire can never be completed or taken back.
                if sent_any:
                    await self.abort()
                raise

    def context(self, abstract_syntax: str, transfer_syntax: str | None = None,
                *, as_scp: bool = False) -> PresentationContext:
        """An accepted context for a SOP class (and transfer syntax, when it matters)."""
        for ctx in self.contexts.values():
            if not ctx.accepted or ctx.abstract_syntax != abstract_syntax:
                continue
            if transfer_syntax is not None and ctx.transfer_syntax != transfer_syntax:
                continue
            if as_scp and not ctx.we_are_scp:
                continue
            return ctx
        wanted = uid_name(abstract_syntax)
        if transfer_syntax is not None:
            wanted += f" in {uid_name(transfer_syntax)}"
        answers = [c.describe() for c in self.contexts.values()
                   if c.abstract_syntax == abstract_syntax]
        detail = "; ".join(answers) if answers else "it was not proposed"
        raise NoAcceptedContext(f"the peer accepted no presentation context for {wanted}: {detail}")

    # --- receiving --------------------------------------------------------------------------

    @property
    def open_data(self) -> DataSetOpener | None:
        """Chooses where the data set of each incoming message goes (default: memory)."""
        return self._assembler.open_data

    @open_data.setter
    def open_data(self, opener: DataSetOpener | None) -> None:
        self._assembler.open_data = opener

    async def receive_message(self) -> DimseMessage | None:
        """The next whole DIMSE message, or ``None`` once the association was released.

        Raises :class:`AssociationAborted` (or :class:`ConnectionClosed`) if it ends otherwise.
        """
        # The caller's work on the previous message counts too: messages of one read come
        # out of the inbox without waiting for anything.
        await pace()
        inbox = self._inbox
        while not inbox:
            if self._ended:
                return None
            for event in await self._receive_events():
                if type(event) is DataReceived:  # nearly every event: no call for it
                    inbox.extend(self._assembler.feed(event.pdu))
                else:
                    self._handle_event(event)
            await self._flush_queued()  # a release response queued by _handle_event
        message = inbox.popleft()
        if self._dump_messages:
            DIMSE_LOG.debug("%s", dump_message(message, sent=False))
        return message

    def _data_value(self, context_id: int, control: int, value: memoryview) -> None:
        # Each P-DATA value as the state machine decodes it: the assembler copies what it keeps
        # (the value is a view of the receive buffer) and completed messages wait in the inbox.
        if self._value_error is not None:
            return  # the stream is broken: the rest of this read is dropped
        try:
            message = self._assembler.feed_value(context_id, control, value)
        except DimseError as exc:
            # Raised once the read is consumed: the state machine is mid-way through it.
            self._value_error = exc
            return
        if message is not None:
            self._inbox.append(message)

    def _handle_event(self, event: object) -> None:
        if self._dump_pdus:
            self._dump_event(event)
        if isinstance(event, DataReceived):
            self._inbox.extend(self._assembler.feed(event.pdu))
        elif isinstance(event, ReleaseRequested):
            # Answering at once is right for both a plain release and a release collision: the
            # state machine knows which RP order PS3.8 wants.
            self._machine.release_response()
            if not self._releasing:
                self._ended = True
        elif isinstance(event, ReleaseConfirmed):
            self._ended = True
        else:
            self._raise_for_end(event)

    def _dump_event(self, event: object) -> None:
        """Log the PDU behind an event of the state machine (P-DATA: its messages are logged
        whole by :meth:`receive_message`), and the answer we send at once to a release."""
        if isinstance(event, AssociateAccepted):
            PDU_LOG.debug("%s", dump_associate_ac(event.response, self.request, sent=False))
        elif isinstance(event, AssociateRejected):
            PDU_LOG.debug("%s", dump_associate_rj(event.response, sent=False))
        elif isinstance(event, ReleaseRequested):
            PDU_LOG.debug("%s", dump_release("RQ", sent=False))
            if not event.collision:
                PDU_LOG.debug("%s", dump_release("RP", sent=True))
        elif isinstance(event, ReleaseConfirmed):
            PDU_LOG.debug("%s", dump_release("RP", sent=False))
        elif isinstance(event, Aborted):
            if event.connection_lost:
                PDU_LOG.debug("the connection closed before the association ended")
            else:
                # Not by the peer: our state machine aborted on a protocol error it met.
                PDU_LOG.debug("%s", dump_abort(event.source, event.reason,
                                               sent=not event.by_peer, detail=event.detail))

    def _raise_for_end(self, event: object) -> None:
        if isinstance(event, Aborted):
            self._ended = True
            if event.connection_lost:
                raise ConnectionClosed("the peer closed the connection without releasing")
            if event.by_peer:
                raise AssociationAborted(
                    describe_abort(event.source, event.reason), event.source, event.reason
                )
            raise AssociationAborted(
                f"association aborted by aiodicom: {describe_abort(event.source, event.reason)}",
                event.source, event.reason,
            )
        if isinstance(event, ConnectionClosedEvent):
            already_ending = self._releasing or self._ended
            self._ended = True
            if not already_ending:
                raise ConnectionClosed("the peer closed the connection without releasing")

    async def _receive_events(self) -> Sequence[object]:
        if self._value_error is not None:
            raise self._value_error
        if not self._undecoded:
            try:
                if self.idle_timeout is None and self._limits is None:
                    # The usual case of a requestor: spare a cancel scope per read.
                    more = await self._connection.receive()
                else:
                    more = await self._receive_in_time()
            except DicomTimeoutError:
                raise  # a TimeoutError, hence an OSError: not a broken connection
            except (
                anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError
            ):
                more = False
            if not more:
                events: list[object] = list(self._machine.connection_closed())
                await self._close_stream()
                if not events:
                    events.append(ConnectionClosedEvent())
                return events
            # Set before pacing: a cancellation there must not leave these bytes for a receive
            # that only reports new ones.
            self._undecoded = True
        await pace()
        # Whole PDUs are decoded where they lie; an incomplete one stays in the buffer. The
        # P-DATA values are views of the buffer, valid until the next receive: the assembler
        # copies what it keeps while the events are handled, before this is called again.
        # One step decodes at most DECODE_SLICE_PDUS PDUs: a read can hold a thousand small
        # ones (20 ms of work); the rest is decoded by the next steps, without reading.
        buffer = self._connection.buffer
        data = buffer.data()
        end = _slice_end(data, DECODE_SLICE_PDUS)
        try:
            pdu_events, used = self._machine.receive_pdus(
                data[:end] if end < len(data) else data
            )
        finally:
            # Fragments of a data set going to a file are written in one call per read.
            self._assembler.flush()
        buffer.consume(used)
        self._undecoded = end < len(data)
        # Tell the buffer how large the incomplete PDU is, so that one read can complete it.
        buffer.pending_size = self._machine.pending_pdu_size
        await self._flush_queued()
        if self._value_error is not None:
            raise self._value_error
        return pdu_events

    @asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """While an operation of ours runs for the peer, its silence is no idle time: the
        idle timeout counts again from when the last one ends."""
        self._working += 1
        try:
            yield
        finally:
            self._working -= 1
            if not self._working and self.idle_timeout is not None:
                self._connection.advance_deadline(self._connection.now() + self.idle_timeout)

    async def _receive_in_time(self) -> bool:
        """Read, aborting an idle peer and a peer sending a PDU slower than the minimum rate."""
        buffer = self._connection.buffer
        idle = None if self._working else self.idle_timeout
        budget: float | None = None
        if self._limits is not None and len(buffer):
            # What is left in the buffer is the start of the next PDU (whole ones are decoded).
            offset = buffer.received - len(buffer)
            if offset != self._pdu_offset:
                self._pdu_offset, self._pdu_waited = offset, 0.0
            # Each byte that arrived buys 1/rate s more: a peer sending at the minimum rate
            # is never cut off, one trickling a byte at a time is once the grace is spent.
            budget = (
                self._limits.pdu_grace + len(buffer) / self._limits.min_receive_rate
                - self._pdu_waited
            )
        wait = budget if idle is None or (budget is not None and budget < idle) else idle
        connection = self._connection
        started = connection.now()
        try:
            more = await connection.receive_before(
                started + wait if wait is not None else math.inf
            )
        finally:
            self._pdu_waited += connection.now() - started
        if more is not None:
            return more
        await self.abort()
        if budget is not None and wait == budget:
            assert self._limits is not None
            raise DicomTimeoutError(
                f"a PDU arrived slower than {self._limits.min_receive_rate:g} bytes/s "
                f"(after {self._limits.pdu_grace:g} s of grace); association aborted"
            )
        raise DicomTimeoutError(
            f"the peer sent nothing for {self.idle_timeout} s; association aborted"
        )

    # --- ending -----------------------------------------------------------------------------

    async def release(self) -> None:
        """A-RELEASE as requestor; call it while a reader loop (the dispatcher) is running or
        let this method read until the confirmation itself."""
        if self._ended:
            await self._close_stream()
            return
        self._releasing = True
        async with self._send_lock:
            if self._dump_pdus:
                PDU_LOG.debug("%s", dump_release("RQ", sent=True))
            self._machine.release()
            await self._flush()

    async def abort(self, source: int = 0, reason: int = 0) -> None:
        """A-ABORT: send it (when still possible) and drop the connection."""
        if not self._ended and not self.closed.is_set():
            try:
                if self._dump_pdus:
                    PDU_LOG.debug("%s", dump_abort(source, reason, sent=True))
                self._machine.abort(source, reason)
                with anyio.CancelScope(shield=True):
                    await self._flush()
            except Exception:  # aborting must never fail: the connection is dropped anyway
                pass
        self._ended = True
        await self._close_stream()

    async def _await_close(self) -> None:
        """After reject or release response: give the peer ARTIM seconds to close first."""
        with anyio.move_on_after(self.timeouts.artim):
            while not self.closed.is_set():
                await self._receive_events()
        await self._close_stream()

    async def _flush_queued(self) -> None:
        """:meth:`_flush`, but only when there is something to do (most calls: nothing)."""
        machine = self._machine
        if machine.has_data_to_send or machine.should_close:
            await self._flush()

    async def _flush(self) -> None:
        data = self._machine.data_to_send()
        if data:
            try:
                await self._connection.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                self._ended = True
                await self._close_stream()
                raise ConnectionClosed(f"the connection broke while sending: {exc}") from exc
        if self._machine.should_close:
            await self._close_stream()

    async def _close_stream(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            # A data set cut off by the end is dropped here (a spooled file is deleted).
            self._assembler.abandon()
            with anyio.CancelScope(shield=True):
                await self._connection.aclose()

    @property
    def is_established(self) -> bool:
        return self.response is not None and not self._ended


def _slice_end(data: memoryview, pdus: int) -> int:
    """Where one decoding step of ``data`` ends: after ``pdus`` PDUs, or at the end (where an
    incomplete PDU is left for the state machine to note). Lengths are only read here; the
    state machine checks them when it decodes."""
    size = len(data)
    pos = 0
    for _ in range(pdus):
        if size - pos < PDU_HEADER_LENGTH:
            return size
        pos += PDU_HEADER_LENGTH + _LENGTH.unpack_from(data, pos + 2)[0]
    return min(pos, size)


_LENGTH = struct.Struct(">I")


def _receive_limit(max_pdu_length: int) -> int | None:
    # The Maximum Length we announce counts the P-DATA variable field; the PDU adds a 6-byte
    # header. Refuse anything larger so that a hostile length cannot make us allocate, but leave
    # room for an A-ASSOCIATE-RQ with many contexts even when a tiny P-DATA size was chosen.
    return max(max_pdu_length, 1 << 16) + 6 if max_pdu_length else None


__all__ = ["DEFAULT_MAX_PDU_LENGTH", "Association", "Timeouts"]
