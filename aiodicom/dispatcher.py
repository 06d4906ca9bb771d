"""DIMSE dispatcher: routes the messages of one association.

Responses go to the operation that sent the request (by Message ID Being Responded To), incoming
requests (the C-STOREs of a C-GET, or anything sent to our acceptor) to a handler, so several
operations can be outstanding on one association.

Reading is pulled, not pushed: an operation that waits for its next response reads the socket
itself (one reader at a time, under a lock) and files messages for other operations in their
queues. No background task is needed, so an operation can live inside an async generator, and a
consumer that stops pulling stops the reading: TCP flow control then slows the peer instead of
memory growing.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

from aiodicom.association import Association
from aiodicom.dimse import C_CANCEL_RQ, DimseMessage, command_name
from aiodicom.errors import AssociationAborted, DicomError, DicomTimeoutError, DimseError

RequestHandler = Callable[[DimseMessage], Awaitable[None]]


class Dispatcher:
    def __init__(
        self,
        association: Association,
        *,
        request_handler: RequestHandler | None = None,
        max_outstanding: int = 1,
    ) -> None:
        self.association = association
        self.request_handler = request_handler
        self._queues: dict[int, deque[DimseMessage]] = {}
        # The Command Field each outstanding operation's responses must have (its request's
        # with bit 15 set), noted when the request is sent: a peer answering a C-FIND-RQ with,
        # say, a C-MOVE-RSP of status 0 must not pass for a C-FIND that found nothing.
        self._response_fields: dict[int, int] = {}
        # Each association counts its Message IDs from a random start (1..65535, wrapping,
        # never 0): a third AE must not be able to guess the ID a C-MOVE's deliveries carry.
        # Peers only echo the IDs back, so no peer depends on them starting at 1.
        self._last_message_id = secrets.randbelow(0xFFFF)
        # The asynchronous operations window (0 = unlimited); without one, PS3.7 allows a single
        # outstanding operation per association.
        # fast_acquire: an uncontended acquire must not cost a trip through the event loop; it
        # happens for every message read and every operation started.
        self._window = (
            anyio.Semaphore(max_outstanding, fast_acquire=True) if max_outstanding else None
        )
        self._read_lock = anyio.Lock(fast_acquire=True)
        self._progress = anyio.Event()
        self._progress_awaited = False
        self.failure: DicomError | None = None
        self.ended = False
        # The cancel scope of the task reading while it serves requests (run(), or an operation
        # waiting for its response while requests come: _serve_until_queued), None otherwise.
        # Never cancelled itself: its shield keeps out only the cancellation of the scopes
        # around it.
        self._serving: anyio.CancelScope | None = None

    # --- reading ------------------------------------------------------------------------------

    async def read_one(self) -> None:
        """Read and route one message (the caller holds :meth:`reading`)."""
        try:
            message = await self.association.receive_message()
        except DicomError as exc:
            self.failure = exc
            self.ended = True
            raise
        finally:
            self._wake()
        if message is None:
            self.ended = True
            return
        await self._route(message)

    def _wake(self) -> None:
        # A fresh Event only when someone waited on the old one: this runs for every message.
        if self._progress_awaited:
            self._progress_awaited = False
            progress, self._progress = self._progress, anyio.Event()
            progress.set()

    def reading(self) -> anyio.Lock:
        """Hold this to read with :meth:`read_one` outside an operation (release, serving)."""
        return self._read_lock

    async def run(self) -> None:
        """Serve until the association ends (the acceptor's loop, where no operation pulls)."""
        async with self._read_lock:
            # One cancel scope for the whole loop, shielded while a request is handled (see
            # _route) instead of a shielded scope per request: entering and leaving a scope
            # cost about a tenth of receiving a small C-STORE.
            with anyio.CancelScope() as self._serving:
                try:
                    while not self.ended:
                        await self.read_one()
                finally:
                    self._serving = None

    async def _route(self, message: DimseMessage) -> None:
        if message.is_response:
            queue = self._queues.get(message.message_id_being_responded_to or 0)
            if queue is not None:
                queue.append(message)
            # else: a late answer to an operation that already gave up; nothing to do.
            self._wake()
        elif self.request_handler is not None:
            # A request is answered whole even if our waiter is cancelled meanwhile: a missing
            # response would stall the peer, and a half-sent one would break the association.
            serving = self._serving
            if serving is None:
                with anyio.CancelScope(shield=True):
                    await self.request_handler(message)
            else:
                serving.shield = True
                try:
                    await self.request_handler(message)
                finally:
                    serving.shield = False  # a cancellation that came meanwhile goes on now
        else:
            raise DimseError(
                f"peer sent a request (command field 0x{message.command_field:04X}) that no "
                "service on this association handles"
            )

    # --- operations ---------------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Operations waiting for responses."""
        return len(self._queues)

    def next_message_id(self) -> int:
        """A Message ID not used by an outstanding operation (1..65535, wrapping)."""
        for _ in range(0xFFFF):
            self._last_message_id = self._last_message_id % 0xFFFF + 1
            if self._last_message_id not in self._queues:
                return self._last_message_id
        raise DimseError("65535 operations outstanding: no Message ID left")

    @asynccontextmanager
    async def operation(self, message_id: int | None = None) -> AsyncIterator[int]:
        """Reserve a Message ID (``message_id`` if given and free) whose responses are kept for
        :meth:`next_response`."""
        if self._window is not None:
            try:
                # A free slot, the usual case: taken without a timeout scope to set up.
                self._window.acquire_nowait()
            except anyio.WouldBlock:
                await self._acquire_window()
        if message_id is None or message_id in self._queues:
            message_id = self.next_message_id()
        self._queues[message_id] = deque()
        try:
            yield message_id
        finally:
            del self._queues[message_id]
            self._response_fields.pop(message_id, None)
            if self._window is not None:
                self._window.release()

    async def _acquire_window(self) -> None:
        # Bounded: an operation abandoned without being closed (a find kept in a variable
        # after 'break') would otherwise hold the only slot for ever.
        assert self._window is not None
        timeout = self.association.timeouts.dimse
        try:
            with anyio.fail_after(timeout):
                await self._window.acquire()
        except TimeoutError as exc:
            raise DimseError(
                f"another operation is still outstanding on this association after "
                f"{timeout} s and the peer allows no more at once; close abandoned "
                "operations (use 'async with' or aclose()) or open another association"
            ) from exc

    async def next_response(self, message_id: int, timeout: float | None = -1.0) -> DimseMessage:
        """Wait for the next response to ``message_id`` within the DIMSE timeout
        (``timeout=-1`` means the association's, ``None`` for ever)."""
        queue = self._queues[message_id]
        if queue:
            # Responses often arrive several to a read: no timeout scope needed for those.
            return self._checked(message_id, queue.popleft())
        if timeout == -1.0:
            timeout = self.association.timeouts.dimse
        if timeout is None:
            # The caller times the wait itself (a retrieval counts arriving instances as
            # activity): no scope of our own, which would cost more than reading a small PDU.
            await self._until_queued(queue)
            return self._checked(message_id, queue.popleft())
        try:
            with anyio.fail_after(timeout):
                await self._until_queued(queue)
        except TimeoutError as exc:
            raise DicomTimeoutError(f"no DIMSE response within {timeout} s") from exc
        return self._checked(message_id, queue.popleft())

    def take_queued(self, message_id: int) -> DimseMessage | None:
        """A response to ``message_id`` that already arrived, without waiting."""
        queue = self._queues[message_id]
        return self._checked(message_id, queue.popleft()) if queue else None

    def _checked(self, message_id: int, response: DimseMessage) -> DimseMessage:
        expected = self._response_fields.get(message_id)
        if expected is not None and response.command.get("CommandField") != expected:
            raise DimseError(
                f"the peer answered our {command_name(expected & 0x7FFF)} (Message ID "
                f"{message_id}) with a {response.name}: a protocol error on the peer's side"
            )
        return response

    async def _until_queued(self, queue: deque[DimseMessage]) -> None:
        while not queue:
            if self.ended:
                if self.failure is not None:
                    raise self.failure
                raise AssociationAborted("the association ended before the operation finished")
            if self._read_lock.locked():
                self._progress_awaited = True
                await self._progress.wait()
            elif self.request_handler is None:
                async with self._read_lock:
                    await self.read_one()
            else:
                async with self._read_lock:
                    await self._serve_until_queued(queue)

    async def _serve_until_queued(self, queue: deque[DimseMessage]) -> None:
        # Requests come between our responses (a C-GET's C-STOREs): one cancel scope for as
        # many as come before ours, shielded only while one is handled (see _route), as in
        # run(). A shielded scope per request was entered after its data set arrived, on the
        # way to the response the peer waits for: 20-28 us there, against 5 us in a loop that
        # keeps anyio's code in the CPU's caches.
        with anyio.CancelScope() as self._serving:
            try:
                while not queue and not self.ended:
                    await self.read_one()
            finally:
                self._serving = None

    async def send(self, message: DimseMessage) -> None:
        command = message.command
        message_id = command.get("MessageID")
        field = command.get("CommandField")
        if (
            isinstance(message_id, int) and isinstance(field, int) and message_id in self._queues
            and not field & 0x8000 and field != C_CANCEL_RQ
        ):
            self._response_fields[message_id] = field | 0x8000
        await self.association.send_message(message)


__all__ = ["Dispatcher", "RequestHandler"]
