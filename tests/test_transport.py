"""The TCP transport over real loopback sockets: bytes intact, back-pressure, closing, listening."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import sys
import threading
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest
from peers import LOOPBACK, free_port

from aiodicom import transport
from aiodicom.buffer import INITIAL_SIZE, MIN_FREE, ReceiveBuffer
from aiodicom.errors import AssociationError
from aiodicom.transport import (
    Connection,
    Listener,
    SocketConnection,
    StreamConnection,
    _BufferedProtocol,
)

# Generous: a test that waits longer than this is stuck, not slow.
STUCK = 10


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 7919 + size).randbytes(size)


def _chunks(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, largest)
        out.append(data[pos : pos + step])
        pos += step
    return out


@contextlib.asynccontextmanager
async def listening(
    handler: transport.ConnectionHandler,
) -> AsyncIterator[Listener]:
    listener = await Listener.bind(LOOPBACK, 0)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handler)
        try:
            yield listener
        finally:
            await listener.aclose()
            # aclose() ends serve() (tested on its own below); cancelling keeps a failure there
            # from hanging every other test.
            tasks.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def connected(*, stream_client: bool = False) -> AsyncIterator[tuple[Connection, Connection]]:
    """A client connection and the connection our Listener accepted for it."""
    send, receive = anyio.create_memory_object_stream[Connection](1)

    async def handler(connection: Connection) -> None:
        await send.send(connection)

    async with listening(handler) as listener:
        client: Connection
        if stream_client:
            client = StreamConnection(await anyio.connect_tcp(LOOPBACK, listener.port))
        else:
            client = await transport.connect(LOOPBACK, listener.port)
        server = await receive.receive()
        try:
            yield client, server
        finally:
            await client.aclose()
            await server.aclose()
            send.close()
            receive.close()


async def receive_all(connection: Connection, rng: random.Random | None = None) -> bytes:
    """Everything until the peer closes; consumes a random part each time when ``rng`` is given
    (as the framing does, which leaves an incomplete PDU in the buffer)."""
    buffer = connection.buffer
    out = bytearray()
    while await connection.receive():
        count = len(buffer) if rng is None else rng.randint(0, len(buffer))
        out += buffer.data()[:count]
        buffer.consume(count)
    # Once the end is reported nothing new ever arrives; what is left was all reported before.
    out += buffer.data()
    buffer.consume(len(buffer))
    assert not await connection.receive()
    return bytes(out)


async def receive_exactly(connection: Connection, size: int, rng: random.Random) -> bytes:
    buffer = connection.buffer
    out = bytearray()
    while len(out) < size:
        if len(out) + len(buffer) < size:  # else all of it is here: nothing new would come
            assert await connection.receive()
        count = rng.randint(0, min(len(buffer), size - len(out)))
        out += buffer.data()[:count]
        buffer.consume(count)
    return bytes(out)


async def send_all(connection: Connection, chunks: list[bytes]) -> None:
    for chunk in chunks:
        await connection.send(chunk)
    await connection.aclose()


def _raw_socket(connection: Connection) -> socket.socket:
    assert isinstance(connection, SocketConnection)
    raw = connection._transport.get_extra_info("socket")
    assert raw is not None
    return raw  # type: ignore[no-any-return]


# --- bytes arrive intact ------------------------------------------------------------------------


SIZES = [1, 1000, MIN_FREE, INITIAL_SIZE - 1, INITIAL_SIZE + 1, 5 * INITIAL_SIZE + 17, 1 << 20]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("direction", ["to-acceptor", "to-requestor"])
async def test_bytes_arrive_intact(size: int, direction: str) -> None:
    rng = random.Random(size)
    data = _payload(size)
    with anyio.fail_after(STUCK):
        async with connected() as (client, server):
            sender, receiver = (client, server) if direction == "to-acceptor" else (server, client)
            got = b""

            async def receive() -> None:
                nonlocal got
                got = await receive_all(receiver, rng)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(receive)
                await send_all(sender, _chunks(data, random.Random(-size), max(1, size // 7)))
    assert got == data
    assert receiver.buffer.received == size


async def test_stream_connection_both_ways() -> None:
    """StreamConnection (what TLS uses) over plain anyio TCP, against a SocketConnection."""
    up, down = _payload(300_000, 1), _payload(200_000, 2)
    got: dict[str, bytes] = {}
    with anyio.fail_after(STUCK):
        async with connected(stream_client=True) as (client, server):
            assert isinstance(client, StreamConnection)

            async def receive(name: str, connection: Connection, size: int) -> None:
                got[name] = await receive_exactly(connection, size, random.Random(name))

            async def send(connection: Connection, data: bytes, seed: int) -> None:
                for chunk in _chunks(data, random.Random(seed), 50_000):
                    await connection.send(chunk)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(receive, "up", server, len(up))
                tasks.start_soon(receive, "down", client, len(down))
                tasks.start_soon(send, client, up, 3)
                tasks.start_soon(send, server, down, 4)
            assert got == {"up": up, "down": down}
            await client.aclose()
            await client.aclose()
            assert not await client.receive()
            assert not await server.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await client.send(b"x")


async def test_end_is_reported_after_the_last_bytes() -> None:
    with anyio.fail_after(STUCK):
        async with connected() as (client, server):
            await client.send(b"last bytes")
            await client.aclose()
            await client.aclose()  # idempotent
            assert await server.receive()
            assert bytes(server.buffer.data()) == b"last bytes"
            # The end stays the end, whether or not the bytes were consumed.
            assert not await server.receive()
            server.buffer.consume(len(server.buffer))
            assert not await server.receive()


# --- back-pressure ------------------------------------------------------------------------------


async def test_a_receiver_that_does_not_consume_stops_the_sender() -> None:
    chunk_size = 1 << 16
    with anyio.fail_after(STUCK):
        async with connected() as (client, server):
            # What may be in flight: the sender's and receiver's kernel buffers (Linux reports
            # them with their bookkeeping share, so they over-count), our receive buffer and the
            # chunk being sent.
            bound = (
                _raw_socket(client).getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                + _raw_socket(server).getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                + server.buffer.capacity
                + chunk_size
            )
            total = bound + (4 << 20)
            data = _payload(total)
            sent = 0
            finished = anyio.Event()

            async def send() -> None:
                nonlocal sent
                for start in range(0, total, chunk_size):
                    piece = data[start : start + chunk_size]
                    await client.send(piece)
                    sent += len(piece)
                await client.aclose()
                finished.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send)
                # Nobody calls server.receive(): the sender must get stuck with a bounded amount
                # in flight. The wait only gives it the chance to send too much.
                with anyio.move_on_after(0.5):
                    await finished.wait()
                assert not finished.is_set()
                assert 0 < sent <= bound
                # Reading paused instead of the buffer growing.
                assert server.buffer.capacity == INITIAL_SIZE
                # Once the receiver reads again, the rest flows.
                got = await receive_all(server)
            assert finished.is_set() and sent == total
            assert got == data


# --- closing ------------------------------------------------------------------------------------


async def test_send_after_the_peer_closed_raises() -> None:
    with anyio.fail_after(STUCK):
        async with connected() as (client, server):
            await server.aclose()
            # The first sends may still be taken by the kernel; the close is noticed soon.
            with pytest.raises(anyio.BrokenResourceError):
                for _ in range(10_000):
                    await client.send(b"x" * 1024)
                    await anyio.lowlevel.checkpoint()
            assert not await client.receive()


async def test_send_after_closing_raises_and_receive_reports_the_end() -> None:
    with anyio.fail_after(STUCK):
        async with connected() as (client, server):
            await client.aclose()
            with pytest.raises(anyio.BrokenResourceError):
                await client.send(b"x")
            assert not await client.receive()
            assert not await server.receive()


async def test_peer_gets_the_last_bytes_then_a_clean_end() -> None:
    """send() then aclose() at once: the peer reads everything, then EOF (a FIN, not a reset)."""
    data = _payload(1 << 20) + b"A-ABORT"
    accepted = anyio.Event()

    async def handler(connection: Connection) -> None:
        await connection.send(data)
        await connection.aclose()
        await connection.aclose()
        accepted.set()

    got = bytearray()
    with anyio.fail_after(STUCK):
        async with listening(handler) as listener:
            peer = await anyio.connect_tcp(LOOPBACK, listener.port)
            async with peer:
                with pytest.raises(anyio.EndOfStream):  # a reset would be BrokenResourceError
                    while True:
                        got += await peer.receive()
            await accepted.wait()
    assert got == data


@pytest.mark.skipif(sys.platform != "linux", reason="what a reset discards depends on the OS")
async def test_last_bytes_reach_a_peer_that_is_still_sending() -> None:
    """Closing with unread input resets the connection; what was sent before still arrives."""
    with anyio.fail_after(STUCK):
        accepted: list[Connection] = []
        ready = anyio.Event()

        async def handler(connection: Connection) -> None:
            accepted.append(connection)
            ready.set()

        async with listening(handler) as listener:
            peer = await anyio.connect_tcp(LOOPBACK, listener.port)
            await ready.wait()
            [server] = accepted
            async with peer:
                # More than our receive buffer takes: unread bytes are left in the kernel.
                await peer.send(bytes(1 << 18))
                assert await server.receive()
                await server.send(b"A-ABORT")
                await server.aclose()
                got = bytearray()
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    while True:
                        got += await peer.receive()
                assert got == b"A-ABORT"


# --- connecting and listening -------------------------------------------------------------------


async def test_connect_to_a_closed_port_fails() -> None:
    with anyio.fail_after(STUCK), pytest.raises(AssociationError, match="cannot connect"):
        await transport.connect(LOOPBACK, free_port())


async def test_listener_aclose_ends_serve() -> None:
    served: list[Connection] = []

    async def handler(connection: Connection) -> None:
        served.append(connection)
        await connection.aclose()

    listener = await Listener.bind(LOOPBACK, 0)
    with anyio.fail_after(STUCK):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, handler)
            connection = await transport.connect(LOOPBACK, listener.port)
            assert not await connection.receive()  # accepted, then closed by the handler
            await connection.aclose()
            await listener.aclose()
            await listener.aclose()  # idempotent
        # serve() returned by itself: the task group was not cancelled.
        assert not tasks.cancel_scope.cancel_called
        assert len(served) == 1
        with pytest.raises(AssociationError):
            await transport.connect(LOOPBACK, listener.port)
        # A closed listener serves nothing.
        await listener.serve(handler)


async def test_serve_waits_for_accepted_connections_after_aclose() -> None:
    started, release = anyio.Event(), anyio.Event()
    order: list[str] = []

    async def handler(connection: Connection) -> None:
        started.set()
        await release.wait()
        order.append("handler")
        await connection.aclose()

    async def serve(listener: Listener) -> None:
        await listener.serve(handler)
        order.append("serve")

    listener = await Listener.bind(LOOPBACK, 0)
    with anyio.fail_after(STUCK):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, listener)
            connection = await transport.connect(LOOPBACK, listener.port)
            await started.wait()
            await listener.aclose()
            await anyio.wait_all_tasks_blocked()
            assert order == []
            release.set()
        await connection.aclose()
    assert order == ["handler", "serve"]


async def test_closing_a_serving_listener_leaves_the_event_loop_sound() -> None:
    """The closed descriptor must not stay registered: the next socket may get its number."""

    async def handler(connection: Connection) -> None:
        await connection.aclose()

    with anyio.fail_after(STUCK):
        listener = await Listener.bind(LOOPBACK, 0)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, handler)
            await anyio.wait_all_tasks_blocked()
            await listener.aclose()
            # New sockets now, one likely given the listener's number: they must work, even
            # before serve() got to run again.
            for _ in range(3):
                async with connected() as (client, server):
                    await client.send(b"ping")
                    assert await server.receive()
                    assert bytes(server.buffer.data()) == b"ping"


@pytest.mark.parametrize("host", ["", LOOPBACK, "::1"])
async def test_listening_on_an_address_starts_no_thread(host: str) -> None:
    """An address needs no lookup: binding to it must not go through asyncio's getaddrinfo,
    whose executor thread would then idle beside every storage SCP for the loop's life."""
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    loop = asyncio.get_running_loop()
    before = set(threading.enumerate())

    async def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"looked up {args[0]!r} in the executor")

    loop.getaddrinfo = refuse  # type: ignore[method-assign]
    try:
        try:
            listener = await Listener.bind(host, 0)
        except AssociationError as exc:
            if host == "::1" and "Cannot assign" in str(exc):
                pytest.skip("no IPv6 loopback here")
            raise
        await listener.aclose()
    finally:
        del loop.getaddrinfo  # the instance attribute: the method shows through again
    assert set(threading.enumerate()) <= before


async def test_listening_on_a_name_looks_it_up() -> None:
    listener = await Listener.bind("localhost", 0)
    try:
        assert listener.port > 0
    finally:
        await listener.aclose()


async def test_bind_to_a_port_in_use_fails() -> None:
    listener = await Listener.bind(LOOPBACK, 0)
    try:
        with pytest.raises(AssociationError, match="cannot listen"):
            await Listener.bind(LOOPBACK, listener.port)
    finally:
        await listener.aclose()


async def test_listening_on_all_interfaces_takes_ipv4_and_ipv6_on_one_port() -> None:
    """``""`` resolves to 0.0.0.0 and :: here: a peer may come over either, so both are bound,
    on the same port (picked once for port 0)."""
    families = {info[0] for info in socket.getaddrinfo(
        None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)}
    if socket.AF_INET6 not in families:
        pytest.skip("this machine resolves no IPv6 wildcard address")
    arrived: list[bytes] = []

    async def handler(connection: Connection) -> None:
        while await connection.receive():
            pass
        arrived.append(bytes(connection.buffer.data()))

    listener = await Listener.bind("", 0)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handler)
        for host in ("127.0.0.1", "::1"):
            client = await transport.connect(host, listener.port)
            await client.send(host.encode())
            await client.aclose()
        with anyio.fail_after(5):
            while len(arrived) < 2:
                await anyio.sleep(0.01)
        await listener.aclose()
    assert sorted(arrived) == [b"127.0.0.1", b"::1"]


async def test_a_name_binds_every_address_it_resolves_to() -> None:
    listener = await Listener.bind("localhost", 0)
    try:
        expected = {info[4][0] for info in socket.getaddrinfo(
            "localhost", 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)}
        for address in expected:
            client = await transport.connect(address, listener.port)
            await client.aclose()
    finally:
        await listener.aclose()


# --- the protocol's buffer hand-out -------------------------------------------------------------


def test_a_full_buffer_grows_rather_than_compacting_under_the_consumer() -> None:
    buffer = ReceiveBuffer(64)
    buffer.append(bytes(range(64)))
    buffer.consume(10)
    view = buffer.data()  # e.g. a P-DATA value the consumer still reads
    protocol = _BufferedProtocol(buffer)
    space = protocol.get_buffer(-1)
    assert len(space) > 0
    space[: len(space)] = b"\xff" * len(space)
    protocol.buffer_updated(len(space))
    assert bytes(view) == bytes(range(10, 64))
    assert bytes(buffer.data()) == bytes(range(10, 64)) + b"\xff" * len(space)


@pytest.mark.parametrize("stream_client", [False, True], ids=["socket", "stream"])
async def test_receive_before_gives_up_at_its_deadline_and_not_before(stream_client: bool) -> None:
    """What an acceptor's idle timeout and minimum receive rate stand on: a timed read returns
    None at its deadline, True for bytes before it, and a deadline brought forward counts."""
    async with connected(stream_client=stream_client) as (client, server):
        now = anyio.current_time
        started = now()
        assert await server.receive_before(started + 0.2) is None
        assert now() - started >= 0.19
        await client.send(b"abc")
        assert await server.receive_before(now() + 30) is True
        server.buffer.consume(len(server.buffer))

        # No deadline yet (an operation of ours was running), then one set from outside.
        async def advance() -> None:
            await anyio.sleep(0.1)
            server.advance_deadline(now() + 0.1)
            server.advance_deadline(now() + 60)  # later: ignored

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(advance)
            started = now()
            with anyio.fail_after(10):
                assert await server.receive_before(math.inf) is None
        assert now() - started >= 0.19
        # And the connection still works after its timed reads gave up.
        await client.send(b"e")
        assert await server.receive_before(now() + 30) is True
        assert bytes(server.buffer.data()) == b"e"


async def test_a_timed_read_after_one_with_an_earlier_deadline_waits_for_its_own() -> None:
    """The timer of a timed read is kept for the next (one per idle timeout, not one per read):
    when it goes off at an earlier read's deadline, the read waiting then goes on to its own
    deadline; and closing the connection leaves no timer holding it."""
    async with connected() as (client, server):
        assert isinstance(server, SocketConnection)
        now = anyio.current_time
        await client.send(b"a")
        # Bytes already there: no wait, no timer.
        assert await server.receive_before(now() + 0.1) is True
        server.buffer.consume(len(server.buffer))

        # The bytes come soon after a read starts waiting, and its deadline is far past them:
        # a loaded CI machine once took over 50 ms to deliver them (the read ended at +0.1).
        near = 0.3

        async def send_later() -> None:
            await anyio.sleep(0.01)
            await client.send(b"b")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send_later)
            assert await server.receive_before(now() + near) is True  # armed at +near
        server.buffer.consume(len(server.buffer))
        started = now()
        # The timer armed for the read above goes off while this one waits: it must not end it.
        assert await server.receive_before(started + 2 * near) is None
        assert now() - started >= 2 * near - 0.01
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send_later)
            assert await server.receive_before(now() + 30) is True
        assert server._timer is not None  # kept for the next read

        # Kept at a near deadline, it goes off during a read that has none yet: that read goes
        # on, and ends at the deadline set for it from outside later.
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send_later)
            assert await server.receive_before(now() + near) is True  # armed at +near
        server.buffer.consume(len(server.buffer))

        async def advance_later() -> None:
            await anyio.sleep(near + 0.2)  # after the kept timer went off
            server.advance_deadline(now() + 0.1)

        started = now()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(advance_later)
            with anyio.fail_after(10):
                assert await server.receive_before(math.inf) is None
        assert now() - started >= near + 0.29
        await server.aclose()
        assert server._timer is None


async def test_a_reader_waiting_for_a_large_pdu_wakes_once_it_is_whole() -> None:
    """Bytes of an incomplete PDU wake nobody: a receive returns once as many bytes as the
    consumer said the pending PDU has are here, and a timed read that reaches its deadline
    reports the bytes that came meanwhile, not a timeout."""
    async with connected() as (client, server):
        pdu_size = 40_000  # fits the initial buffer with room to spare: reading never pauses
        assert INITIAL_SIZE - pdu_size >= MIN_FREE
        server.buffer.pending_size = pdu_size  # what the association sets from the PDU header
        returned = anyio.Event()

        async def wait_for_the_pdu() -> None:
            assert await server.receive() is True
            returned.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait_for_the_pdu)
            await client.send(bytes(10_000))
            await anyio.sleep(0.1)  # time for those bytes to arrive, which must not wake it
            assert not returned.is_set()
            assert len(server.buffer) == 10_000
            await client.send(bytes(pdu_size - 10_000))
            with anyio.fail_after(STUCK):
                await returned.wait()
        assert len(server.buffer) == pdu_size

        server.buffer.consume(pdu_size)
        server.buffer.pending_size = 1_000
        await client.send(bytes(10))
        started = anyio.current_time()
        assert await server.receive_before(started + 0.2) is True
        assert anyio.current_time() - started >= 0.19


async def test_a_receive_right_after_our_own_send_does_not_try_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Right after a send of ours the peer has yet to answer, so a read of the socket then
    would only fail (a system call and an exception per request answered): the receive waits
    for the loop to report the answer instead. Even an answer already in the kernel arrives
    that way, one turn later."""
    tried: list[SocketConnection] = []
    original = SocketConnection._read_now

    def counting(self: SocketConnection) -> None:
        tried.append(self)
        original(self)

    monkeypatch.setattr(SocketConnection, "_read_now", counting)
    async with connected() as (client, server):
        await client.send(b"question")
        with anyio.fail_after(STUCK):
            assert await server.receive() is True
            assert server in tried  # it had sent nothing: it took the bytes at once
            server.buffer.consume(len(server.buffer))
            await server.send(b"answer")  # in the client's socket before it reads
            assert await client.receive() is True
        assert client not in tried
        assert bytes(client.buffer.data()) == b"answer"


async def test_closing_a_closed_connection_again_takes_no_loop_turn() -> None:
    """An association closes its connection and the code serving it closes it once more: the
    second close has nothing to wait for, so it must not yield to the loop (a turn per
    association ended, for nothing)."""
    async with connected() as (client, _server):
        assert isinstance(client, SocketConnection)
        await client.aclose()
        ran = False

        def other() -> None:
            nonlocal ran
            ran = True

        asyncio.get_running_loop().call_soon(other)
        await client.aclose()
        assert not ran
        with pytest.raises(anyio.BrokenResourceError):  # closed all the same
            await client.send(b"x")


async def test_bytes_already_in_the_kernel_are_read_without_a_loop_turn() -> None:
    """A receive takes what the socket already holds itself: the loop would take a turn, a
    select and a callback to report it (the peer often sends the next PDU while we work on
    one). Nothing there, it waits as before."""
    async with connected() as (client, server):
        await client.send(b"abc")  # over loopback, in the server's socket once this returns
        ran = False

        def other() -> None:
            nonlocal ran
            ran = True

        asyncio.get_running_loop().call_soon(other)
        assert await server.receive() is True
        assert not ran  # no turn of the loop was needed
        assert bytes(server.buffer.data()) == b"abc"
        server.buffer.consume(3)
        started = anyio.current_time()
        assert await server.receive_before(started + 0.1) is None  # nothing: waited it out
        await client.send(b"d")
        with anyio.fail_after(STUCK):
            assert await server.receive() is True
        assert bytes(server.buffer.data()) == b"d"


async def test_a_read_of_our_own_leaves_the_transport_room_in_the_buffer() -> None:
    """The loop may already have the transport's read of a socket queued when a receive takes
    what the socket holds itself: that read must still find room. Had ours filled the buffer,
    the transport's would grow it to twice its size (a retrieval's 1 MiB buffer to 2 MiB
    beside the old one: a C-GET's peak memory doubled now and then)."""
    async with connected() as (client, server):
        assert isinstance(server, SocketConnection)
        # Only the direct read below may take the bytes, as when the transport's read is
        # still queued behind the task that makes it.
        server._transport.pause_reading()
        capacity = server.buffer.capacity
        await client.send(bytes(2 * capacity))  # more than the buffer holds
        server._read_now()
        assert len(server.buffer) >= capacity // 2  # it did take what it could
        assert server.buffer.free >= MIN_FREE
        space = server._protocol.get_buffer(-1)  # the transport's read, as the loop makes it
        assert len(space) >= MIN_FREE
        assert server.buffer.capacity == capacity
        server._transport.resume_reading()


async def test_bytes_that_came_meanwhile_are_handed_over_before_room_is_made() -> None:
    """While the consumer works, the transport reads on until the buffer is nearly full, then
    pauses. The next receive hands those bytes over as they are; making room first would have
    grown a buffer full of whole PDUs to twice its size (a C-GET's 1 MiB buffer to 2 MiB
    beside the old one, whenever the consumer fell behind)."""
    async with connected() as (_client, server):
        assert isinstance(server, SocketConnection)
        server._transport.pause_reading()  # the transport's reads are played here instead
        buffer = server.buffer
        capacity = buffer.capacity
        protocol = server._protocol
        while not protocol.reading_paused:
            space = protocol.get_buffer(-1)
            space[:] = bytes(len(space))
            protocol.buffer_updated(len(space))
        assert buffer.free < MIN_FREE
        with anyio.fail_after(STUCK):
            assert await server.receive() is True
        assert buffer.capacity == capacity
        assert len(buffer) == capacity
