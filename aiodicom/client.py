"""The high-level API: a :class:`Client` (our AE, with its pool and optional acceptor) and
its peers."""

from __future__ import annotations

import logging
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Literal

import anyio
import anyio.abc
import attrs
from pydicom import Dataset

from aiodicom.acceptor import AcceptorPolicy, IncomingStore, leave_serving, serve_connection
from aiodicom.access import AccessPolicy
from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Timeouts
from aiodicom.dimse import N_EVENT_REPORT_RQ, DimseMessage
from aiodicom.dispatcher import RequestHandler
from aiodicom.errors import DicomError
from aiodicom.limits import Limits
from aiodicom.model import QueryModel
from aiodicom.negotiation import ContextProposal, build_request_contexts
from aiodicom.pdu import (
    AssociateRQ,
    AsyncOperationsWindow,
    SOPClassExtendedNegotiation,
    UserIdentityRQ,
    UserInformation,
)
from aiodicom.pool import AssociationPool, PeerKey, PoolOptions
from aiodicom.query import Query
from aiodicom.routing import DeliveryRouter, UnexpectedHandler
from aiodicom.services import commitment, commitment_registry
from aiodicom.services import store as store_service
from aiodicom.services.cancel import CANCEL_TIMEOUT
from aiodicom.services.find import Find, FindOptions, HierarchicalFind
from aiodicom.services.retrieve import Retrieval
from aiodicom.services.series_selection import SeriesSelection
from aiodicom.services.storage_scp import SinkHandler
from aiodicom.session import AnySink, Clean, Operations, Session, open_session
from aiodicom.sinks import DirectorySink, MemorySink
from aiodicom.transport import Connection, Listener
from aiodicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    STORAGE_COMMITMENT_PUSH_MODEL,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION,
)

log = logging.getLogger("aiodicom")

_MAX_REQUESTS = 256
"""Association requests a client remembers (least recently used dropped first)."""


@attrs.frozen
class PeerAddress:
    """Where a remote application entity listens, and its AE title."""

    host: str
    port: int
    ae_title: str = "ANY-SCP"


PeerLike = PeerAddress | tuple[str, int, str] | tuple[str, int]
"""``PeerAddress(host, port, ae_title)`` or a tuple ``(host, port[, ae_title])``."""

UnexpectedDeliveries = UnexpectedHandler | MemorySink | DirectorySink | None
"""What the acceptor does with an instance no retrieval expects: ``None`` refuses it (0x0124),
a sink keeps it (a quarantine), an async callable taking the :class:`~aiodicom.Instance`
returns the status."""


def _address(peer: PeerLike) -> PeerAddress:
    if isinstance(peer, PeerAddress):
        return peer
    if isinstance(peer, tuple) and len(peer) in (2, 3):
        return PeerAddress(*peer)
    raise TypeError(f"peer={peer!r}: give (host, port, ae_title) or a PeerAddress")


class Client:
    """Our application entity: ``async with Client("AIOSCU", peer=(host, port, "PACS")) as
    client``, then ``client.find(...)``, ``client.get(...)``, ... on that peer, or
    ``client.peer(host, port, ae_title)`` for others. Operations work only inside the block.

    ``peer``: the default peer of :meth:`find`, :meth:`move`, :meth:`get`, ... (a
    :class:`PeerAddress` or ``(host, port, ae_title)``).

    ``listen_port``: run an acceptor (our Storage SCP and Verification SCP) on the same event
    loop for the life of the block, on ``listen_host`` (default loopback only; ``"0.0.0.0"`` for
    every interface). 0 picks a free port; read :attr:`listen_port`. It receives the instances
    of C-MOVEs to us, and answers C-ECHO.

    ``unexpected_deliveries``: what the acceptor does with instances that no retrieval
    expects, including those naming a running C-MOVE that do not come from the PACS it was
    sent to. ``None`` (default) refuses them (0x0124, not authorized); a
    :class:`~aiodicom.MemorySink` or :class:`~aiodicom.DirectorySink` keeps them all, apart
    from every retrieval's results (a DirectorySink gets each data set written as it
    arrives, at any size): a quarantine, or a plain storage SCP; an async callable taking an
    :class:`~aiodicom.Instance` and returning the C-STORE status does anything else.

    ``limits``: what peers opening associations to the acceptor may cost
    (:class:`~aiodicom.Limits`: concurrent associations, memory, idle time, minimum transfer
    rate...); safe defaults. As ``unexpected_deliveries``, a DirectorySink without
    ``max_remembered`` remembers only ``limits.max_remembered_paths`` recent paths.

    ``access``: who may associate with the acceptor (calling AE titles, source networks, User
    Identity) and how strictly deliveries are matched to C-MOVEs: an
    :class:`~aiodicom.AccessPolicy`; by default anyone may associate.

    ``pool``: how associations are reused (:class:`~aiodicom.PoolOptions`): by default at most
    4 per peer at once, idle ones released after 20 s, callers wait up to 60 s for one. All
    are released when the block ends.

    ``commitments``: where storage commitment transactions wait for their reports (a
    :class:`~aiodicom.services.commitment_registry.CommitmentRegistry`, e.g. with a journal); by
    default one in memory. The acceptor takes the reports SCPs send on associations of their
    own (Storage Commitment, with the SCP role granted to them).

    Errors raised in the block reach the caller as they are (never wrapped in an
    ``ExceptionGroup`` by the client's own task group). Only if several of the client's
    internal tasks failed at once, which they are written never to do, would a group be raised.
    """

    def __init__(
        self,
        ae_title: str = "AIODICOM",
        *,
        peer: PeerLike | None = None,
        listen_port: int | None = None,
        listen_host: str = "127.0.0.1",
        unexpected_deliveries: UnexpectedDeliveries = None,
        pool: PoolOptions | None = None,
        timeouts: Timeouts | None = None,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        ssl_context: ssl.SSLContext | None = None,
        server_ssl_context: ssl.SSLContext | None = None,
        require_called_ae_title: bool = False,
        limits: Limits | None = None,
        commitments: commitment_registry.CommitmentRegistry | None = None,
        access: AccessPolicy | None = None,
    ) -> None:
        if not ae_title or len(ae_title) > 16 or not ae_title.isascii():
            raise ValueError(f"AE title {ae_title!r} must be 1-16 ASCII characters")
        self.ae_title = ae_title
        self.default_peer = _address(peer) if peer is not None else None
        self._default_peer = (
            Peer(self, self.default_peer.host, self.default_peer.port, self.default_peer.ae_title)
            if self.default_peer is not None else None
        )
        self.listen_host = listen_host
        self._requested_port = listen_port
        self.pool_options = pool or PoolOptions()
        self.timeouts = timeouts or Timeouts()
        self.max_pdu_length = max_pdu_length
        self.ssl_context = ssl_context
        self._server_ssl_context = server_ssl_context
        self.access = access if access is not None else AccessPolicy()
        self._router = DeliveryRouter(self.access)
        self.limits = limits or Limits()
        if isinstance(unexpected_deliveries, DirectorySink) and (
            unexpected_deliveries.max_remembered is None
        ):
            # A storage SCP runs for months: its sink must not remember every instance.
            unexpected_deliveries.max_remembered = self.limits.max_remembered_paths
        if isinstance(unexpected_deliveries, (MemorySink, DirectorySink)):
            self._router.unexpected = SinkHandler(unexpected_deliveries)
        else:
            self._router.unexpected = unexpected_deliveries
        self._acceptor_policy = AcceptorPolicy(
            ae_title, timeouts=self.timeouts, max_pdu_length=max_pdu_length,
            require_called_ae_title=require_called_ae_title,
            store_handler=self._router.handle,
            # Deliveries go straight to a move's directory only through the router, which
            # knows to rename or remove those files.
            data_opener=self._router.opener,
            limits=self.limits,
            answered_inline={N_EVENT_REPORT_RQ: self._receive_report},
            sop_classes={STORAGE_COMMITMENT_PUSH_MODEL: UNCOMPRESSED_TRANSFER_SYNTAXES},
            scp_role_classes=frozenset({STORAGE_COMMITMENT_PUSH_MODEL}),
            access=self.access,
        )
        self.commitments = commitments if commitments is not None \
            else commitment_registry.CommitmentRegistry()
        self._listener: Listener | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._pool: AssociationPool | None = None
        # The A-ASSOCIATE-RQ of each kind of operation, built once: the pool recognises an
        # association opened for the same request by identity, the cheapest test there is.
        self._requests: OrderedDict[tuple[object, ...], AssociateRQ] = OrderedDict()

    @property
    def listen_port(self) -> int | None:
        """The port our acceptor listens on (``None`` without one; after the block, the port
        it had)."""
        return self._listener.port if self._listener is not None else None

    @property
    def pool(self) -> AssociationPool:
        """The associations in use and idle (exists inside ``async with`` only)."""
        if self._pool is None:
            raise DicomError(
                "the client is not open: use its operations inside 'async with Client(...) as "
                "client'"
            )
        return self._pool

    async def __aenter__(self) -> Client:
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        try:
            if self._requested_port is not None:
                self._listener = await Listener.bind(
                    self.listen_host, self._requested_port, self._server_ssl_context,
                    handshake_timeout=self.timeouts.artim, gate=self._acceptor_policy.gate,
                    admit_address=self.access.address_allowed,
                )
                tasks.start_soon(self._listener.serve, self._serve_connection)
        except BaseException as exc:
            await leave_serving(tasks, self._listener, type(exc), exc, exc.__traceback__)
            raise
        self._tasks = tasks
        self._pool = AssociationPool(self.pool_options, tasks, self._open)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tasks, self._tasks = self._tasks, None
        pool, self._pool = self._pool, None
        if tasks is None:
            return None
        try:
            if pool is not None:
                # Idle associations are released (A-RELEASE) before the tasks are cancelled;
                # also when leaving by cancellation (each release is bounded by the ACSE
                # timeout, so the shield cannot hold the exit for long).
                with anyio.CancelScope(shield=True):
                    await pool.aclose()
        finally:
            try:
                result = await leave_serving(tasks, self._listener, exc_type, exc, tb)
            finally:
                unexpected = self._router.unexpected
                if isinstance(unexpected, SinkHandler) and isinstance(
                    unexpected.sink, DirectorySink
                ):
                    # Its file made ahead for a next delivery: none comes once serving ends.
                    unexpected.sink.release_spare()
        return result

    async def _serve_connection(self, connection: Connection) -> None:
        await serve_connection(connection, self._acceptor_policy)

    async def _receive_report(self, incoming: IncomingStore) -> DimseMessage:
        return commitment.answer_event_report(
            incoming.message, incoming.context, incoming.calling_ae_title, self.commitments,
            same_association=False,
        )

    async def _open(self, key: PeerKey, rq: AssociateRQ) -> Session:
        host, port, ae_title = key
        session = await Session.open(
            host, port, rq, timeouts=self.timeouts, max_pdu_length=self.max_pdu_length,
            ssl_context=self.ssl_context, client=self,
        )
        # A storage commitment report may come late, on an association back in the pool.
        session.dispatcher.request_handler = commitment.commitment_handler(
            session, self.commitments, ae_title
        )
        return session

    # --- peers ------------------------------------------------------------------------------

    def peer(self, host: str, port: int, ae_title: str = "ANY-SCP") -> Peer:
        """A remote AE reached through this client (its associations come from the pool)."""
        return Peer(self, host, port, ae_title)

    @property
    def _default(self) -> Peer:
        if self._default_peer is None:
            raise DicomError(
                "this client has no default peer: give Client(..., peer=(host, port, "
                "ae_title)), or call the operation on client.peer(host, port, ae_title)"
            )
        return self._default_peer

    # The default peer's operations; see :class:`Operations` for each.

    def find(
        self, query: Query, *, options: FindOptions | None = None, strict: bool = False,
        priority: int = 0, cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Find:
        """C-FIND on the default peer: ``async for match in client.find(query)``."""
        return self._default.find(
            query, options=options, strict=strict, priority=priority,
            cancel_timeout=cancel_timeout,
        )

    def find_series(
        self, *, model: QueryModel = QueryModel.STUDY_ROOT, strict: bool = False,
        character_set: str | None = None, **keys: object,
    ) -> HierarchicalFind:
        """Series on the default peer (STUDY then SERIES level)."""
        return self._default.find_series(
            model=model, strict=strict, character_set=character_set, **keys
        )

    def find_images(
        self, *, model: QueryModel = QueryModel.STUDY_ROOT, strict: bool = False,
        character_set: str | None = None, **keys: object,
    ) -> HierarchicalFind:
        """Images on the default peer (STUDY, SERIES then IMAGE level)."""
        return self._default.find_images(
            model=model, strict=strict, character_set=character_set, **keys
        )

    def move(
        self, query: Query | Dataset, destination: str | None = None, *,
        sink: AnySink | None = None, priority: int = 0, cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Retrieval:
        """C-MOVE from the default peer (to our acceptor unless ``destination`` is named)."""
        return self._default.move(
            query, destination, sink=sink, priority=priority, cancel_timeout=cancel_timeout
        )

    def get(
        self, query: Query | Dataset, *, sink: AnySink | None = None,
        sop_classes: Sequence[str] | None = None, transfer_syntaxes: Sequence[str] | None = None,
        priority: int = 0, cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Retrieval:
        """C-GET from the default peer."""
        return self._default.get(
            query, sink=sink, sop_classes=sop_classes, transfer_syntaxes=transfer_syntaxes,
            priority=priority, cancel_timeout=cancel_timeout,
        )

    def retrieve(
        self, query: Query | Dataset, *, sink: AnySink | None = None, priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Retrieval:
        """C-MOVE to us when listening, C-GET otherwise, from the default peer."""
        return self._default.retrieve(
            query, sink=sink, priority=priority, cancel_timeout=cancel_timeout
        )

    async def retrieve_series(
        self, *, method: Literal["move", "get"] | None = None,
        sink: MemorySink | DirectorySink | None = None,
        model: QueryModel = QueryModel.STUDY_ROOT, character_set: str | None = None,
        **keys: object,
    ) -> SeriesSelection:
        """The series matching ``keys``, every key checked before bulk transfer, from the
        default peer: see :meth:`aiodicom.session.Operations.retrieve_series`."""
        return await self._default.retrieve_series(
            method=method, sink=sink, model=model, character_set=character_set, **keys
        )

    async def echo(self) -> None:
        """C-ECHO to the default peer."""
        await self._default.echo()

    async def store(
        self, items: store_service.StoreItems, *, priority: int = 0,
        move_originator: tuple[str, int] | None = None,
    ) -> store_service.StoreResult:
        """C-STORE to the default peer."""
        return await self._default.store(
            items, priority=priority, move_originator=move_originator
        )

    async def commit(
        self, instances: commitment.CommitItems, *, timeout: float = 60.0,
        same_association_wait: float | None = None, transaction_uid: str | None = None,
    ) -> commitment_registry.CommitmentResult:
        """Storage commitment by the default peer: see :meth:`aiodicom.Peer.commit`."""
        return await self._default.commit(
            instances, timeout=timeout, same_association_wait=same_association_wait,
            transaction_uid=transaction_uid,
        )

    async def store_and_commit(
        self, items: store_service.StoreItems, *, timeout: float = 60.0,
        same_association_wait: float | None = None, priority: int = 0,
    ) -> commitment.StoredAndCommitted:
        """C-STORE to the default peer, then storage commitment of what it stored."""
        return await self._default.store_and_commit(
            items, timeout=timeout, same_association_wait=same_association_wait,
            priority=priority,
        )

    async def commitment_result(
        self, transaction_uid: str, *, timeout: float | None = 60.0
    ) -> commitment_registry.CommitmentResult:
        """Wait again for the report of a storage commitment transaction that timed out
        (whichever peer it was asked of)."""
        return await self.commitments.wait(transaction_uid, timeout)


@attrs.frozen
class Peer(Operations):
    """A remote application entity, reached through a :class:`Client`.

    Its operations (those of :class:`~aiodicom.Session`, same signatures) borrow associations
    from the client's pool, which opens one when none idle covers what the operation proposes.
    :meth:`associate` opens one of your own instead.
    """

    client: Client
    host: str
    port: int
    ae_title: str = "ANY-SCP"

    @property
    def _client(self) -> Client:
        return self.client

    def _using(
        self,
        proposals: Sequence[ContextProposal],
        extended: Sequence[SOPClassExtendedNegotiation] = (),
        clean: Clean | None = None,
    ) -> AbstractAsyncContextManager[Session]:
        requests = self.client._requests
        key = (self.ae_title, tuple(proposals), tuple(extended))
        rq = requests.get(key)
        if rq is None:
            rq = requests[key] = self.association_request(proposals, extended_negotiation=extended)
            if len(requests) > _MAX_REQUESTS:
                requests.popitem(last=False)
        else:
            requests.move_to_end(key)
        return self.client.pool.lease((self.host, self.port, self.ae_title), rq, clean=clean)

    def association_request(
        self,
        proposals: Sequence[ContextProposal],
        *,
        extended_negotiation: Sequence[SOPClassExtendedNegotiation] = (),
        user_identity: UserIdentityRQ | None = None,
        async_operations: tuple[int, int] | None = None,
    ) -> AssociateRQ:
        contexts, roles = build_request_contexts(proposals)
        return AssociateRQ(
            called_ae_title=self.ae_title,
            calling_ae_title=self.client.ae_title,
            presentation_contexts=contexts,
            user_information=UserInformation(
                max_pdu_length=self.client.max_pdu_length,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version_name=IMPLEMENTATION_VERSION_NAME,
                # Proposed only on request: some devices drop the connection when they see it.
                async_operations_window=AsyncOperationsWindow(*async_operations)
                if async_operations is not None else None,
                role_selections=roles,
                sop_class_extended=tuple(extended_negotiation),
                user_identity_rq=user_identity,
            ),
        )

    @asynccontextmanager
    async def associate(
        self,
        proposals: Sequence[ContextProposal] = (),
        *,
        extended_negotiation: Sequence[SOPClassExtendedNegotiation] = (),
        user_identity: UserIdentityRQ | None = None,
        async_operations: tuple[int, int] | None = None,
        request_handler: RequestHandler | None = None,
    ) -> AsyncIterator[Session]:
        """Open an association of your own (not from the pool, not counted in its limit); it
        is released when the block ends, aborted on error."""
        if not proposals:
            proposals = [ContextProposal(VERIFICATION, UNCOMPRESSED_TRANSFER_SYNTAXES)]
        rq = self.association_request(
            proposals, extended_negotiation=extended_negotiation, user_identity=user_identity,
            async_operations=async_operations,
        )
        async with open_session(
            self.host, self.port, rq, timeouts=self.client.timeouts,
            max_pdu_length=self.client.max_pdu_length, ssl_context=self.client.ssl_context,
            request_handler=request_handler, client=self.client,
        ) as session:
            yield session


__all__ = ["Client", "Peer", "PeerAddress", "PeerLike", "UnexpectedDeliveries"]
