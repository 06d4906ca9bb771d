"""ReceiveBuffer: whatever the chunking, consumption and compaction, the stream comes out whole."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aiodicom.buffer import (
    INITIAL_SIZE,
    MAX_PREFERRED_SIZE,
    MIN_FREE,
    PREFERRED_PDUS,
    ReceiveBuffer,
)


class BufferMachine(RuleBasedStateMachine):
    """Bytes go in as a socket (``free_space``/``filled``) or a TLS stream (``append``) puts them,
    come out as the framing takes them (``data``/``consume``), with ``make_room`` in between."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = ReceiveBuffer(0)
        self.stream = bytearray()  # every byte put in, in order
        self.consumed = 0
        self.capacity = 0
        # Views of data() that the contract says are still valid, with the bytes they showed.
        self.views: list[tuple[memoryview, bytes]] = []

    @initialize(size=st.integers(min_value=0, max_value=300))
    def create(self, size: int) -> None:
        self.buffer = ReceiveBuffer(size)
        self.capacity = size
        assert self.buffer.capacity == size and len(self.buffer) == 0

    def _put(self, chunk: bytes) -> None:
        self.stream += chunk

    @rule(chunk=st.binary(max_size=400))
    def read_into_free_space(self, chunk: bytes) -> None:
        # What recv_into does: at most the free tail, and reading never moves held bytes.
        space = self.buffer.free_space()
        assert len(space) == self.buffer.free
        taken = chunk[: len(space)]
        space[: len(taken)] = taken
        self.buffer.filled(len(taken))
        self._put(taken)

    @rule(chunk=st.binary(max_size=400))
    def append(self, chunk: bytes) -> None:
        before = self.buffer.capacity
        needs_room = self.buffer.free < len(chunk)
        self.buffer.append(chunk)
        self._put(chunk)
        if needs_room and self.buffer.capacity == before:
            self.views.clear()  # made room by compacting, which the contract allows

    @rule(chunk=st.binary(min_size=1, max_size=50))
    def append_memoryview(self, chunk: bytes) -> None:
        # A TLS layer may hand out a view; a non-byte format counts its bytes, not its items.
        padded = chunk + bytes(len(chunk) % 2)
        before = self.buffer.capacity
        needs_room = self.buffer.free < len(padded)
        self.buffer.append(memoryview(padded).cast("H"))
        self._put(padded)
        if needs_room and self.buffer.capacity == before:
            self.views.clear()

    @rule(data=st.data())
    def consume(self, data: st.DataObject) -> None:
        count = data.draw(st.integers(min_value=0, max_value=len(self.buffer)), label="count")
        expected = self.stream[self.consumed : self.consumed + count]
        assert bytes(self.buffer.data()[:count]) == expected
        self.buffer.consume(count)
        self.consumed += count
        if len(self.buffer) == 0:
            # An empty buffer rewinds: the next read may reuse the memory earlier views show.
            self.views.clear()

    @precondition(lambda self: len(self.buffer) > 0)
    @rule()
    def take_view(self) -> None:
        view = self.buffer.data()
        self.views.append((view, bytes(view)))

    @rule(
        wanted=st.integers(min_value=0, max_value=64) | st.integers(min_value=0, max_value=3000),
        pending_size=st.one_of(st.just(0), st.integers(min_value=1, max_value=5000)),
    )
    def make_room(self, wanted: int, pending_size: int) -> None:
        buffer = self.buffer
        buffer.pending_size = pending_size
        length = len(buffer)
        before_capacity = buffer.capacity
        buffer.make_room(wanted)
        assert buffer.free >= wanted
        # Room for the pending PDU as far as what arrived allows (never sized by the header
        # alone): as much again as is here, or the initial size.
        allowed = max(INITIAL_SIZE, 2 * length + MIN_FREE)
        assert buffer.capacity - len(buffer) >= min(pending_size, allowed) - length
        assert len(buffer) == length
        needed = length + max(wanted, min(pending_size, allowed) - length)
        if buffer.capacity == before_capacity:
            self.views.clear()  # compacted in place: earlier views may now show other bytes
        else:
            # Grown no more than the preferred size, twice the old one, or what is needed.
            assert buffer.capacity <= max(
                min(PREFERRED_PDUS * pending_size, MAX_PREFERRED_SIZE, allowed),
                2 * before_capacity,
                needed,
            )
        if pending_size == 0 and needed <= before_capacity:
            assert buffer.capacity == before_capacity  # compacting was enough

    @invariant()
    def stream_intact(self) -> None:
        buffer = self.buffer
        assert bytes(buffer.data()) == self.stream[self.consumed :]
        assert buffer.received == len(self.stream)
        assert len(buffer) == len(self.stream) - self.consumed
        assert buffer.free == buffer.capacity - len(buffer) - buffer.start
        assert buffer.capacity >= self.capacity  # never shrinks
        self.capacity = buffer.capacity
        for view, shown in self.views:
            assert bytes(view) == shown


BufferMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBufferMachine = BufferMachine.TestCase


def test_new_buffer_is_empty() -> None:
    buffer = ReceiveBuffer()
    assert buffer.capacity == INITIAL_SIZE
    assert len(buffer) == 0 and buffer.received == 0 and buffer.pending_size == 0
    assert buffer.free == INITIAL_SIZE and bytes(buffer.data()) == b""


def test_consuming_everything_frees_the_whole_buffer() -> None:
    buffer = ReceiveBuffer(64)
    buffer.append(b"x" * 40)
    buffer.consume(40)
    buffer.make_room(64)
    assert buffer.free == 64
    buffer.append(b"y" * 64)
    assert buffer.capacity == 64 and bytes(buffer.data()) == b"y" * 64


def test_make_room_compacts_before_growing() -> None:
    buffer = ReceiveBuffer(100)
    buffer.append(bytes(range(100)))
    buffer.consume(90)
    buffer.make_room(50)
    assert buffer.capacity == 100
    assert bytes(buffer.data()) == bytes(range(90, 100)) and buffer.free == 90


def test_views_survive_growth() -> None:
    buffer = ReceiveBuffer(32)
    buffer.append(b"A" * 32)
    buffer.consume(4)
    view = buffer.data()
    buffer.make_room(1000)
    assert buffer.capacity >= 28 + 1000
    # The old bytearray was replaced, not resized or reused: the view still shows its bytes,
    # whatever is read into the new one.
    buffer.free_space()[:1000] = b"B" * 1000
    buffer.filled(1000)
    buffer.consume(len(buffer))
    buffer.append(b"C" * 500)
    assert bytes(view) == b"A" * 28


def test_pending_pdu_room_grows_with_what_arrived() -> None:
    # A header announcing a large PDU gets no room for it until its bytes arrive: each growth
    # makes room for as much again as is already here.
    buffer = ReceiveBuffer()
    header = b"\x04\x00" + (100_000 - 6).to_bytes(4, "big")
    buffer.append(header)
    buffer.pending_size = 100_000
    buffer.make_room()
    assert buffer.capacity == INITIAL_SIZE
    buffer.append(bytes(INITIAL_SIZE - len(header) - MIN_FREE))
    buffer.make_room()
    assert buffer.free >= 100_000 - len(buffer)


def test_preferred_size_is_several_pdus_up_to_the_cap() -> None:
    # Small PDUs: the initial buffer already holds several.
    buffer = ReceiveBuffer()
    buffer.append(b"\x04\x00\x00\x00\x10\x00")
    buffer.pending_size = 4096 + 6
    buffer.make_room()
    assert buffer.capacity == INITIAL_SIZE
    # Larger ones, once most of one arrived: room for several, never more than the cap.
    for pdu_size in (INITIAL_SIZE, MAX_PREFERRED_SIZE // 3, MAX_PREFERRED_SIZE // 2 + 1):
        buffer = ReceiveBuffer(pdu_size)
        buffer.append(bytes(pdu_size - 6))
        buffer.pending_size = pdu_size
        buffer.make_room()
        arrived = pdu_size - 6
        preferred = min(PREFERRED_PDUS * pdu_size, MAX_PREFERRED_SIZE, 2 * arrived + MIN_FREE)
        assert buffer.capacity == max(preferred, arrived + MIN_FREE)
        assert buffer.capacity <= MAX_PREFERRED_SIZE
    # A PDU larger than the cap gets what it needs as it arrives, and no more.
    huge = 3 * MAX_PREFERRED_SIZE + 5
    buffer = ReceiveBuffer()
    buffer.append(bytes(6))
    buffer.pending_size = huge
    while buffer.capacity - buffer.start < huge:
        buffer.append(bytes(buffer.free))
        buffer.make_room()
    assert buffer.capacity < 2 * huge


def test_growth_for_one_huge_pdu_is_amortized() -> None:
    # Without a maximum length the size is only known as bytes arrive: each step at least
    # doubles, so the bytes moved stay proportional to the PDU.
    buffer = ReceiveBuffer(1024)
    capacities = [buffer.capacity]
    for _ in range(10):
        buffer.free_space()[:] = bytes(buffer.free)
        buffer.filled(buffer.free)
        buffer.make_room(1)
        capacities.append(buffer.capacity)
    assert buffer.received == len(buffer)
    assert all(b >= 2 * a for a, b in itertools.pairwise(capacities))


def test_room_for_several_pdus_of_the_size_that_arrived_whole() -> None:
    """After large PDUs arrived and were consumed, the buffer keeps room for several of them,
    so that a read rarely fills it (a full buffer pauses reading: two system calls per read);
    a PDU that was only announced never sizes it."""
    announced = ReceiveBuffer()
    announced.append(b"\x04\x00" + (1 << 20).to_bytes(4, "big") + b"ab")
    announced.pending_size = (1 << 20) + 6  # the header says 1 MiB; 8 bytes arrived
    announced.make_room()
    assert announced.capacity == INITIAL_SIZE
    arrived = ReceiveBuffer()
    pdu = 128 * 1024
    arrived.make_room(pdu)
    arrived.append(bytes(pdu))
    arrived.consume(pdu)  # one whole PDU decoded
    arrived.make_room()
    assert arrived.capacity >= 4 * pdu
    assert arrived.capacity <= MAX_PREFERRED_SIZE
