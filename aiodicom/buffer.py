"""The receive buffer of one connection: the socket reads into it, the framing reads from it.

One ``bytearray`` per connection, reused for its whole life: ``recv_into`` fills the free tail,
whole PDUs are decoded in place from the unconsumed middle, and what a PDU carries is copied out
(or written to a file) exactly once by the layers above. Reusing the memory matters more than it
seems: fresh memory for every read costs a page fault per 4 KiB, which was a third of the time
of a large retrieval.

Views handed out by :meth:`ReceiveBuffer.data` stay valid until the next :meth:`make_room`: the
caller must be done with them (copied what it keeps) before it reads again.
"""

from __future__ import annotations

__all__ = ["INITIAL_SIZE", "MAX_PREFERRED_SIZE", "MIN_FREE", "PREFERRED_PDUS", "ReceiveBuffer"]

#: Small enough that hundreds of idle associations cost little; it grows for large PDUs.
INITIAL_SIZE = 1 << 16
#: Below this much free space reading pauses until the consumer makes room: TCP flow control
#: then slows the peer, and a read is never so small that the per-call cost dominates.
MIN_FREE = 1 << 14
#: A peer sending large PDUs gets a buffer of several of them (up to this size): the tail then
#: rarely runs short mid-PDU, so the incomplete PDU is rarely moved to the front.
MAX_PREFERRED_SIZE = 1 << 20
#: ... namely this many PDUs of the size seen.
PREFERRED_PDUS = 4


class ReceiveBuffer:
    """``[start:end]`` holds received, unconsumed bytes; ``[end:]`` is free for the next read."""

    __slots__ = ("_buffer", "end", "largest_step", "pending_size", "received", "start")

    def __init__(self, size: int = INITIAL_SIZE) -> None:
        self._buffer = bytearray(size)
        self.start = 0
        self.end = 0
        # The whole size of the incomplete PDU at the front, once its header is in (0: unknown).
        self.pending_size = 0
        # Bytes ever received: lets a reader tell "new bytes arrived" across compactions.
        self.received = 0
        # The most bytes of whole PDUs consumed at once: what this peer really sends in one
        # go (it arrived), which the buffer is sized for, never what a header announces.
        self.largest_step = 0

    @property
    def capacity(self) -> int:
        return len(self._buffer)

    @property
    def free(self) -> int:
        return len(self._buffer) - self.end

    def __len__(self) -> int:
        return self.end - self.start

    def data(self) -> memoryview:
        """The unconsumed bytes, without copying."""
        return memoryview(self._buffer)[self.start : self.end]

    def free_space(self) -> memoryview:
        """Where the next read goes; call :meth:`filled` with the count read."""
        return memoryview(self._buffer)[self.end :]

    def filled(self, count: int) -> None:
        self.end += count
        self.received += count

    def append(self, chunk: bytes | bytearray | memoryview) -> None:
        """For transports that hand out their own chunks (TLS): copy one in."""
        size = memoryview(chunk).nbytes
        if self.free < size:
            self.make_room(size)
        self._buffer[self.end : self.end + size] = chunk
        self.filled(size)

    def consume(self, count: int) -> None:
        if count > self.largest_step and count >= MIN_FREE:  # small PDUs fit the initial size
            self.largest_step = count
        # No rewinding to the front here even when everything was consumed: the socket may
        # read into the free tail at any await, and the consumer may still be looking at what
        # it just consumed. make_room() rewinds (without a copy) when nothing is pending.
        self.start += count

    def make_room(self, wanted: int = MIN_FREE) -> None:
        """Make at least ``wanted`` bytes free, and enough to complete the pending PDU: move the
        unconsumed bytes to the front, and grow if that is not enough.

        Invalidates views from :meth:`data` (their bytes may be overwritten).
        """
        pending = self.end - self.start
        if pending == 0:
            self.start = self.end = 0
        # Grown with what arrived, never from what a header announces: a peer announcing a
        # large PDU and sending 8 bytes must not cost a large buffer (a thousand such
        # connections would cost a thousand of them). Room for at most as much again as is
        # already here, so completing a large PDU still takes only a few growths.
        allowed = max(INITIAL_SIZE, 2 * pending + MIN_FREE)
        size = min(self.pending_size, allowed)
        if size > pending:
            wanted = max(wanted, size - pending)
        # Room for several PDUs of the size arriving, or of the most that arrived whole at
        # once: reads then rarely fill the buffer, which would pause reading (two system
        # calls) until the consumer makes room, and the incomplete PDU at the end rarely moves.
        preferred = min(
            max(min(PREFERRED_PDUS * size, allowed), PREFERRED_PDUS * self.largest_step),
            MAX_PREFERRED_SIZE,
        )
        if len(self._buffer) < preferred:
            self._move(pending, max(preferred, pending + wanted))
        elif self.free < wanted:
            needed = pending + wanted
            # Doubling keeps growth for one huge PDU (an unlimited maximum length) amortized.
            self._move(pending, needed if needed <= len(self._buffer) else max(
                needed, 2 * len(self._buffer)))

    def _move(self, pending: int, capacity: int) -> None:
        if capacity <= len(self._buffer):
            self._buffer[:pending] = self._buffer[self.start : self.end]
        else:
            # A new object rather than a resize: a bytearray with exported views cannot resize.
            grown = bytearray(capacity)
            grown[:pending] = self._buffer[self.start : self.end]
            self._buffer = grown
        self.start = 0
        self.end = pending
