"""Progress of a bulk run as events: per item (started, retrying, finished) and periodic
:class:`ProgressUpdate` snapshots per PACS (items done, instances, bytes, rate, ETA).

Give ``on_event=callback`` to :func:`~aiodicom.bulk.retrieve_many` (a plain or async callable,
called on the loop: keep it short), or an :class:`EventStream` as ``events=`` and iterate it
from another task (``async for event in stream``). The stream's buffer is bounded: when the
consumer falls behind, older :class:`ProgressUpdate` snapshots are dropped (each carries the
totals so far, so the latest says everything), and item events wait for room, which slows the
run rather than growing memory.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import anyio
import attrs

__all__ = [
    "BulkEvent",
    "EventCallback",
    "EventStream",
    "ItemFinished",
    "ItemRetrying",
    "ItemStarted",
    "PacsProgress",
    "ProgressTracker",
    "ProgressUpdate",
]


@attrs.frozen
class ItemStarted:
    key: str
    pacs: str
    attempt: int


@attrs.frozen
class ItemRetrying:
    """An attempt failed transiently; the next one starts after ``delay`` seconds."""

    key: str
    pacs: str
    attempt: int
    delay: float
    reason: str


@attrs.frozen
class ItemFinished:
    key: str
    pacs: str
    status: str
    instances: int
    bytes: int
    attempts: int
    reason: str | None = None


@attrs.frozen
class PacsProgress:
    """One PACS so far. ``items_total`` is ``None`` when the manifest was not counted;
    ``rate_*`` are per second over the last few seconds; ``eta`` in seconds, ``None`` when
    unknown."""

    pacs: str
    items_done: int
    items_failed: int
    items_total: int | None
    instances: int
    bytes: int
    rate_instances: float
    rate_bytes: float
    eta: float | None
    active: int
    """Operations running on this PACS now."""


@attrs.frozen
class ProgressUpdate:
    pacs: Mapping[str, PacsProgress]
    elapsed: float

    @property
    def instances(self) -> int:
        return sum(p.instances for p in self.pacs.values())

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.pacs.values())


BulkEvent = ItemStarted | ItemRetrying | ItemFinished | ProgressUpdate
EventCallback = Callable[[BulkEvent], "Awaitable[None] | None"]

_WINDOW = 10.0
"""Seconds of history the rates are computed over."""


@attrs.define
class _PacsCounters:
    items_done: int = 0
    items_failed: int = 0
    items_total: int | None = None
    instances: int = 0
    bytes: int = 0
    active: int = 0
    started_at: float | None = None
    # (time, instances, bytes, items finished) samples, one per update, within the window.
    samples: deque[tuple[float, int, int, int]] = attrs.Factory(deque)


class ProgressTracker:
    """Counts per PACS and turns them into :class:`ProgressUpdate` snapshots."""

    def __init__(self, totals: Mapping[str, int] | None = None) -> None:
        self._pacs: dict[str, _PacsCounters] = {}
        self._start = anyio.current_time()
        for name, total in (totals or {}).items():
            self._counters(name).items_total = total

    def _counters(self, pacs: str) -> _PacsCounters:
        counters = self._pacs.get(pacs)
        if counters is None:
            counters = self._pacs[pacs] = _PacsCounters()
        return counters

    def set_total(self, pacs: str, total: int | None) -> None:
        self._counters(pacs).items_total = total

    def add_items(self, pacs: str, count: int) -> None:
        """Items found by expanding a query (they were not in the count)."""
        counters = self._counters(pacs)
        if counters.items_total is not None:
            counters.items_total += count

    def instance(self, pacs: str, size: int) -> None:
        counters = self._counters(pacs)
        counters.instances += 1
        counters.bytes += size

    def operation(self, pacs: str, delta: int) -> None:
        counters = self._counters(pacs)
        counters.active += delta
        if counters.started_at is None:
            counters.started_at = anyio.current_time()

    def finished(self, pacs: str, ok: bool) -> None:
        counters = self._counters(pacs)
        if ok:
            counters.items_done += 1
        else:
            counters.items_failed += 1

    def snapshot(self) -> ProgressUpdate:
        now = anyio.current_time()
        result: dict[str, PacsProgress] = {}
        for name, c in self._pacs.items():
            finished = c.items_done + c.items_failed
            c.samples.append((now, c.instances, c.bytes, finished))
            while len(c.samples) > 2 and now - c.samples[0][0] > _WINDOW:
                c.samples.popleft()
            first = c.samples[0]
            span = now - first[0]
            if span > 0:
                rate_instances = (c.instances - first[1]) / span
                rate_bytes = (c.bytes - first[2]) / span
                rate_items = (finished - first[3]) / span
            else:
                rate_instances = rate_bytes = rate_items = 0.0
            if rate_items <= 0 and c.started_at is not None and finished:
                # Items finish in bursts: fall back on the rate since this PACS started.
                rate_items = finished / max(now - c.started_at, 1e-9)
            eta: float | None = None
            if c.items_total is not None:
                left = max(0, c.items_total - finished)
                eta = 0.0 if left == 0 else (left / rate_items if rate_items > 0 else None)
                if eta is not None and not math.isfinite(eta):
                    eta = None
            result[name] = PacsProgress(
                name, c.items_done, c.items_failed, c.items_total, c.instances, c.bytes,
                rate_instances, rate_bytes, eta, c.active,
            )
        return ProgressUpdate(result, now - self._start)


class EventStream:
    """The events of a run, to iterate from another task: pass it as ``events=``; the run
    closes it when it ends (the iteration then stops)."""

    def __init__(self, max_buffer: int = 256) -> None:
        if max_buffer < 2:
            raise ValueError("max_buffer must be at least 2")
        self._buffer: deque[BulkEvent] = deque()
        self._max = max_buffer
        self._closed = False
        self._readable = anyio.Event()
        self._room = anyio.Event()

    async def send(self, event: BulkEvent) -> None:
        if self._closed:
            return
        while len(self._buffer) >= self._max:
            if not self._drop_a_snapshot():
                if isinstance(event, ProgressUpdate):
                    return  # a later snapshot will say as much
                self._room = anyio.Event()
                await self._room.wait()
                if self._closed:
                    return
        self._buffer.append(event)
        self._readable.set()

    __call__ = send

    def _drop_a_snapshot(self) -> bool:
        for index, queued in enumerate(self._buffer):
            if isinstance(queued, ProgressUpdate):
                del self._buffer[index]
                return True
        return False

    def close(self) -> None:
        self._closed = True
        self._readable.set()
        self._room.set()

    def __aiter__(self) -> AsyncIterator[BulkEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[BulkEvent]:
        while True:
            while self._buffer:
                event = self._buffer.popleft()
                self._room.set()
                yield event
            if self._closed:
                return
            self._readable = anyio.Event()
            await self._readable.wait()
