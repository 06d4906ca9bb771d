"""Pacing: the receive path lets the event loop run other tasks between bounded steps.

Behaviour only, with a fake clock where time matters: how long the loop is held is shown by
``python -m benchmarks --only lateness``, not asserted here.
"""

from __future__ import annotations

import asyncio
import struct

import anyio
import pytest
from test_statemachine import associated_pair

from aiodicom import association as association_module
from aiodicom import pacing, transport
from aiodicom.association import DECODE_SLICE_PDUS, Association, Timeouts, _slice_end
from aiodicom.buffer import ReceiveBuffer
from aiodicom.dimse import C_ECHO_RSP, NO_DATASET, DimseMessage, fragment_message
from aiodicom.errors import DimseError
from aiodicom.pdu import P_DATA_TF, PDataTF, PresentationDataValue

STUCK = 10


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(pacing, "perf_counter", fake)
    return fake


async def _others_ran_during(clock: FakeClock, advance: float) -> bool:
    """Whether a callback queued before a pace() ran before that pace() returned."""
    ran = False

    def other() -> None:
        nonlocal ran
        ran = True

    asyncio.get_running_loop().call_soon(other)
    clock.now += advance
    await pacing.pace()
    return ran


async def test_pace_yields_only_once_the_turn_used_its_budget(clock: FakeClock) -> None:
    await pacing.pace()  # the first step of this turn starts the clock
    assert not await _others_ran_during(clock, pacing.BUDGET / 2)
    assert await _others_ran_during(clock, pacing.BUDGET)


async def test_the_budget_starts_again_in_the_next_turn(clock: FakeClock) -> None:
    await pacing.pace()
    clock.now += 2 * pacing.BUDGET
    await pacing.pace()  # over budget: yields, the marker runs, a new turn begins
    await anyio.lowlevel.checkpoint()
    await pacing.pace()  # starts the clock of this turn
    assert not await _others_ran_during(clock, pacing.BUDGET / 2)


async def test_pacing_within_the_budget_costs_the_loop_nothing(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No callback per turn: only a yield schedules the marker that restarts the clock (a
    marker every turn made every read cost one more trip through the loop)."""
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    call_soon = loop.call_soon

    def spy(callback: object, *args: object, **kwargs: object) -> asyncio.Handle:
        scheduled.append(callback)
        return call_soon(callback, *args, **kwargs)  # type: ignore[arg-type]

    await anyio.lowlevel.checkpoint()
    await pacing.pace()
    monkeypatch.setattr(loop, "call_soon", spy)
    for _ in range(5):  # turns with a little work each, well within one budget in all
        clock.now += pacing.BUDGET / 10
        await pacing.pace()
        await asyncio.sleep(0.001)
    markers = [c for c in scheduled if getattr(c, "__name__", "") == "mark"]
    assert markers == []
    clock.now += pacing.BUDGET
    await pacing.pace()  # spent: one marker, then a fresh clock in the next turn
    assert [c for c in scheduled if getattr(c, "__name__", "") == "mark"] != []
    assert not await _others_ran_during(clock, pacing.BUDGET / 2)


async def test_tasks_share_the_turn(clock: FakeClock) -> None:
    """What one task spent counts for the next: the turn is the loop's, not each task's."""
    order: list[str] = []

    async def first() -> None:
        await pacing.pace()
        clock.now += 2 * pacing.BUDGET  # this task worked for the whole budget
        order.append("first done")

    async def second() -> None:
        await pacing.pace()  # same turn, budget spent: yields
        order.append("second went on")

    async def third() -> None:
        order.append("third ran")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(first)
        tasks.start_soon(second)
        tasks.start_soon(third)
    assert order.index("third ran") < order.index("second went on")


def _pdus(count: int, size: int = 100) -> bytes:
    return b"".join(
        bytes([P_DATA_TF, 0]) + struct.pack(">I", size) + bytes(size) for _ in range(count)
    )


def test_a_slice_is_a_number_of_whole_pdus() -> None:
    data = memoryview(_pdus(100))  # PDUs of 106 bytes
    assert _slice_end(data, 1) == 106
    assert _slice_end(data, 10) == 1060
    assert _slice_end(data, 100) == len(data)
    assert _slice_end(data, 1000) == len(data)


def test_a_slice_ends_where_an_incomplete_pdu_starts() -> None:
    data = memoryview(_pdus(2, size=100_000))
    assert _slice_end(data, 1) == 100_006
    # The first PDU incomplete: all of it goes to the state machine, which waits for the rest.
    assert _slice_end(data[:50_000], 1) == 50_000
    assert _slice_end(data[:4], 1) == 4
    assert _slice_end(data[:100_010], 5) == 100_010


class OneRead(transport.Connection):
    """A connection whose peer sends ``data`` in one go, then nothing more (never closing)."""

    def __init__(self, data: bytes) -> None:
        self.buffer = ReceiveBuffer()
        self.data: bytes | None = data
        self.reads = 0
        self.never = anyio.Event()

    async def receive(self) -> bool:
        self.buffer.make_room()
        if self.data is None:
            await self.never.wait()
        self.reads += 1
        self.buffer.append(self.data or b"")
        self.data = None
        return True

    async def send(self, data: bytes) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_every_message_of_one_read_comes_out_without_more_input() -> None:
    """Whole PDUs left in the buffer after a step are decoded by the next steps, without
    waiting for bytes that will never come."""
    requestor, acceptor = associated_pair()
    count = 5 * DECODE_SLICE_PDUS  # several slices of small PDUs
    for n in range(count):
        message = DimseMessage(1, {"CommandField": C_ECHO_RSP, "MessageIDBeingRespondedTo": n,
                                   "CommandDataSetType": NO_DATASET, "Status": 0})
        for pdata in fragment_message(message, 0):
            acceptor.send_data(pdata)
    connection = OneRead(acceptor.data_to_send())
    association = Association(connection, requestor, timeouts=Timeouts())
    got = []
    with anyio.fail_after(STUCK):
        for _ in range(count):
            message = await association.receive_message()
            assert message is not None
            got.append(message.message_id_being_responded_to)
    assert got == list(range(count))
    assert connection.reads == 1


def _reading_echo_response(
    message_id: int, before: PDataTF | None = None
) -> tuple[OneRead, Association]:
    """An association whose peer sent ``before`` (if given), then a C-ECHO-RSP, in one read."""
    requestor, acceptor = associated_pair()
    if before is not None:
        acceptor.send_data(before)
    message = DimseMessage(1, {"CommandField": C_ECHO_RSP, "MessageIDBeingRespondedTo": message_id,
                               "CommandDataSetType": NO_DATASET, "Status": 0})
    for pdata in fragment_message(message, 0):
        acceptor.send_data(pdata)
    connection = OneRead(acceptor.data_to_send())
    return connection, Association(connection, requestor, timeouts=Timeouts())


async def test_cancelled_between_read_and_decoding_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancellation while pacing, after bytes were read but before they were decoded, leaves
    them to be decoded by the next call (which must not wait for new bytes first)."""
    _, association = _reading_echo_response(7)

    calls = 0

    async def pace_cancelled_once() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the pace between the read and the decoding
            raise anyio.get_cancelled_exc_class()

    monkeypatch.setattr(association_module, "pace", pace_cancelled_once)
    with pytest.raises(anyio.get_cancelled_exc_class()):
        await association.receive_message()
    with anyio.fail_after(STUCK):
        received = await association.receive_message()
    assert received is not None and received.message_id_being_responded_to == 7


async def test_a_broken_message_stream_is_reported_and_stays_broken() -> None:
    """A data fragment before any command fails the receive that decodes it, after the read is
    used up; the next receive fails the same way instead of decoding the same bytes again."""
    stray = PDataTF((PresentationDataValue(1, False, True, b"\x00" * 8),))
    connection, association = _reading_echo_response(1, before=stray)
    with anyio.fail_after(STUCK):
        for _ in range(2):
            with pytest.raises(DimseError, match="data set fragment received before any command"):
                await association.receive_message()
    assert len(connection.buffer) == 0
    assert connection.reads == 1


async def test_bytes_arriving_start_a_fresh_turn(clock: FakeClock) -> None:
    """A read callback runs at the end of a turn, after the task steps queued before it: what
    the loop spent waiting for those bytes is no work of this turn's tasks, which would
    otherwise yield after every read once a millisecond of wall time had passed."""
    await pacing.pace()
    clock.now += 2 * pacing.BUDGET  # waiting for the socket, say
    pacing.loop_came_round(asyncio.get_running_loop())
    assert not await _others_ran_during(clock, pacing.BUDGET / 2)
    assert await _others_ran_during(clock, pacing.BUDGET)


async def test_a_socket_read_restarts_the_clock(clock: FakeClock) -> None:
    """The transport's read callback is what tells pacing that the loop came round."""
    from test_transport import connected

    async with connected() as (client, server):
        await pacing.pace()
        clock.now += 2 * pacing.BUDGET

        async def send_later() -> None:
            await anyio.sleep(0.01)
            await client.send(b"x")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send_later)
            assert await server.receive() is True
        assert not await _others_ran_during(clock, pacing.BUDGET / 2)
