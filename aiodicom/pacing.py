"""Bounding how long aiodicom keeps the event loop to itself.

Bytes that are already here are turned into messages, and messages into matches or files,
without waiting for anything: a fast peer could keep one task busy for as long as it sends, and
a web handler on the same loop would wait that long (measured: 200 ms with 20 C-FINDs). The
receive path therefore calls :func:`pace` between steps of work. It yields to the loop once the
loop's current turn has lasted :data:`BUDGET`, and costs a clock read otherwise.

The budget is the loop's, not each task's: every task that finds it spent yields at its next
step, so one turn of the loop lasts about :data:`BUDGET` however many associations are busy.
The clock starts at the first :func:`pace` after the last yield; the first task that yields
schedules a marker callback, which runs early in the next turn and lets the next :func:`pace`
start the clock again. Bytes arriving restart it too (:func:`loop_came_round`, called by the
transport's read callback, which runs at the end of a turn). A turn therefore never holds more
than the budget, and quiet turns share one clock: a marker per turn (an extra trip through the
loop after every read) cost more than the reading it paced.
"""

from __future__ import annotations

import asyncio
import weakref
from time import perf_counter

import anyio.lowlevel

__all__ = ["BUDGET", "loop_came_round", "pace"]

BUDGET = 0.001
"""Seconds of work in one turn of the loop before aiodicom lets the other tasks run.

A task woken by a timer or a socket runs two or three turns later (asyncio queues its wake-up
behind what is already ready), so the loop is late by two to three turns: a turn of 1 ms plus
a step of each other busy task kept 20 concurrent C-FINDs under 10 ms at p99, where 2 ms did
not (benchmarks/eventloop.py). Smaller means more trips through the loop, each about 10 µs
per busy task.
"""


class _Turn:
    __slots__ = ("loop", "marked", "running", "started")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the turn is the value of a weak-keyed map whose key is this very loop.
        self.loop = weakref.ref(loop)
        self.started = 0.0
        self.running = False  # the clock runs (started at the first pace since the last yield)
        self.marked = False  # a marker is scheduled: the budget is spent until the next turn

    def mark(self) -> None:
        self.running = self.marked = False


# One clock per event loop (an application may run loops in several threads); the last one
# used is kept at hand, since there is almost always just one.
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = (
    weakref.WeakKeyDictionary()
)
_last: _Turn | None = None


def _turn(loop: asyncio.AbstractEventLoop) -> _Turn:
    global _last
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = _Turn(loop)
    _last = turn
    return turn


def loop_came_round(loop: asyncio.AbstractEventLoop) -> None:
    """Called by an I/O callback of ``loop`` (bytes arrived): the next :func:`pace` starts
    a fresh clock.

    asyncio runs a turn's I/O callbacks after the task steps queued before it, and the steps
    they wake in the next turn, so this is the end of a turn as surely as the marker is the
    start of one. Without it the clock counted the time the loop spent waiting for the socket
    as work: a task that read a PDU at a time yielded every millisecond of wall time (about
    one extra trip through the loop per large data set received).
    """
    turn = _last
    if turn is not None and turn.loop() is loop:
        turn.running = False


async def pace() -> None:
    """Yield to the event loop if its current turn has run for :data:`BUDGET` already."""
    loop = asyncio.get_running_loop()
    turn = _last
    if turn is None or turn.loop() is not loop:
        turn = _turn(loop)
    now = perf_counter()
    if not turn.running:
        turn.running = True
        turn.started = now
    elif now - turn.started >= BUDGET:
        if not turn.marked:
            # Scheduled before this task's own wake-up: the next turn starts a fresh clock,
            # while the tasks still to run in this one find the budget spent and yield too.
            turn.marked = True
            loop.call_soon(turn.mark)
        await anyio.lowlevel.checkpoint()
