"""The bulk runner: every item of a manifest retrieved from its PACS on one event loop.

Shape of a run:

* a feeder reads the manifest one item at a time into a bounded queue per PACS (it waits when
  a queue is full, so memory holds at most ``queue_size`` items per PACS whatever the size of
  the manifest);
* per PACS, as many worker tasks as its ``max_operations``; each takes the next item (items
  expanded from a query first, read back from the journal page by page), skips it if the
  journal says it is done, and otherwise runs attempts, each inside ``limiter.slot(pacs)``;
* between attempts the slot is given back and the worker waits the policy's backoff (or until
  another item of the PACS is done);
* the journal records instances as they arrive and items as they end; the report gathers each
  item's outcome; events tell progress.

One :class:`~aiodicom.Client` per PACS retrieved by C-GET (its pool holds that PACS's
``max_associations``), and one, listening, for every PACS retrieved by C-MOVE (the PACS know
our AE title with one port; its pool allows the largest ``max_associations`` among them, the
limiter keeps each PACS within its own ``max_operations``, and the longest of their timeouts
apply).
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sized
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import attrs

from aiodicom.association import Timeouts
from aiodicom.bulk.config import BulkConfig, ConfigError, PacsConfig
from aiodicom.bulk.events import (
    BulkEvent,
    EventCallback,
    EventStream,
    ItemFinished,
    ItemRetrying,
    ItemStarted,
    ProgressTracker,
)
from aiodicom.bulk.fetch import AttemptFailed, ItemFetcher, Stored
from aiodicom.bulk.journal import JOURNAL_NAME, Journal
from aiodicom.bulk.limiter import LocalLimiter, PacsLimiter
from aiodicom.bulk.manifest import Manifest, ManifestFile, ManifestItem, aiter_items
from aiodicom.bulk.report import BulkReport, Failure, ItemReport
from aiodicom.client import Client, Peer
from aiodicom.pool import PoolOptions
from aiodicom.sinks import DirectorySink, Sink

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

log = logging.getLogger("aiodicom.bulk")

__all__ = ["retrieve_many"]

QUEUE_SIZE = 64
"""Manifest items read ahead per PACS."""


class _PacsQueue:
    """Items waiting for one PACS: those read from the manifest (bounded), and the children
    of expanded queries (journal-backed iterators, pulled one item at a time)."""

    def __init__(self, size: int) -> None:
        self.items: deque[ManifestItem] = deque()
        self.children: deque[Iterator[ManifestItem]] = deque()
        self.size = size
        self.feeding = True
        self.expanding = 0
        self._changed = anyio.Event()
        self.serving = anyio.Event()
        """Set (and replaced) each time an item of this PACS is done: retries waiting out
        their backoff go on."""

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def put(self, item: ManifestItem) -> None:
        while len(self.items) >= self.size:
            await self._changed.wait()
        self.items.append(item)
        self._wake()

    def add_children(self, children: Iterator[ManifestItem]) -> None:
        self.children.append(children)
        self._wake()

    def close(self) -> None:
        self.feeding = False
        self._wake()

    def served(self) -> None:
        self.serving.set()
        self.serving = anyio.Event()

    def expansion(self, delta: int) -> None:
        self.expanding += delta
        self._wake()

    async def get(self) -> ManifestItem | None:
        """The next item, or ``None`` once nothing more can come."""
        while True:
            while self.children:
                child = next(self.children[0], None)
                if child is not None:
                    return child
                self.children.popleft()
            if self.items:
                item = self.items.popleft()
                self._wake()  # room for the feeder
                return item
            if not self.feeding and not self.expanding:
                return None
            await self._changed.wait()


@attrs.define
class _Run:
    config: BulkConfig
    journal: Journal
    limiter: PacsLimiter
    report: BulkReport
    tracker: ProgressTracker
    make_sink: Callable[[], Sink | DirectorySink]
    emit_to: list[EventCallback | EventStream]
    progress_interval: float
    rng: random.Random
    queues: dict[str, _PacsQueue] = attrs.Factory(dict)
    fetchers: dict[str, ItemFetcher] = attrs.Factory(dict)
    in_flight: set[str] = attrs.Factory(set)
    last_progress: float = 0.0

    async def emit(self, event: BulkEvent) -> None:
        for target in self.emit_to:
            if isinstance(target, EventStream):
                await target.send(event)
            else:
                returned = target(event)
                if inspect.isawaitable(returned):
                    await returned

    async def progress(self, force: bool = False) -> None:
        now = anyio.current_time()
        if force or now - self.last_progress >= self.progress_interval:
            self.last_progress = now
            await self.emit(self.tracker.snapshot())

    # --- the feeder -----------------------------------------------------------------------

    async def feed(self, manifest: Manifest) -> None:
        try:
            async for item in aiter_items(manifest):
                queue = self.queues.get(item.pacs)
                if queue is None:
                    await self.unknown_pacs(item)
                    continue
                await queue.put(item)
        finally:
            for queue in self.queues.values():
                queue.close()

    async def unknown_pacs(self, item: ManifestItem) -> None:
        known = ", ".join(sorted(self.config.pacs))
        reason = f"no PACS named {item.pacs!r} in the configuration (named: {known})"
        entry = ItemReport(item.key, item.pacs, item.level.value, status="failed",
                           failures=[Failure(0, reason, permanent=True)], parent=item.parent)
        self.report.add(entry)
        self.journal.finish(item, "failed", attempts=0, instances=0, bytes=0, error=reason)
        await self.emit(ItemFinished(item.key, item.pacs, "failed", 0, 0, 0, reason))

    # --- the workers ------------------------------------------------------------------------

    async def work(self, pacs: str) -> None:
        queue = self.queues[pacs]
        while True:
            item = await queue.get()
            if item is None:
                return
            await self.process(item)

    async def process(self, item: ManifestItem) -> None:
        if item.key in self.in_flight or item.key in self.report.items:
            # The same item twice (a repeated row, or a query's match listed as well): the
            # first one retrieves it; two at once would fetch everything twice.
            log.info("%s is listed more than once: retrieved once", item.key)
            self.tracker.finished(item.pacs, True)
            return
        self.in_flight.add(item.key)
        try:
            await self._process(item)
        finally:
            self.in_flight.discard(item.key)

    async def _process(self, item: ManifestItem) -> None:
        record = self.journal.record(item.key)
        entry = ItemReport(item.key, item.pacs, item.level.value, parent=item.parent)
        queue = self.queues[item.pacs]
        if record is not None and record.status in ("done", "expanded"):
            if record.status == "expanded":
                entry.status = "expanded"
                queue.add_children(self.journal.children(item))
            else:
                entry.status = "skipped"
                entry.resumed = record.instances
            self.report.add(entry)
            self.tracker.finished(item.pacs, True)
            await self.emit(ItemFinished(item.key, item.pacs, entry.status, 0, 0, 0))
            return
        if item.find:
            queue.expansion(+1)
        try:
            await self.attempts(item, entry)
        finally:
            if item.find:
                queue.expansion(-1)

    async def attempts(self, item: ManifestItem, entry: ItemReport) -> None:
        policy = self.config.retry
        fetcher = self.fetchers[item.pacs]
        start = anyio.current_time()
        # What earlier attempts or runs stored, unless its file has gone since.
        done = {
            i.sop for i in self.journal.instances(item.key)
            if i.path is None or os.path.exists(i.path)
        } if not item.find else set()
        entry.resumed = len(done)
        self.report.add(entry)  # the instances arriving are counted in it
        status = "cancelled"
        try:
            for attempt in range(1, policy.attempts + 1):
                entry.attempts = attempt
                if attempt > 1:
                    delay = policy.delay(attempt, self.rng)
                    last = entry.failures[-1]
                    await self.emit(ItemRetrying(item.key, item.pacs, attempt, delay,
                                                 last.reason))
                    # The backoff ends at its deadline, or as soon as the PACS completes an
                    # operation again (it serves: a PACS back from a restart need not wait out
                    # every item's delay); the limiter still bounds what then starts.
                    with anyio.move_on_after(delay):
                        await self.queues[item.pacs].serving.wait()
                await self.emit(ItemStarted(item.key, item.pacs, attempt))
                try:
                    async with self.limiter.slot(item.pacs):
                        self.tracker.operation(item.pacs, +1)
                        try:
                            if item.find:
                                entry.children = await self.expand(item, fetcher)
                            else:
                                await fetcher.retrieve(item.key, item.level, item.keys,
                                                       item.model, done)
                        finally:
                            self.tracker.operation(item.pacs, -1)
                except AttemptFailed as failure:
                    last_attempt = failure.permanent or attempt == policy.attempts
                    entry.failures.append(Failure(
                        attempt, failure.reason, failure.permanent, failure.status,
                        retried=not last_attempt, instances_failed=failure.instances_failed,
                    ))
                    log.info("%s attempt %d failed (%s): %s", item.key, attempt,
                             "permanent" if failure.permanent else "transient", failure.reason)
                    if last_attempt:
                        status = "failed"
                        break
                    continue
                status = "expanded" if item.find else "done"
                self.queues[item.pacs].served()
                break
        finally:
            entry.status = status  # type: ignore[assignment]
            entry.duration = anyio.current_time() - start
            self.report.add(entry)
            if status != "cancelled":
                reason = entry.failures[-1].reason if status == "failed" else None
                if not item.find or status == "failed":
                    self.journal.finish(item, status, attempts=entry.attempts,
                                        instances=entry.instances, bytes=entry.bytes,
                                        error=reason)
                self.tracker.finished(item.pacs, status != "failed")
                if status == "expanded":
                    self.tracker.add_items(item.pacs, entry.children)
                    self.queues[item.pacs].add_children(self.journal.children(item))
            else:
                self.journal.flush()
        if status != "cancelled":
            await self.emit(ItemFinished(
                item.key, item.pacs, status, entry.instances, entry.bytes, entry.attempts,
                entry.failures[-1].reason if status == "failed" else None,
            ))
            await self.progress(force=True)

    async def expand(self, item: ManifestItem, fetcher: ItemFetcher) -> int:
        saver = self.journal.children_writer(item)

        def save(batch: Iterable[dict[str, object]]) -> None:
            saver.add(ManifestItem(item.pacs, item.level, keys, model=item.model)
                      for keys in batch)

        count = await fetcher.expand(item.level, item.keys, item.model, save)
        saver.finish()
        return count


def _sink_factory(sink: Sink | DirectorySink) -> Callable[[], Sink | DirectorySink]:
    if isinstance(sink, DirectorySink) and type(sink) is DirectorySink:
        # A fresh one per retrieval on the same directory: its map of paths then holds one
        # retrieval's instances, not the whole run's.
        return lambda: DirectorySink(sink.directory, sink.layout, fsync=sink.fsync,
                                     memory_limit=sink.memory_limit)
    return lambda: sink


def _clients(config: BulkConfig) -> tuple[list[Client], dict[str, Client]]:
    """The clients of a run and which one serves each PACS (see the module docstring)."""
    clients: list[Client] = []
    by_pacs: dict[str, Client] = {}
    movers = [p for p in config.pacs.values() if p.method == "move"]
    if movers and config.listen_port is None:
        names = ", ".join(sorted(p.name for p in movers))
        raise ConfigError(
            f"PACS {names} retrieved by C-MOVE: set listen_port in the configuration, the "
            f"port each knows for our AE title {config.ae_title!r} (0 picks a free one), or "
            'use method = "get"'
        )
    if movers:
        mover = Client(
            config.ae_title, listen_port=config.listen_port or 0,
            listen_host=config.listen_host,
            pool=PoolOptions(max_associations=max(p.max_associations for p in movers),
                             idle_timeout=config.idle_timeout, acquire_timeout=None),
            timeouts=_longest(p.timeouts for p in movers),
        )
        clients.append(mover)
        by_pacs.update({p.name: mover for p in movers})
    for pacs in config.pacs.values():
        if pacs.method == "get":
            client = Client(
                config.ae_title,
                pool=PoolOptions(max_associations=pacs.max_associations,
                                 idle_timeout=config.idle_timeout, acquire_timeout=None),
                timeouts=pacs.timeouts,
            )
            clients.append(client)
            by_pacs[pacs.name] = client
    return clients, by_pacs


def _longest(timeouts: Iterable[Timeouts]) -> Timeouts:
    """One set of timeouts for PACS sharing a client: the longest of each (``None``, no limit,
    is the longest)."""
    chosen = list(timeouts)

    def pick(values: list[float | None]) -> float | None:
        return None if None in values else max(v for v in values if v is not None)

    return Timeouts(
        connect=pick([t.connect for t in chosen]), acse=pick([t.acse for t in chosen]),
        dimse=pick([t.dimse for t in chosen]), network=pick([t.network for t in chosen]),
        artim=max(t.artim for t in chosen),
    )


async def _count_items(manifest: Manifest, tracker: ProgressTracker,
                       pacs: Iterable[str]) -> None:
    """Items per PACS for the ETA: from a list at once, from a file by one pass (yielding to
    the loop as it goes); other iterables cannot be read twice and stay uncounted."""
    counts: dict[str, int] = dict.fromkeys(pacs, 0)
    if isinstance(manifest, ManifestFile):
        for number, item in enumerate(manifest):
            counts[item.pacs] = counts.get(item.pacs, 0) + 1
            if number % 2048 == 0:
                await anyio.lowlevel.checkpoint()
    elif isinstance(manifest, Sized) and isinstance(manifest, Iterable) \
            and not isinstance(manifest, Iterator):
        for item in manifest:
            counts[item.pacs] = counts.get(item.pacs, 0) + 1
    else:
        return
    for name, count in counts.items():
        tracker.set_total(name, count)


async def retrieve_many(
    manifest: Manifest,
    *,
    config: BulkConfig,
    output: str | os.PathLike[str] | None = None,
    sink: Sink | DirectorySink | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
    limiter: PacsLimiter | None = None,
    on_event: EventCallback | None = None,
    events: EventStream | None = None,
    report: BulkReport | None = None,
    queue_size: int = QUEUE_SIZE,
    progress_interval: float = 0.5,
    count_items: bool = True,
) -> BulkReport:
    """Retrieve every item of ``manifest`` (see :mod:`aiodicom.bulk`) and report on each.

    ``output``: the directory the instances go to (a :class:`~aiodicom.DirectorySink` there,
    one file per instance, ``study/series/instance.dcm``), or give ``sink``. ``journal``: a
    :class:`~aiodicom.bulk.Journal` or its path; by default ``.aiodicom-bulk.sqlite`` in the
    output directory. ``limiter``: who grants operations per PACS (default: a
    :class:`~aiodicom.bulk.LocalLimiter` from the config's limits). ``on_event`` / ``events``:
    progress (see :mod:`aiodicom.bulk.events`). ``report``: filled in place as items end (so
    that a caller still has it when the run is cancelled); a new one by default.

    Items with a permanent failure, or whose attempts ran out, are ``failed`` in the report,
    not raised. Cancelling the call stops every operation (C-CANCEL, associations released);
    the journal keeps what was stored, so the next run resumes.
    """
    if sink is None:
        if output is None:
            raise TypeError("give output= (a directory) or sink=")
        sink = DirectorySink(output)
    directory = Path(output) if output is not None else (
        sink.directory if isinstance(sink, DirectorySink) else None)
    own_journal = not isinstance(journal, Journal)
    if isinstance(journal, Journal):
        the_journal = journal
    elif journal is not None:
        the_journal = Journal(journal)
    elif directory is not None:
        the_journal = Journal(directory / JOURNAL_NAME)
    else:
        raise TypeError("give journal= when the sink is not a DirectorySink")
    report = report if report is not None else BulkReport()
    report.started = time.time()
    tracker = ProgressTracker()
    run = _Run(
        config=config, journal=the_journal,
        limiter=limiter if limiter is not None else LocalLimiter(
            {name: p.operations for name, p in config.pacs.items()},
            config.max_operations),
        report=report, tracker=tracker, make_sink=_sink_factory(sink),
        emit_to=[t for t in (on_event, events) if t is not None],
        progress_interval=progress_interval, rng=random.Random(),
    )
    try:
        async with AsyncExitStack() as stack, _single_errors():
            clients, by_pacs = _clients(config)
            for client in clients:
                await stack.enter_async_context(client)
            for name, pacs in config.pacs.items():
                run.queues[name] = _PacsQueue(queue_size)
                run.fetchers[name] = _fetcher(run, pacs, by_pacs[name])
            async with anyio.create_task_group() as tasks:
                if count_items:
                    tasks.start_soon(_count_items, manifest, tracker, config.pacs)
                tasks.start_soon(run.feed, manifest)
                async with anyio.create_task_group() as workers:
                    for name, pacs in config.pacs.items():
                        for _ in range(pacs.operations):
                            workers.start_soon(run.work, name)
                tasks.cancel_scope.cancel()  # the count, if still going, is no longer needed
    finally:
        report.finished = time.time()
        with anyio.CancelScope(shield=True):
            if own_journal:
                the_journal.close()
            else:
                the_journal.flush()
            if events is not None:
                with anyio.move_on_after(1):
                    await run.progress(force=True)
                events.close()
    return report


@asynccontextmanager
async def _single_errors() -> AsyncIterator[None]:
    """The run's own error (the journal's, a sink's) as it is, not inside the task groups'
    ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors = group.exceptions
        while len(errors) == 1 and isinstance(errors[0], BaseExceptionGroup):
            errors = errors[0].exceptions
        if len(errors) == 1:
            raise errors[0] from None
        raise


def _fetcher(run: _Run, pacs: PacsConfig, client: Client) -> ItemFetcher:
    peer = Peer(client, pacs.host, pacs.port, pacs.ae_title)

    def on_stored(key: str, stored: Stored) -> None:
        entry = run.report.items.get(key)
        run.journal.add_instance(key, stored.sop, series=stored.series, study=stored.study,
                                 path=stored.path, size=stored.size)
        run.tracker.instance(pacs.name, stored.size)
        if entry is not None:
            entry.instances += 1
            entry.bytes += stored.size

    return ItemFetcher(peer, pacs.method, run.make_sink, on_stored, run.progress,
                       sop_classes=pacs.sop_classes, transfer_syntaxes=pacs.transfer_syntaxes)
