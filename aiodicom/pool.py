"""Reusing associations: one pool per :class:`~aiodicom.Client`, one bucket per peer.

Opening an association costs a TCP connect and an A-ASSOCIATE round trip (and, at DCMTK
dcmqrscp, a fork); a small C-FIND costs less than that. So an operation borrows an association
from the pool and gives it back when it is done; the next operation to the same peer whose
proposals the association covers takes it instead of opening one.

*Covers* means: for every abstract syntax the operation proposes, the association proposed the
same presentation contexts (transfer syntaxes in the same order, same SCU/SCP roles, same
extended negotiation), and the same user identity and asynchronous operations window. The peer
answered that proposal once already, so it would answer it the same again; a context it rejected
then fails the operation as it would on a new association. Equal proposals are asked for rather
than merely accepted contexts because some peers (dcmqrscp) pick the context a C-GET sends on
by their order.

An association goes back to the idle list only if the operation ended normally (or with a
status the peer sent) and the association is still established with nothing outstanding. One
that the peer aborted or closed, that saw a protocol error, a timeout, or a cancellation during
the operation (a C-CANCEL was sent) is released or aborted instead, never reused.

While idle, an association is watched by a task of the client's task group: it waits for
whatever the peer might send (an idle association should hear nothing) under a deadline of
``idle_timeout``. Either the deadline passes (the association is released), or the peer speaks
(A-RELEASE-RQ, A-ABORT, a closed connection: it is dropped), or an operation takes it (the wait
is cancelled). Nothing polls. The watcher starts from the loop turn after the give-back: an
association taken back before then (a caller running operations one after the other) costs no
task at all.

Per peer at most ``max_associations`` exist at once (in use, idle or being opened or closed).
Callers beyond that wait in order, each for at most ``acquire_timeout`` seconds, then get
:class:`PoolTimeout`. When the limit is reached and only idle associations that do not cover a
waiting caller's proposals are left, the least recently used one is released to make room.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from aiodicom.errors import DicomError, DicomTimeoutError, StatusError
from aiodicom.pdu import AssociateRQ
from aiodicom.session import Session
from aiodicom.transport import running_loop

log = logging.getLogger("aiodicom.pool")

PeerKey = tuple[str, int, str]
"""(host, port, called AE title): the unit of the per-peer limit."""

Opener = Callable[[PeerKey, AssociateRQ], Awaitable[Session]]

MAX_WAITING = 10_000
"""Callers that may wait for one peer at once; the next one gets :class:`PoolTimeout` at once
(the queue is bounded like every other in the library)."""


@attrs.frozen
class PoolOptions:
    """How a :class:`~aiodicom.Client` reuses associations (one set for every peer).

    ``max_associations`` (default 4): associations open to one peer at once, in use or idle;
    callers beyond it wait. Many PACS serve a few associations per calling AE (Orthanc's
    ``DicomThreadsCount`` is 4): raise it where the PACS allows more.
    A peer that serves one association at a time (some modalities and small archives) needs
    ``1``: an idle association is then released before another is opened, where with more
    the new one would wait at the peer until the idle one times out. (With ``1``, an operation
    started while iterating another on the same peer waits for it: :class:`PoolTimeout`.)

    ``idle_timeout`` (default 20 s): an association nobody uses is released after this long.
    Below Orthanc's ``DicomScpTimeout`` (30 s), so that we, not the PACS, end it. ``0`` turns
    reuse off: every operation opens and releases an association of its own.

    ``acquire_timeout`` (default 60 s, ``None`` waits for ever): how long a caller waits for
    one of the ``max_associations`` before :class:`PoolTimeout`.
    """

    max_associations: int = 4
    idle_timeout: float = 20.0
    acquire_timeout: float | None = 60.0

    def __attrs_post_init__(self) -> None:
        if self.max_associations < 1:
            raise ValueError("PoolOptions.max_associations must be at least 1")
        if self.idle_timeout < 0:
            raise ValueError("PoolOptions.idle_timeout must be 0 (no reuse) or more seconds")


class PoolTimeout(DicomTimeoutError):
    """No association to the peer became free in time (the per-peer limit was reached)."""


def covers(have: AssociateRQ, want: AssociateRQ) -> bool:
    """An association opened with ``have`` serves an operation that would propose ``want``."""
    if have is want:  # the usual case: the client hands out one request per kind of operation
        return True
    have_info, want_info = have.user_information, want.user_information
    if (have.called_ae_title, have.calling_ae_title) != (want.called_ae_title,
                                                         want.calling_ae_title):
        return False
    if have_info.user_identity_rq != want_info.user_identity_rq:
        return False
    if have_info.async_operations_window != want_info.async_operations_window:
        return False
    have_contexts = _contexts_by_class(have)
    have_roles = {r.sop_class_uid: r for r in have_info.role_selections}
    have_extended = {e.sop_class_uid: e for e in have_info.sop_class_extended}
    want_roles = {r.sop_class_uid: r for r in want_info.role_selections}
    want_extended = {e.sop_class_uid: e for e in want_info.sop_class_extended}
    for uid, syntaxes in _contexts_by_class(want).items():
        if have_contexts.get(uid) != syntaxes:
            return False
        if have_roles.get(uid) != want_roles.get(uid):
            return False
        if have_extended.get(uid) != want_extended.get(uid):
            return False
    return True


def _contexts_by_class(rq: AssociateRQ) -> dict[str, list[tuple[str, ...]]]:
    contexts: dict[str, list[tuple[str, ...]]] = {}
    for context in rq.presentation_contexts:
        contexts.setdefault(context.abstract_syntax, []).append(context.transfer_syntaxes)
    return contexts


@attrs.define(eq=False)
class _Idle:
    session: Session
    rq: AssociateRQ
    deadline: float
    """When it is released if nobody takes it (the event loop's clock)."""
    state: str = "idle"  # idle -> taken (an operation has it) | closing (watcher ends it)
    watching: bool = False  # the watcher is waiting for the peer
    scope: anyio.CancelScope | None = None
    """The watcher's wait; made when the watcher starts (most associations given back are
    taken again before it does)."""

    def stop_watching(self) -> None:
        if self.scope is not None:
            self.scope.cancel()


@attrs.define(eq=False)
class _Waiter:
    rq: AssociateRQ
    event: anyio.Event = attrs.Factory(anyio.Event)
    idle: _Idle | None = None
    may_open: bool = False
    evicted: bool = False
    error: DicomError | None = None

    @property
    def served(self) -> bool:
        return self.idle is not None or self.may_open or self.error is not None


@attrs.define(eq=False)
class _Bucket:
    total: int = 0
    """Associations that exist: in use, idle, being opened or being closed."""
    idle: list[_Idle] = attrs.Factory(list)
    """Least recently used first."""
    waiters: deque[_Waiter] = attrs.Factory(deque)


class AssociationPool:
    """The client's associations, per peer; see the module docstring.

    ``tasks`` is the client's task group (the idle watchers run there, so leaving the client
    releases every idle association); ``opener`` opens a new association.
    """

    def __init__(
        self, options: PoolOptions, tasks: anyio.abc.TaskGroup, opener: Opener
    ) -> None:
        self.options = options
        self._tasks = tasks
        self._opener = opener
        self._buckets: dict[PeerKey, _Bucket] = {}
        self._closed = False
        # Associations given back in an earlier loop turn and still idle, for the starter task
        # to give each a watcher (an anyio task is started from a task, not a loop callback).
        self._unwatched: list[tuple[PeerKey, _Bucket, _Idle]] = []
        self._starter_running = False
        self._starter_wake: asyncio.Future[None] | None = None

    # --- what operations use --------------------------------------------------------------

    def lease(
        self, key: PeerKey, rq: AssociateRQ, *, clean: Callable[[], bool] | None = None
    ) -> _Lease:
        """``async with pool.lease(...) as session``: an association to ``key`` covering
        ``rq`` for the life of the block.

        It goes back to the pool when the block ends normally or with a
        :class:`~aiodicom.StatusError` (the peer answered), ``clean()`` (if given) agrees and
        the association is still fit for another operation; otherwise it is ended.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        return _Lease(self, key, bucket, rq, clean)

    def counts(self, key: PeerKey) -> tuple[int, int]:
        """(associations that exist, of which idle) for one peer."""
        bucket = self._buckets.get(key)
        return (bucket.total, len(bucket.idle)) if bucket is not None else (0, 0)

    def idle(self, key: PeerKey) -> tuple[Session, ...]:
        """The idle associations to one peer, least recently used first (to look at: an
        operation takes one by asking the pool, never directly)."""
        bucket = self._buckets.get(key)
        return tuple(i.session for i in bucket.idle) if bucket is not None else ()

    async def aclose(self) -> None:
        """Refuse new leases and release every idle association (concurrently, bounded by
        the ACSE timeout each); associations still in use are ended when given back."""
        self._closed = True
        # Let the give-backs of this loop turn reach _needs_watcher first (below, an
        # association that made room before its watcher started is ended here).
        await anyio.lowlevel.checkpoint()
        async with anyio.create_task_group() as tasks:
            for bucket in self._buckets.values():
                for waiter in bucket.waiters:
                    waiter.error = DicomError("the client was closed while this operation "
                                              "waited for an association")
                    waiter.event.set()
                bucket.waiters.clear()
                for idle in list(bucket.idle):
                    bucket.idle.remove(idle)
                    idle.state = "taken"
                    idle.stop_watching()
                    tasks.start_soon(self._end, bucket, idle.session)
            for _, bucket, idle in self._unwatched:
                if idle.state == "closing":  # else idle (ended above) or taken
                    idle.state = "taken"
                    tasks.start_soon(self._end, bucket, idle.session)
            self._unwatched.clear()

    # --- acquiring --------------------------------------------------------------------------

    async def _acquire(self, key: PeerKey, bucket: _Bucket, rq: AssociateRQ) -> Session:
        if self._closed:
            raise DicomError("the client is closed: use its operations inside 'async with'")
        if not bucket.waiters and bucket.idle:
            # Nobody queued before us: the most recently used idle association that covers us
            # is ours, without a place in the queue (the common case of a loop of operations).
            for idle in reversed(bucket.idle):
                if idle.state == "idle" and not idle.watching and covers(idle.rq, rq):
                    bucket.idle.remove(idle)
                    # Its watcher has not started: it will see "taken" and return at once.
                    idle.state = "taken"
                    if idle.session.reusable:
                        return idle.session
                    await self._end(bucket, idle.session)
                    break
        if len(bucket.waiters) >= MAX_WAITING:
            raise PoolTimeout(
                f"{MAX_WAITING} operations already wait for an association to {_name(key)}; "
                "run fewer at once or raise PoolOptions.max_associations"
            )
        waiter = _Waiter(rq)
        bucket.waiters.append(waiter)
        self._assign(bucket)
        if not waiter.served:
            timeout = self.options.acquire_timeout
            try:
                with anyio.fail_after(timeout):
                    await waiter.event.wait()
            except BaseException as exc:
                if waiter in bucket.waiters:
                    bucket.waiters.remove(waiter)
                if waiter.served:
                    # Served while the timeout or cancellation was on its way: hand it on.
                    await self._unassign(bucket, waiter)
                if isinstance(exc, TimeoutError):
                    raise PoolTimeout(
                        f"no association to {_name(key)} became free within {timeout} s: "
                        f"{self.options.max_associations} are in use (PoolOptions."
                        "max_associations); raise it if the PACS allows more, or raise "
                        "PoolOptions.acquire_timeout"
                    ) from None
                raise
        if waiter.error is not None:
            raise waiter.error
        if waiter.idle is not None:
            idle = waiter.idle
            if idle.watching:
                # The watcher may have been woken by the peer (A-ABORT, A-RELEASE-RQ, a closed
                # connection) in this very loop turn: let it look before we trust the
                # association. (Taken back before its watcher ever ran, as in a loop of
                # operations, it has had no time to hear anything: no turn to spend.)
                await anyio.lowlevel.checkpoint()
                idle.stop_watching()
            if idle.session.reusable:
                return idle.session
            with anyio.CancelScope(shield=True):
                await idle.session.close()
            # Its slot is ours: open a new association in it.
        try:
            return await self._opener(key, rq)
        except BaseException:
            bucket.total -= 1
            self._assign(bucket)
            raise

    def _assign(self, bucket: _Bucket) -> None:
        """Serve waiting callers, in order, with what the bucket has."""
        limit = self.options.max_associations
        closing = 0
        for waiter in list(bucket.waiters):
            if not bucket.idle and bucket.total >= limit:
                break  # nothing left to hand out or to make room with
            idle = next((i for i in reversed(bucket.idle) if covers(i.rq, waiter.rq)), None)
            if idle is not None:
                bucket.idle.remove(idle)
                idle.state = "taken"
                waiter.idle = idle
            elif bucket.total < limit:
                bucket.total += 1
                waiter.may_open = True
            else:
                if not waiter.evicted and bucket.idle and closing < len(bucket.idle):
                    # Only idle associations that serve nobody waiting hold the slots: end the
                    # least recently used; its slot goes to the first caller waiting then.
                    victim = bucket.idle.pop(0)
                    victim.state = "closing"
                    victim.stop_watching()
                    waiter.evicted = True
                    closing += 1
                continue
            bucket.waiters.remove(waiter)
            waiter.event.set()

    async def _unassign(self, bucket: _Bucket, waiter: _Waiter) -> None:
        if waiter.idle is not None:
            idle, waiter.idle = waiter.idle, None
            idle.state = "idle"
            bucket.idle.append(idle)
            self._assign(bucket)
        elif waiter.may_open:
            waiter.may_open = False
            bucket.total -= 1
            self._assign(bucket)

    # --- giving back ------------------------------------------------------------------------

    async def _give_back(
        self, key: PeerKey, bucket: _Bucket, session: Session, rq: AssociateRQ, keep: bool
    ) -> None:
        if keep and not self._closed and self.options.idle_timeout > 0:
            # The loop's own clock (anyio's current_time on asyncio, without looking the
            # backend up): this runs for every operation.
            loop = running_loop()
            idle = _Idle(session, rq, loop.time() + self.options.idle_timeout)
            bucket.idle.append(idle)
            if bucket.waiters:
                self._assign(bucket)  # straight to the next caller: no watcher needed then
            if idle.state != "taken":  # idle, or chosen to make room (its watcher ends it)
                # From the next loop turn on: a caller running operations one after the other
                # takes the association back before that, and no watcher task is made at all.
                loop.call_soon(self._needs_watcher, key, bucket, idle)
                if not self._starter_running:
                    self._starter_running = True
                    self._tasks.start_soon(self._start_watchers, name="idle association watchers")
            return
        await self._end(bucket, session)

    def _needs_watcher(self, key: PeerKey, bucket: _Bucket, idle: _Idle) -> None:
        if idle.state == "taken":
            return  # an operation has it already
        self._unwatched.append((key, bucket, idle))
        wake = self._starter_wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _start_watchers(self) -> None:
        """Give each association still idle a loop turn after its give-back its watcher (one
        task for the client's life, ended with the client's task group)."""
        loop = running_loop()
        while True:
            unwatched, self._unwatched = self._unwatched, []
            for key, bucket, idle in unwatched:
                if idle.state != "taken":  # idle, or chosen to make room (its watcher ends it)
                    self._tasks.start_soon(
                        self._watch, bucket, idle, name=f"idle association {key}"
                    )
            if not self._unwatched:
                self._starter_wake = loop.create_future()
                await self._starter_wake

    async def _end(self, bucket: _Bucket, session: Session) -> None:
        # The slot is freed only once the association is gone: the peer never sees more than
        # max_associations of ours at once.
        try:
            with anyio.CancelScope(shield=True):
                await session.close()
        finally:
            bucket.total -= 1
            self._assign(bucket)

    async def _watch(self, bucket: _Bucket, idle: _Idle) -> None:
        """Wait, while ``idle`` is idle, for its deadline or for the peer to say anything."""
        try:
            if idle.state == "idle":
                dispatcher = idle.session.dispatcher
                idle.scope = anyio.CancelScope(deadline=idle.deadline)
                with idle.scope:
                    try:
                        idle.watching = True
                        async with dispatcher.reading():
                            await dispatcher.read_one()
                    except DicomError as exc:
                        log.debug("idle association ended by the peer: %s", exc)
                    except Exception:  # never take the client's task group down
                        log.exception("idle association failed")
        finally:
            # Also when the client's task group is cancelled: the association is released.
            if idle.state != "taken":  # else an operation has it (and checks it is usable)
                if idle in bucket.idle:
                    bucket.idle.remove(idle)
                idle.state = "closing"
                await self._end(bucket, idle.session)


class _Lease:
    """The async context manager of :meth:`AssociationPool.lease` (a class, not a generator:
    it runs for every operation)."""

    __slots__ = ("_bucket", "_clean", "_key", "_pool", "_rq", "_session")

    def __init__(
        self, pool: AssociationPool, key: PeerKey, bucket: _Bucket, rq: AssociateRQ,
        clean: Callable[[], bool] | None,
    ) -> None:
        self._pool = pool
        self._key = key
        self._bucket = bucket
        self._rq = rq
        self._clean = clean
        self._session: Session | None = None

    async def __aenter__(self) -> Session:
        self._session = await self._pool._acquire(self._key, self._bucket, self._rq)
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        assert session is not None
        keep = exc is None or isinstance(exc, StatusError)
        keep = keep and session.reusable and (self._clean is None or self._clean())
        await self._pool._give_back(self._key, self._bucket, session, self._rq, keep)


def _name(key: PeerKey) -> str:
    host, port, ae_title = key
    return f"{ae_title} at {host}:{port}"


__all__ = ["AssociationPool", "PeerKey", "PoolOptions", "PoolTimeout", "covers"]
