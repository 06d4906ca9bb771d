"""A bulk retrieval on a Dask distributed cluster (extra ``aiodicom[dask]``).

``report = await retrieve_many_on_cluster(manifest, config=config, output="/data/export")``
runs the same job as :func:`~aiodicom.bulk.retrieve_many`, with the manifest shared out over
the workers of a Dask cluster: each share is one Dask task, and each task runs the async runner
with an aiodicom :class:`~aiodicom.Client` of its own. Without ``client=`` a
:class:`distributed.LocalCluster` is started for the run (``n_workers`` worker processes on this
machine); in production give the address of an existing scheduler (``client="tcp://host:8786"``)
or a :class:`distributed.Client` created with ``asynchronous=True`` on the running loop.

What holds across the cluster:

* **Per-PACS limits.** Every operation on a PACS holds a lease of a
  :class:`distributed.Semaphore` named after the run and the PACS, with as many leases as the
  PACS's ``max_associations`` (or ``max_operations`` when smaller); the associations are opened
  for one operation and released before its lease is given back (``idle_timeout=0`` on the
  workers), so a PACS sees at most its limit of associations from the whole cluster, never
  workers x limit. ``config.max_operations``, when given, is a cluster-wide semaphore too.
  Dask expires a lease its holder has not refreshed for ``distributed.scheduler.locks.
  lease-timeout`` (30 s): the leases are held from the worker's own event loop, which the
  retrieval never runs on, so only a worker stalled that long (or cut off from the scheduler)
  can lose one, and then Dask logs that the semaphore may be overbooked.
* **Resume.** Every task writes the same journal, the one a one-process run of ``output``
  uses, so a rerun (on the cluster or in one process) fetches only what is missing. The journal
  is SQLite in write-ahead-log mode: the processes writing one output location must be on one
  host (SQLite's WAL needs shared memory, and network file systems break its locking). On a
  cluster of several hosts, run one job per host, each with an output on its own disk.
* **Progress and report.** The runner's events on each worker are published on a Dask event
  topic of the run and handed, on the caller's loop, to ``on_event`` / ``events`` (the caller's
  buffer is bounded: see :func:`retrieve_many_on_cluster`); the report is the merge of the
  reports the tasks return (:meth:`~aiodicom.bulk.report.BulkReport.merge`).

**C-GET by default.** A worker on another host cannot receive a C-MOVE: the PACS sends to the
host and port it has registered for the destination AE title. So a PACS configured with
``method="move"`` is refused unless ``worker_ae_titles`` gives every worker an AE title (and the
port its acceptor listens on) that each such PACS knows as a move destination. Each of those
workers then runs exactly one share, pinned to it (its port is its own).

**Event loops.** The library starts no thread. Each task runs in one of the threads Dask gives
its worker for tasks (that is Dask's business) and runs the runner on an event loop of its own
(``asyncio.run``), not on the worker's event loop: the worker's loop carries Dask's heartbeats,
data transfers and the semaphore's lease refreshes, and a retrieval writing files and journal
rows must not make those wait (a lease not refreshed in time is handed to someone else). The
leases are taken and given back by coroutines run on the worker's loop
(:func:`asyncio.run_coroutine_threadsafe`), awaited from the task's loop: nothing blocks or
polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from aiodicom.bulk.config import BulkConfig, ConfigError
from aiodicom.bulk.events import (
    BulkEvent,
    EventCallback,
    EventStream,
    ItemFinished,
    ItemRetrying,
    ItemStarted,
    PacsProgress,
    ProgressUpdate,
)
from aiodicom.bulk.journal import JOURNAL_NAME, Journal
from aiodicom.bulk.limiter import LocalLimiter
from aiodicom.bulk.manifest import Manifest, ManifestFile, ManifestItem, aiter_items, shard
from aiodicom.bulk.report import BulkReport
from aiodicom.errors import DicomError

if TYPE_CHECKING:  # the extra is optional: imported when a run starts
    import distributed

__all__ = ["ClusterLimiter", "WorkerAE", "retrieve_many_on_cluster"]

_EXTRA_HINT = "pip install 'aiodicom[dask]'"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise DicomError(f"bulk retrieval on a cluster needs Dask distributed: {_EXTRA_HINT}"
                         f" ({exc})") from exc
    return distributed


@attrs.frozen
class WorkerAE:
    """The AE title a worker retrieves under by C-MOVE, and where its acceptor listens
    (``listen_host="0.0.0.0"`` for every interface of the worker's host). Every PACS
    retrieved by C-MOVE must know ``ae_title`` as a move destination at that host and port."""

    ae_title: str
    listen_port: int
    listen_host: str = "0.0.0.0"


# --------------------------------------------------------------------------------------------
# Worker side: leases on the worker's loop, awaited from the task's loop
# --------------------------------------------------------------------------------------------


class _GiveBack:
    """When the task is done with a lease. Touched only on the worker's loop (the task asks
    through ``call_soon_threadsafe``), so no lock is needed."""

    def __init__(self) -> None:
        self.requested = False
        self._event: asyncio.Event | None = None

    def request(self) -> None:
        self.requested = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if not self.requested:
            self._event = asyncio.Event()
            await self._event.wait()


def _grant(granted: asyncio.Future[None]) -> None:
    if not granted.done():  # not if the task stopped waiting (cancelled)
        granted.set_result(None)


async def _hold_lease(
    semaphore: Any, task_loop: asyncio.AbstractEventLoop, granted: asyncio.Future[None],
    give_back: _GiveBack,
) -> None:
    """On the worker's loop: take a lease, tell the task, keep it until the task is done."""
    await semaphore.acquire()
    try:
        with contextlib.suppress(RuntimeError):  # the task's loop is gone: nobody to tell
            task_loop.call_soon_threadsafe(_grant, granted)
        await give_back.wait()
    finally:
        await semaphore.release()


class ClusterLimiter:
    """The runner's :class:`~aiodicom.bulk.limiter.PacsLimiter` on a Dask worker: a local
    :class:`~aiodicom.bulk.limiter.LocalLimiter` (fairness between PACS, this task's share of
    the work), then a lease of the run's cluster-wide semaphore of the PACS (and of the global
    one, when the run has a global limit) for the whole operation.

    Built inside a task (it finds its worker with :func:`distributed.get_worker`)."""

    def __init__(self, config: BulkConfig, names: Mapping[str, str], global_name: str | None
                 ) -> None:
        distributed = _distributed()
        worker = distributed.get_worker()
        self._worker_loop: asyncio.AbstractEventLoop = worker.loop.asyncio_loop
        self._local = LocalLimiter(
            {name: _cluster_limit(pacs) for name, pacs in config.pacs.items()},
            config.max_operations,
        )
        self._semaphores = {
            pacs: distributed.Semaphore(max_leases=_cluster_limit(config.pacs[pacs]), name=name)
            for pacs, name in names.items()
        }
        self._global = (
            distributed.Semaphore(max_leases=config.global_operations, name=global_name)
            if global_name is not None else None
        )

    @contextlib.asynccontextmanager
    async def slot(self, pacs: str) -> AsyncIterator[None]:
        async with self._local.slot(pacs), contextlib.AsyncExitStack() as leases:
            await leases.enter_async_context(self._lease(self._semaphores[pacs]))
            if self._global is not None:
                # Always the PACS's lease first, then the global one: one order everywhere
                # (no deadlock), and a task waiting for the global limit blocks only its PACS.
                await leases.enter_async_context(self._lease(self._global))
            yield

    @contextlib.asynccontextmanager
    async def _lease(self, semaphore: Any) -> AsyncIterator[None]:
        task_loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = task_loop.create_future()
        give_back = _GiveBack()
        holder = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
            _hold_lease(semaphore, task_loop, granted, give_back), self._worker_loop
        ))
        # Its outcome is read below, or not at all when the task is cancelled meanwhile.
        holder.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            await asyncio.wait((granted, holder), return_when=asyncio.FIRST_COMPLETED)
            if not granted.done():
                holder.result()  # the holder failed before the grant: its error
            yield
        finally:
            # Also when cancelled while waiting: the holder then gives the lease back as soon
            # as the scheduler grants it, so none is kept by a task that has gone.
            self._worker_loop.call_soon_threadsafe(give_back.request)
        # Given back before the next operation may count on it (not on the cancel path:
        # a holder still waiting for its lease would keep the cancelled task waiting).
        await holder

    def close(self) -> None:
        """Stop the lease-refresh callbacks of this task's semaphore handles (the semaphores
        themselves live on until the run closes them)."""
        for semaphore in (*self._semaphores.values(), self._global):
            callback = getattr(semaphore, "refresh_callback", None)
            if callback is not None:
                self._worker_loop.call_soon_threadsafe(callback.stop)


def _cluster_limit(pacs: Any) -> int:
    return int(min(pacs.max_associations, pacs.operations))


@attrs.frozen
class _Share:
    """One task's part of the manifest: the items themselves, or a manifest file every
    worker reads (streamed) keeping only its share."""

    index: int
    count: int
    items: tuple[ManifestItem, ...] | None
    manifest_file: ManifestFile | None
    config: BulkConfig
    output: str
    semaphores: Mapping[str, str]
    global_semaphore: str | None
    topic: str
    stop_event: str
    worker_ae: WorkerAE | None


def _share_items(share: _Share) -> Iterable[ManifestItem]:
    if share.items is not None:
        return share.items
    assert share.manifest_file is not None
    return shard(share.manifest_file, share.count, share.index)


def _event_message(share: _Share, event: BulkEvent) -> dict[str, Any]:
    body = attrs.asdict(event, recurse=True)
    return {"share": share.index, "kind": type(event).__name__, "event": body}


def run_share(share: _Share) -> dict[str, Any]:
    """The Dask task: one share of the manifest, on an event loop of its own (see the module
    docstring); returns the share's report as JSON-able data."""
    from aiodicom.bulk.runner import retrieve_many

    distributed = _distributed()
    worker = distributed.get_worker()
    config = attrs.evolve(share.config, idle_timeout=0.0)
    if share.worker_ae is not None:
        config = attrs.evolve(
            config, ae_title=share.worker_ae.ae_title, listen_port=share.worker_ae.listen_port,
            listen_host=share.worker_ae.listen_host,
        )

    def publish(event: BulkEvent) -> None:
        # Fire and forget through the worker's batched stream to the scheduler: the runner
        # never waits for the caller.
        worker.log_event(share.topic, _event_message(share, event))

    async def main() -> BulkReport:
        # The caller gone (cancelled, or failed elsewhere) sets the run's stop event: this
        # share then stops as a cancelled one-process run does (C-CANCEL, associations
        # released, journal flushed) instead of going on unseen on the cluster.
        this_task = asyncio.current_task()
        assert this_task is not None
        task_loop = asyncio.get_running_loop()

        async def watch_stop() -> None:
            # What distributed.Event.wait asks the scheduler, through the worker's own
            # connection (as distributed's Semaphore does): no client made in the worker.
            if await worker.scheduler.event_wait(name=share.stop_event, timeout=None):
                task_loop.call_soon_threadsafe(this_task.cancel)

        watcher = asyncio.run_coroutine_threadsafe(watch_stop(), worker.loop.asyncio_loop)
        limiter = ClusterLimiter(config, share.semaphores, share.global_semaphore)
        try:
            return await retrieve_many(
                _share_items(share), config=config, output=share.output, limiter=limiter,
                on_event=publish,
            )
        finally:
            watcher.cancel()
            limiter.close()

    return asyncio.run(main()).to_dict()


# --------------------------------------------------------------------------------------------
# Caller side
# --------------------------------------------------------------------------------------------


def _event_from(message: Mapping[str, Any]) -> BulkEvent | None:
    kind, body = message.get("kind"), dict(message.get("event") or {})
    if kind == "ItemStarted":
        return ItemStarted(**body)
    if kind == "ItemRetrying":
        return ItemRetrying(**body)
    if kind == "ItemFinished":
        return ItemFinished(**body)
    if kind == "ProgressUpdate":
        pacs = {name: PacsProgress(**p) for name, p in dict(body["pacs"]).items()}
        return ProgressUpdate(pacs, float(body["elapsed"]))
    return None


class _CallerEvents:
    """Events from the workers, on the caller's loop, to ``on_event`` / ``events``.

    Dask calls :meth:`receive` from its own message loop, which must not wait. Item events
    queue up to ``limit``; beyond that new ones are dropped and counted (:attr:`dropped`): the
    report, which comes from the tasks' results, is complete either way. Progress snapshots
    are not queued: the shares' latest ones are summed into one cluster-wide
    :class:`ProgressUpdate` per PACS, handed on after the item events before it.
    """

    def __init__(self, on_event: EventCallback | None, events: EventStream | None,
                 limit: int) -> None:
        self._on_event = on_event
        self._events = events
        self._limit = limit
        self._items: deque[BulkEvent] = deque()
        self._snapshot: ProgressUpdate | None = None
        self._ready = anyio.Event()
        self._closed = False
        self._latest: dict[int, ProgressUpdate] = {}
        self.dropped = 0

    def receive(self, event: tuple[float, Any]) -> None:
        _, message = event
        if not isinstance(message, Mapping):
            return
        decoded = _event_from(message)
        if decoded is None:
            return
        if isinstance(decoded, ProgressUpdate):
            self._latest[int(message.get("share", 0))] = decoded
            self._snapshot = _combined(self._latest.values())
        elif len(self._items) < self._limit:
            self._items.append(decoded)
        else:
            self.dropped += 1
            return
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def _hand_on(self, event: BulkEvent) -> None:
        if self._on_event is not None:
            result = self._on_event(event)
            if result is not None:
                await result
        if self._events is not None:
            await self._events.send(event)

    async def pump(self) -> None:
        """Hand the events on, in order, until closed and drained."""
        try:
            while True:
                while self._items or self._snapshot is not None:
                    if self._items:
                        await self._hand_on(self._items.popleft())
                    else:
                        snapshot, self._snapshot = self._snapshot, None
                        assert snapshot is not None
                        await self._hand_on(snapshot)
                if self._closed:
                    return
                self._ready = anyio.Event()
                await self._ready.wait()
        finally:
            if self._events is not None:
                self._events.close()


def _combined(updates: Iterable[ProgressUpdate]) -> ProgressUpdate:
    """The shares' latest snapshots as one: counts and rates add up; a PACS's ETA is the
    longest of its shares' (they run side by side)."""
    per_pacs: dict[str, PacsProgress] = {}
    elapsed = 0.0
    for update in updates:
        elapsed = max(elapsed, update.elapsed)
        for name, p in update.pacs.items():
            have = per_pacs.get(name)
            if have is None:
                per_pacs[name] = p
                continue
            totals = None if have.items_total is None or p.items_total is None \
                else have.items_total + p.items_total
            etas = [e for e in (have.eta, p.eta) if e is not None]
            per_pacs[name] = PacsProgress(
                name, have.items_done + p.items_done, have.items_failed + p.items_failed,
                totals, have.instances + p.instances, have.bytes + p.bytes,
                have.rate_instances + p.rate_instances, have.rate_bytes + p.rate_bytes,
                max(etas) if etas else None, have.active + p.active,
            )
    return ProgressUpdate(per_pacs, elapsed)


@contextlib.asynccontextmanager
async def _dask_client(
    client: distributed.Client | str | None, n_workers: int, processes: bool,
    threads_per_worker: int,
) -> AsyncIterator[Any]:
    """An asynchronous Dask client on this loop (typed loosely: Dask's own annotations are
    partial)."""
    distributed = _distributed()
    if isinstance(client, distributed.Client):
        if not client.asynchronous:
            raise TypeError(
                "client= must be a distributed.Client(..., asynchronous=True) created on this "
                "event loop, or a scheduler address"
            )
        yield client
        return
    if isinstance(client, str):
        async with distributed.Client(client, asynchronous=True) as connected:
            yield connected
        return
    if client is not None:
        raise TypeError(f"client={client!r}: give a distributed.Client, an address or None")
    async with distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=threads_per_worker, processes=processes,
        asynchronous=True, dashboard_address=None, worker_dashboard_address=None,
    ) as cluster, distributed.Client(cluster, asynchronous=True) as local:
        yield local


async def retrieve_many_on_cluster(
    manifest: Manifest,
    *,
    config: BulkConfig,
    output: str | os.PathLike[str],
    client: distributed.Client | str | None = None,
    n_workers: int = 2,
    processes: bool = True,
    threads_per_worker: int = 1,
    partitions: int | None = None,
    worker_ae_titles: Mapping[str, WorkerAE] | None = None,
    on_event: EventCallback | None = None,
    events: EventStream | None = None,
    max_buffered_events: int = 1024,
) -> BulkReport:
    """Run ``manifest`` on a Dask cluster; the merged report of every share.

    ``output``: the directory every worker writes the files and the journal to (the same path
    on each worker; see the module docstring about several hosts).
    ``client``: ``None`` starts a :class:`distributed.LocalCluster` of ``n_workers`` (worker
    processes unless ``processes=False``, ``threads_per_worker`` tasks at once each) for the
    run; a scheduler address connects to it; a :class:`distributed.Client` created with
    ``asynchronous=True`` is used as it is (and left open).
    ``partitions``: shares of the manifest (default: one per worker thread, or one per worker
    of ``worker_ae_titles``). A :class:`~aiodicom.bulk.manifest.ManifestFile` is read by each
    task itself, keeping its share (:func:`~aiodicom.bulk.manifest.shard`), so a manifest of
    millions of rows never passes through the scheduler; any other manifest is read here and
    its items are dealt out.
    ``worker_ae_titles``: worker name -> :class:`WorkerAE`, needed for PACS retrieved by
    C-MOVE (see the module docstring); each share then runs on its worker only.
    ``on_event`` / ``events``: as for :func:`~aiodicom.bulk.retrieve_many`, fed on this loop;
    at most ``max_buffered_events`` item events wait for the consumer (more are dropped: the
    report is complete anyway), and progress snapshots are summed over the shares, the latest
    one handed on.

    Cancelling the call (or a share failing) stops every share: each watches the run's stop
    event and cancels its runner; the journal keeps what was stored.
    """
    distributed = _distributed()
    movers = [p.name for p in config.pacs.values() if p.method == "move"]
    if movers and not worker_ae_titles:
        raise ConfigError(
            f"PACS {', '.join(movers)} are retrieved by C-MOVE: on a cluster a PACS can send "
            "only to a worker it knows as a move destination. Give worker_ae_titles={worker "
            "name: WorkerAE(ae_title, port)} registered at those PACS, or use method='get'"
        )
    run_id = uuid.uuid4().hex[:12]
    output_text = str(Path(output).resolve())
    if client is None:
        # Our own LocalCluster shares this file system: the journal is made here, once,
        # before any share opens it (shares creating a new journal at the same moment could
        # fail on "database is locked" while one of them switches it to WAL).
        Journal(Path(output_text) / JOURNAL_NAME).close()
    async with _dask_client(client, n_workers, processes, threads_per_worker) as dask:
        identity = await dask.scheduler.identity(n_workers=-1)
        workers: dict[str, Mapping[str, Any]] = dict(identity.get("workers", {}))
        if not workers:
            raise DicomError("the Dask cluster has no worker: start some, then run again")
        by_name = {str(info.get("name")): address for address, info in workers.items()}
        pinned: list[tuple[str, WorkerAE]] = []
        if worker_ae_titles:
            missing = sorted(set(worker_ae_titles) - set(by_name))
            if missing:
                raise ConfigError(f"worker_ae_titles names workers {missing} the cluster does "
                                  f"not have (its workers: {sorted(by_name)})")
            pinned = [(by_name[name], ae) for name, ae in worker_ae_titles.items()]
        count = len(pinned) if pinned else (
            partitions or sum(int(info.get("nthreads", 1)) for info in workers.values())
        )
        if count < 1:
            raise ValueError("partitions must be at least 1")
        if pinned and partitions not in (None, count):
            raise ValueError("with worker_ae_titles there is one share per named worker")

        semaphores = {name: f"aiodicom-bulk-{run_id}-{name}" for name in config.pacs}
        global_name = f"aiodicom-bulk-{run_id}-all" if config.max_operations else None
        handles = [
            distributed.Semaphore(max_leases=_cluster_limit(config.pacs[pacs]), name=name,
                                  scheduler_rpc=dask.scheduler, loop=dask.loop)
            for pacs, name in semaphores.items()
        ]
        if global_name is not None:
            handles.append(distributed.Semaphore(
                max_leases=config.global_operations, name=global_name,
                scheduler_rpc=dask.scheduler, loop=dask.loop,
            ))
        for handle in handles:
            await handle  # registered before any task asks for a lease

        shares = await _shares(manifest, count, config, output_text, semaphores, global_name,
                               f"aiodicom-bulk-{run_id}", pinned)
        caller_events = _CallerEvents(on_event, events, max_buffered_events)
        topic = shares[0].topic
        dask.subscribe_topic(topic, caller_events.receive)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(caller_events.pump)
                try:
                    report = await _run_shares(dask, distributed, shares, pinned)
                finally:
                    caller_events.close()
        finally:
            dask.unsubscribe_topic(topic)
        # Only once every share has ended: after a failure or a cancellation the shares may
        # still be giving leases back (a few names then stay on the scheduler).
        for handle in handles:
            with contextlib.suppress(Exception):
                await handle.close()
        return report


async def _shares(
    manifest: Manifest, count: int, config: BulkConfig, output: str,
    semaphores: Mapping[str, str], global_name: str | None, topic: str,
    pinned: list[tuple[str, WorkerAE]],
) -> list[_Share]:
    def share(index: int, items: tuple[ManifestItem, ...] | None,
              file: ManifestFile | None) -> _Share:
        return _Share(index, count, items, file, config, output, semaphores, global_name,
                      topic, f"{topic}-stop", pinned[index][1] if pinned else None)

    if isinstance(manifest, ManifestFile):
        return [share(index, None, manifest) for index in range(count)]
    dealt: list[list[ManifestItem]] = [[] for _ in range(count)]
    position = 0
    async for item in aiter_items(manifest):
        config.get(item.pacs)  # an unknown PACS fails here, before any task starts
        dealt[position].append(item)
        position = (position + 1) % count
    return [share(index, tuple(items), None) for index, items in enumerate(dealt)]


async def _run_shares(
    dask: Any, distributed: Any, shares: list[_Share], pinned: list[tuple[str, WorkerAE]]
) -> BulkReport:
    futures = []
    for share in shares:
        where: dict[str, Any] = {}
        if pinned:
            where = {"workers": [pinned[share.index][0]], "allow_other_workers": False}
        futures.append(dask.submit(
            run_share, share, key=f"{share.topic}-share-{share.index}", pure=False, **where,
        ))
    reports: list[BulkReport] = []
    try:
        async for future in distributed.as_completed(futures):
            try:
                reports.append(BulkReport.from_json(await future))
            except DicomError:
                raise
            except Exception as exc:
                raise DicomError(
                    f"a share of the bulk run failed on the Dask cluster ({type(exc).__name__}:"
                    f" {exc}); what was stored is in the journal: run again to resume"
                ) from exc
    except BaseException:
        with anyio.CancelScope(shield=True):
            # Running tasks cannot be interrupted by Dask: they watch this event.
            await distributed.Event(shares[0].stop_event, client=dask).set()
            await dask.cancel(futures)
        raise
    return BulkReport.merge(reports)
