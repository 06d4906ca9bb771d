"""Thin TCP transport: connections that read into a :class:`ReceiveBuffer`, and a listener.

Framing and protocol live in the sans-I/O state machine; this module only opens, tunes, reads,
writes and closes sockets, so that the rest of the stack can be tested without them.

Plain TCP uses an asyncio ``BufferedProtocol``: the kernel copies received bytes straight into
the connection's reused buffer (``recv_into``), with no ``bytes`` object per read and no
re-arming of the selector per read. TLS goes through anyio's ``TLSStream``, whose decrypted
chunks are copied into the same kind of buffer, so the layers above see one interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Literal, cast

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from aiodicom.buffer import MIN_FREE, ReceiveBuffer
from aiodicom.errors import (
    AssociationError,
    ConnectionClosed,
    DicomTimeoutError,
    UnsupportedBackend,
)
from aiodicom.limits import LOCAL_LIMIT_EXCEEDED, AssociationGate
from aiodicom.pacing import loop_came_round
from aiodicom.pdu import encode_pdu

log = logging.getLogger("aiodicom.transport")

# What one read of a TLS stream may hand back; large reads keep the per-call cost of Python low.
RECEIVE_SIZE = 1 << 18


def running_loop() -> asyncio.AbstractEventLoop:
    """The running asyncio loop; a clear error under any other backend.

    The fast path (a BufferedProtocol reading into one reused buffer) is asyncio's own API, so
    the library runs on asyncio only; without this check trio users would meet "no running
    event loop" deep in a connect.
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise UnsupportedBackend(
            "aiodicom runs on asyncio only: use asyncio.run(...) or "
            "anyio.run(..., backend='asyncio') (trio is not supported)"
        ) from None


def loop_time() -> float:
    """``anyio.current_time()`` without looking the backend up first (a context variable and
    a task lookup, which cost more than the rest of a small step): the running loop's clock."""
    return running_loop().time()


def _numeric_addresses(
    host: str, port: int
) -> list[tuple[Any, ...]] | None:
    """The addresses to listen on for ``host`` when it needs no lookup (empty for every
    interface, or an IP address), found at once; ``None`` for a name.

    asyncio's ``getaddrinfo`` always runs in the loop's executor, which starts a thread that
    then stays for the life of the loop: every storage SCP had one, idle, for nothing.
    """
    try:
        return socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST,
        )
    except socket.gaierror:
        return None


def _tune_socket(raw: socket.socket) -> None:
    # Nagle plus delayed ACK stalls every small C-STORE/C-FIND response by ~40 ms (see peers.md).
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Big socket buffers let a fast peer keep sending while we process the previous PDU.
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        # Some kernels refuse the size; their default still works.
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, option, 1 << 21)


def _tune(stream: anyio.abc.ByteStream) -> None:
    raw = stream.extra(SocketAttribute.raw_socket, None)
    if raw is not None:
        _tune_socket(raw)


class Connection:
    """A byte connection whose received bytes accumulate in :attr:`buffer`."""

    buffer: ReceiveBuffer
    #: :meth:`send` hands all of ``data`` to the transport before it first suspends: what one
    #: call sends cannot interleave with what another task sends meanwhile.
    whole_writes = False
    #: Set by the acceptor once an association is established on it: a listener short of
    #: room sheds connections still negotiating, never these.
    established = False
    #: The cancel scope of a receive_before() in progress (the generic way to time a read).
    _deadline_scope: anyio.CancelScope | None = None

    async def receive(self) -> bool:
        """Wait until bytes arrived that the previous call did not report; ``False`` once the
        peer closed (or the connection broke) and nothing new is left.

        Makes room in the buffer first, which invalidates earlier views of it.
        """
        raise NotImplementedError

    async def receive_before(self, deadline: float) -> bool | None:
        """:meth:`receive`, giving up at ``deadline`` (the clock of ``anyio.current_time()``;
        ``math.inf``: none yet, see :meth:`advance_deadline`): ``None`` then."""
        with anyio.CancelScope(deadline=deadline) as scope:
            self._deadline_scope = scope
            try:
                return await self.receive()
            finally:
                self._deadline_scope = None
        return None

    def now(self) -> float:
        """The clock of deadlines (the event loop's, as ``anyio.current_time()``)."""
        return loop_time()

    def advance_deadline(self, deadline: float) -> None:
        """Bring the deadline of a :meth:`receive_before` in progress forward to ``deadline``
        (never back); nothing when none is in progress."""
        scope = self._deadline_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    async def send(self, data: bytes) -> None:
        """Return once the kernel took all of ``data``; raise ``anyio.BrokenResourceError`` if
        the connection is gone."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    @property
    def peer_address(self) -> str | None:
        """The IP address of the other end, ``None`` when not a network socket."""
        return None


def _host_of(address: object) -> str | None:
    """The host of a socket address (``(host, port[, flow, scope])``), as text."""
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        return address[0]
    return None


class _BufferedProtocol(asyncio.BufferedProtocol):
    def __init__(self, buffer: ReceiveBuffer) -> None:
        self.buffer = buffer
        self.transport: asyncio.Transport | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.at_eof = False
        self.error: Exception | None = None
        self.read_waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCPTransport has the whole interface but
        # does not derive from asyncio.Transport.
        self.transport = tcp = cast(asyncio.Transport, transport)
        # Writes then count as done only once the kernel has them, as with anyio's streams.
        tcp.set_write_buffer_limits(0)
        raw = transport.get_extra_info("socket")
        if raw is not None:
            _tune_socket(raw)

    def get_buffer(self, sizehint: int) -> memoryview:
        buffer = self.buffer
        if buffer.free == 0:
            # Reading was not paused in time. Never hand asyncio an empty buffer, and never
            # compact here (the consumer may still look at earlier bytes): a bigger buffer
            # leaves the old one, and every view of it, intact.
            buffer.make_room(buffer.capacity + MIN_FREE)
        return buffer.free_space()

    def filled(self, nbytes: int) -> bool:
        """``nbytes`` more are in the buffer; pause reading if it is nearly full (returns
        whether it did)."""
        buffer = self.buffer
        buffer.filled(nbytes)
        if buffer.free < MIN_FREE and self.transport is not None:
            # Back-pressure: the consumer makes room when it wants more; until then TCP flow
            # control slows the peer instead of this buffer growing.
            self.transport.pause_reading()
            self.reading_paused = True
            return True
        return False

    def buffer_updated(self, nbytes: int) -> None:
        paused = self.filled(nbytes)  # then the consumer must make room, whatever is here
        if not paused and len(self.buffer) < self.buffer.pending_size:
            # The PDU the consumer waits for is still incomplete: it could do nothing with
            # these bytes, so it is not woken for them (a 128 KiB PDU arrives in several
            # reads). A timed read still sees them when its deadline comes.
            return
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            loop_came_round(waiter.get_loop())
            waiter.set_result(None)

    def eof_received(self) -> bool | None:
        self.at_eof = True
        _wake(self.read_waiter)
        return None  # let the transport close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.at_eof = True
        self.error = exc
        _wake(self.read_waiter)
        _wake(self.write_waiter)

    async def wait(self, slot: Literal["read_waiter", "write_waiter"]) -> None:
        """Until the protocol wakes ``slot``: a plain future, as cheap as a wait can be."""
        waiter: asyncio.Future[None] = running_loop().create_future()
        setattr(self, slot, waiter)
        try:
            await waiter
        finally:
            setattr(self, slot, None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.write_waiter)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class SocketConnection(Connection):
    """Plain TCP over an asyncio transport that reads straight into :attr:`buffer`."""

    whole_writes = True  # transport.write() takes everything at once; send() then waits

    def __init__(
        self, transport: asyncio.Transport, protocol: _BufferedProtocol,
        sock: socket.socket | None = None,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self.buffer = protocol.buffer
        self._loop = running_loop()  # made by connect() or from_accepted(), in the loop
        self._reported = 0
        # Of a receive_before() in progress: its deadline, whether it went off; and the timer,
        # armed for that deadline or an earlier one (then armed again when it goes off).
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf  # the deadline the timer was armed for
        self._timed_out = False
        # The last thing done here was sending: a read at once would be too early for the
        # answer (see _read).
        self._sent_last = False
        self._closed = False  # aclose() has run to its end
        # The socket itself, to read what already arrived without waiting for the loop (see
        # _read_now). asyncio's transports hand out a TransportSocket wrapping it (its
        # _sock: asyncio/trsock.py since Python 3.8); uvloop's hand out none: no such reads.
        if sock is None:
            sock = getattr(transport.get_extra_info("socket"), "_sock", None)
        self._sock = sock if isinstance(sock, socket.socket) else None

    def now(self) -> float:
        # The loop's clock itself: anyio.current_time() first finds the backend (a context
        # variable and a task lookup), twice per timed read.
        return self._loop.time()

    @property
    def peer_address(self) -> str | None:
        return _host_of(self._transport.get_extra_info("peername"))

    @classmethod
    async def connect(cls, host: str, port: int) -> SocketConnection:
        loop = running_loop()
        buffer = ReceiveBuffer()
        # create_connection skips name resolution for IP literals, and connects without the
        # task group that anyio's happy-eyeballs connect costs on every association.
        transport, protocol = await loop.create_connection(
            lambda: _BufferedProtocol(buffer), host, port
        )
        return cls(transport, protocol)

    @classmethod
    async def from_accepted(cls, sock: socket.socket) -> SocketConnection:
        loop = running_loop()
        buffer = ReceiveBuffer()
        transport, protocol = await loop.connect_accepted_socket(
            lambda: _BufferedProtocol(buffer), sock
        )
        return cls(transport, protocol, sock)

    async def receive(self) -> bool:
        return await self._read(None) is True  # untimed: only new bytes or the end stop it

    async def receive_before(self, deadline: float) -> bool | None:
        return await self._read(deadline)

    async def _read(self, deadline: float | None) -> bool | None:
        # A timed read waits with a loop timer, armed only when it has to wait: an anyio cancel
        # scope per read cost more than the rest of the read (every read of an acceptor's
        # association is timed, for its idle timeout and minimum receive rate).
        protocol = self._protocol
        buffer = self.buffer
        if not self._has_news():
            # Room is made only once the consumer has what came meanwhile (the transport reads
            # while the consumer works): making room around those bytes would move them, and
            # with the buffer full of whole PDUs it would double it (a C-GET's 1 MiB buffer to
            # 2 MiB beside the old one, when the consumer had fallen behind).
            buffer.make_room()
            if protocol.reading_paused and not protocol.at_eof:
                protocol.reading_paused = False
                self._transport.resume_reading()
            # Not right after a send of ours: the peer has yet to answer what we sent, so that
            # read would fail (a C-STORE-RSP sent, the next C-STORE still to come; a request
            # sent, its response still to come), and a failed recv costs a system call and an
            # exception, about 2 % of receiving a 40 kB C-STORE. A peer that sent before our
            # send was answered is found by the loop instead, one turn later.
            if not (protocol.at_eof or self._sent_last):
                self._read_now()
        if not (protocol.at_eof or self._has_news()):
            self._timed_out = False
            self._deadline = deadline  # None: advance_deadline() leaves this read alone
            if deadline is not None and deadline != math.inf:
                self._arm(deadline)
            try:
                while not (protocol.at_eof or self._timed_out or self._has_news()):
                    await protocol.wait("read_waiter")
            finally:
                self._deadline = None
                # The timer stays armed for the next timed read, whose deadline is most often
                # later (an idle timeout counts from now): one timer per idle timeout instead of
                # one made and cancelled per read (a few microseconds of each small C-STORE).
                if protocol.at_eof:
                    self._disarm()
        if buffer.received == self._reported:
            return False if protocol.at_eof else None  # nothing new: the end, or timed out
        self._reported = buffer.received
        self._sent_last = False
        return True

    def _read_now(self) -> None:
        """Take what the kernel already holds for this socket, without waiting for the loop
        to report it: while we worked on one PDU the peer often sent the next, and letting the
        loop find it costs a turn, a select and a callback (a 263 MB retrieval took 2.5 times
        fewer loop turns, 9 % less wall time, with this). Nothing there costs one failed recv.
        The end of the stream and errors are left to the transport's own read, which the
        socket stays readable for."""
        sock = self._sock
        protocol = self._protocol
        if sock is None or protocol.reading_paused or self._transport.is_closing():
            return
        buffer = self.buffer
        # The last MIN_FREE bytes are left to the transport: the loop may already have its read
        # of this socket queued, and a buffer this read filled would make it grow the buffer
        # to twice its size (a retrieval's 1 MiB buffer to 2 MiB, beside the old one).
        room = buffer.free - MIN_FREE
        if room <= 0:
            return
        try:
            count = sock.recv_into(buffer.free_space(), room)
        except OSError:  # BlockingIOError (nothing there) above all
            return
        if count:
            protocol.filled(count)

    def _has_news(self) -> bool:
        # New bytes that complete the PDU the consumer waits for, or a full buffer it must
        # make room in (reading then paused, and only the consumer resumes it).
        buffer = self.buffer
        return buffer.received != self._reported and (
            self._protocol.reading_paused or len(buffer) >= buffer.pending_size
        )

    def advance_deadline(self, deadline: float) -> None:
        if self._deadline is None or deadline >= self._deadline:
            return
        self._deadline = deadline
        self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        timer = self._timer
        if timer is not None:
            if self._armed_for <= deadline:
                return  # goes off first, and is armed again for this deadline (_time_up)
            timer.cancel()
        self._armed_for = deadline
        self._timer = self._loop.call_at(deadline, self._time_up)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _time_up(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or deadline == math.inf:
            return  # armed for an earlier read; none waits now with a deadline
        if deadline > self._armed_for:
            # Armed for an earlier read's deadline: the one waiting now has a later one. (Not
            # the clock: uvloop's timers go off up to a millisecond early, and arming again
            # for what is left would spin until the clock caught up.)
            self._armed_for = deadline
            self._timer = self._loop.call_at(deadline, self._time_up)
            return
        self._timed_out = True
        _wake(self._protocol.read_waiter)

    async def send(self, data: bytes) -> None:
        protocol = self._protocol
        if self._transport.is_closing():
            raise anyio.BrokenResourceError("the connection is closed")
        self._transport.write(data)
        self._sent_last = True
        while protocol.writing_paused:
            if self._transport.is_closing():
                raise anyio.BrokenResourceError("the connection closed while sending")
            await protocol.wait("write_waiter")

    async def aclose(self) -> None:
        if self._closed:
            # Closed already (an association closes its connection, and the code serving it
            # closes it again to be sure): no second turn of the loop for nothing.
            return
        self._disarm()  # a timer left armed would hold this connection until it goes off
        transport = self._transport
        if not transport.is_closing():
            # A FIN after what was sent, before the socket closes: a peer that is still
            # sending would otherwise get an RST, which can discard our last PDU (an A-ABORT)
            # unread at its end.
            with contextlib.suppress(OSError):
                transport.write_eof()
            transport.close()
        # close() lets asyncio finish on its next turn; then drop whatever a cancelled send left.
        await anyio.lowlevel.cancel_shielded_checkpoint()
        transport.abort()
        self._closed = True  # only now: a close in progress elsewhere is not yet done


class StreamConnection(Connection):
    """Any anyio byte stream (TLS): its chunks are copied into :attr:`buffer`."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = ReceiveBuffer()

    @property
    def peer_address(self) -> str | None:
        return _host_of(self.stream.extra(SocketAttribute.remote_address, None))

    async def receive(self) -> bool:
        self.buffer.make_room()
        try:
            chunk = await self.stream.receive(RECEIVE_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        self.buffer.append(chunk)
        return True

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def connect(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = None,
) -> Connection:
    """Open a TCP (optionally TLS) connection to a peer, with TCP_NODELAY set."""
    try:
        with anyio.fail_after(timeout):
            if ssl_context is None:
                return await SocketConnection.connect(host, port)
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
            _tune(stream)
            try:
                # DICOM TLS peers often close without close_notify; not an error.
                stream = await TLSStream.wrap(
                    stream, ssl_context=ssl_context, hostname=host, standard_compatible=False
                )
            except (anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                await stream.aclose()
                # A server that refuses us (our address, or our certificate under TLS 1.3)
                # closes during the handshake; ssl.SSLError (an OSError) is handled below.
                raise ConnectionClosed(
                    f"{host}:{port} closed the connection during the TLS handshake: it may not "
                    "accept our address or certificate (check ssl_context's certificate), "
                    "or does not speak TLS on this port"
                ) from exc
            return StreamConnection(stream)
    except TimeoutError as exc:
        raise DicomTimeoutError(f"connecting to {host}:{port} timed out after {timeout} s") from exc
    except OSError as exc:
        raise AssociationError(f"cannot connect to {host}:{port}: {exc}") from exc


ConnectionHandler = Callable[[Connection], Awaitable[None]]


class Listener:
    """A TCP listener on every address its host resolves to (IPv4 and IPv6 for ``""`` or
    ``"localhost"``, as peers may use either), all on one port; :meth:`serve` runs until
    cancelled or :meth:`aclose`.

    ``handshake_timeout`` bounds the TLS handshake of each incoming connection: the ARTIM timer
    of the association only starts once it is done, so without it a peer that connects and
    stays silent would hold its connection for ever.
    """

    def __init__(
        self, sockets: list[socket.socket], ssl_context: ssl.SSLContext | None,
        handshake_timeout: float | None = 30.0, gate: AssociationGate | None = None,
        admit_address: Callable[[str], bool] | None = None,
    ) -> None:
        self._sockets = sockets
        self.port = int(sockets[0].getsockname()[1])
        self._ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        #: Counts connections by source address; past its limits one is refused unread.
        self.gate = gate
        #: Whether a source address may connect at all (the acceptor's allowed networks): one
        #: that may not is closed at once, before a TLS handshake or any byte is read.
        self.admit_address = admit_address
        #: Accepts that failed (out of descriptors and the like), for whoever watches.
        self.accept_failures = 0
        # Set (and replaced) each time a connection served here ends: the accept loop waits
        # on it when out of descriptors, rather than retrying at once.
        self._connection_ended = anyio.Event()
        # The connections served, oldest first: the ones still negotiating may be shed.
        self._served: dict[_Served, None] = {}
        # The accept loops of a running serve(), for aclose() to end.
        self._accepting: anyio.CancelScope | None = None

    @classmethod
    async def bind(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float | None = 30.0, gate: AssociationGate | None = None,
        admit_address: Callable[[str], bool] | None = None,
    ) -> Listener:
        sockets: list[socket.socket] = []
        try:
            infos = _numeric_addresses(host, port)
            if infos is None:  # a name: looked up as asyncio looks names up, in its executor
                infos = await running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )
            seen: set[tuple[int, object]] = set()
            for family, kind, proto, _, address in infos:
                if (family, address[0]) in seen:
                    continue
                seen.add((family, address[0]))
                if sockets:  # port 0: every address on the port the first one got
                    address = (address[0], sockets[0].getsockname()[1], *address[2:])
                sockets.append(_listening_socket(family, kind, proto, address))
        except OSError as exc:
            for sock in sockets:
                sock.close()
            raise AssociationError(f"cannot listen on {host}:{port}: {exc}") from exc
        if not sockets:
            raise AssociationError(f"cannot listen on {host}:{port}: no address")
        return cls(sockets, ssl_context, handshake_timeout, gate, admit_address)

    async def serve(self, handler: ConnectionHandler) -> None:
        """Accept connections until cancelled or until :meth:`aclose`; then return once the
        connections already accepted are done."""
        async with anyio.create_task_group() as tasks:
            with anyio.CancelScope() as self._accepting:
                try:
                    async with anyio.create_task_group() as accepting:
                        for sock in self._sockets:
                            accepting.start_soon(self._accept, sock, handler, tasks)
                finally:
                    self._accepting = None

    async def _accept(
        self, listening: socket.socket, handler: ConnectionHandler,
        tasks: anyio.abc.TaskGroup,
    ) -> None:
        loop = running_loop()
        while listening.fileno() >= 0:
            try:
                sock, address = await loop.sock_accept(listening)
            except OSError as exc:
                self.accept_failures += 1
                if exc.errno in _OUT_OF_RESOURCES:
                    await self._wait_for_resources(exc)
                else:
                    # Refuse this one, keep listening (unless aclose() closed the socket
                    # meanwhile). The failed accept did not yield: without this checkpoint
                    # the loop would spin here.
                    await anyio.lowlevel.checkpoint()
                continue
            host = str(address[0]) if isinstance(address, tuple) else ""
            if self.admit_address is not None and not self.admit_address(host):
                log.info("refused a connection from %s: not in the allowed networks", host or "?")
                sock.close()
                continue
            if self.gate is not None and not self._admit(self.gate, host):
                self._refuse(sock, host)
                continue
            tasks.start_soon(self._serve_one, handler, sock, _Served(host))

    def _admit(self, gate: AssociationGate, host: str) -> bool:
        """Count a connection from ``host``. At the total limit, the oldest connection still
        negotiating after :data:`NEGOTIATION_GRACE` seconds makes room: silent connections
        from many addresses must not lock every legitimate peer out until ARTIM."""
        if gate.enter_address(host):
            return True
        if not gate.full_in_total(host):
            return False  # this address's own limit: shedding another's would not help
        oldest = anyio.current_time() - NEGOTIATION_GRACE
        for served in self._served:
            if served.since > oldest:
                break
            if served.connection is None or not served.connection.established:
                self._shed(gate, served)
                return gate.enter_address(host)
        return False

    def _shed(self, gate: AssociationGate, served: _Served) -> None:
        log.info("shed a connection from %s still negotiating: no room for a new one",
                 served.host or "?")
        del self._served[served]
        gate.leave_address(served.host)
        served.counted = False
        served.scope.cancel()

    async def _wait_for_resources(self, exc: OSError) -> None:
        """Out of descriptors (or memory): new connections wait in the kernel's backlog until
        one of ours ends, while the established ones are served. Retrying at once would spin
        the loop (the accept fails without yielding) and starve them all."""
        log.warning("cannot accept connections (%s): waiting until one closes", exc)
        # Bounded: the descriptors may be held by something else than our connections, whose
        # release no event of ours reports.
        with anyio.move_on_after(_RESOURCE_WAIT):
            await self._connection_ended.wait()

    def _refuse(self, sock: socket.socket, host: str) -> None:
        """Past the gate's limits: answer A-ASSOCIATE-RJ at once, unread, and close."""
        # Not a warning: a flood would write one line per connection.
        log.info("refused a connection from %s: too many at once", host or "?")
        if self._ssl_context is None:
            with contextlib.suppress(OSError):
                sock.send(_LOCAL_LIMIT_EXCEEDED)
        sock.close()

    async def _serve_one(
        self, handler: ConnectionHandler, sock: socket.socket, served: _Served
    ) -> None:
        self._served[served] = None
        try:
            with served.scope:
                await self._serve_socket(handler, sock, served)
        finally:
            self._served.pop(served, None)
            if self.gate is not None and served.counted:
                self.gate.leave_address(served.host)
            if served.connection is None:
                sock.close()  # shed before its connection was made
            ended, self._connection_ended = self._connection_ended, anyio.Event()
            ended.set()

    async def _serve_socket(
        self, handler: ConnectionHandler, sock: socket.socket, served: _Served
    ) -> None:
        connection: Connection
        try:
            if self._ssl_context is None:
                connection = await SocketConnection.from_accepted(sock)
            else:
                stream = await anyio.abc.SocketStream.from_socket(sock)
                _tune(stream)
                try:
                    with anyio.fail_after(self.handshake_timeout):
                        tls = await TLSStream.wrap(
                            stream, server_side=True, ssl_context=self._ssl_context,
                            standard_compatible=False,
                        )
                except (OSError, ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream):
                    # TimeoutError is an OSError: a silent peer lands here too. EndOfStream: a
                    # peer that closed before the handshake (a port probe) must not take the
                    # listener, and the client or server running it, down with it.
                    await stream.aclose()
                    return
                connection = StreamConnection(tls)
        except OSError:
            sock.close()
            return
        served.connection = connection
        await handler(connection)

    async def aclose(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        loop = running_loop()
        for sock in self._sockets:
            if sock.fileno() >= 0:
                # A pending sock_accept() leaves the descriptor registered with the event loop,
                # which does not notice the close: the next socket given the same number would
                # then never be polled. Unregistered first, its cancellation skips this.
                loop.remove_reader(sock.fileno())
                sock.close()


class _Served:
    """A connection a listener serves, as its admission control sees it."""

    __slots__ = ("connection", "counted", "host", "scope", "since")

    def __init__(self, host: str) -> None:
        self.host = host
        self.since = anyio.current_time()
        self.scope = anyio.CancelScope()
        self.connection: Connection | None = None
        self.counted = True  # in the gate's counts, until shed or ended


NEGOTIATION_GRACE = 1.0
"""Seconds a connection may negotiate (TLS handshake, A-ASSOCIATE-RQ) before it may be shed to
make room: a legitimate requestor sends its request right after connecting."""

_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_RESOURCE_WAIT = 1.0
"""Seconds an accept loop out of descriptors waits at most for one of its connections to end."""
_LOCAL_LIMIT_EXCEEDED = encode_pdu(LOCAL_LIMIT_EXCEEDED)


def _listening_socket(
    family: int, kind: int, proto: int, address: tuple[Any, ...]
) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows it would let another process steal the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # Its own socket for IPv6: else "::" would also claim the IPv4 port, which the
            # IPv4 socket binds next.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = [
    "RECEIVE_SIZE",
    "Connection",
    "ConnectionHandler",
    "Listener",
    "SocketConnection",
    "StreamConnection",
    "connect",
    "loop_time",
]
