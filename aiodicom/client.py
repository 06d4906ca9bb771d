"""The high-level API: a :class:`Client` (our AE, with its optional acceptor) and its peers."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType

import anyio
import anyio.abc
import attrs
from pydicom import Dataset

from aiodicom.acceptor import AcceptorPolicy, StoreHandler, serve_association
from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Timeouts
from aiodicom.dispatcher import RequestHandler
from aiodicom.errors import DicomError
from aiodicom.negotiation import ContextProposal, build_request_contexts
from aiodicom.pdu import (
    AssociateRQ,
    AsyncOperationsWindow,
    SOPClassExtendedNegotiation,
    UserIdentityRQ,
    UserInformation,
)
from aiodicom.query import Level, Query, QueryModel
from aiodicom.routing import DeliveryRouter, UnexpectedHandler
from aiodicom.services import store as store_service
from aiodicom.services.cancel import CANCEL_TIMEOUT
from aiodicom.services.find import Find, FindOptions, HierarchicalFind
from aiodicom.services.get_contexts import get_proposals, sop_classes_from
from aiodicom.services.retrieve import Retrieval, retrieve_model, retrieve_sop_class
from aiodicom.services.storage_scp import SinkHandler
from aiodicom.session import Session, open_session
from aiodicom.sinks import DirectorySink, MemorySink, Sink
from aiodicom.transport import Connection, Listener
from aiodicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION,
)

log = logging.getLogger("aiodicom")


class Client:
    """Our application entity.

    ``async with Client(ae_title="AIOSCU") as client`` makes requests only. Given ``port`` (0 picks
    a free one, then read :attr:`port`), it also runs an acceptor on the same event loop for the
    life of the block: it answers C-ECHO, and C-STORE deliveries once a retrieval expects them.
    """

    def __init__(
        self,
        ae_title: str = "AIODICOM",
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        timeouts: Timeouts | None = None,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        ssl_context: ssl.SSLContext | None = None,
        server_ssl_context: ssl.SSLContext | None = None,
        require_called_ae_title: bool = False,
    ) -> None:
        if not ae_title or len(ae_title) > 16 or not ae_title.isascii():
            raise ValueError(f"AE title {ae_title!r} must be 1-16 ASCII characters")
        self.ae_title = ae_title
        self.host = host
        self._requested_port = port
        self.timeouts = timeouts or Timeouts()
        self.max_pdu_length = max_pdu_length
        self.ssl_context = ssl_context
        self._server_ssl_context = server_ssl_context
        self.acceptor_policy = AcceptorPolicy(
            ae_title, timeouts=self.timeouts, max_pdu_length=max_pdu_length,
            require_called_ae_title=require_called_ae_title,
        )
        self.router = DeliveryRouter()
        self.acceptor_policy.store_handler = self.router.handle
        self.acceptor_policy.data_opener = self.router.opener
        self._listener: Listener | None = None
        self._tasks: anyio.abc.TaskGroup | None = None

    @property
    def port(self) -> int | None:
        """The port our acceptor listens on (``None`` without an acceptor)."""
        return self._listener.port if self._listener is not None else None

    def set_store_handler(self, handler: StoreHandler | None) -> None:
        """Replace the routing of incoming C-STORE requests to C-MOVEs (``None`` refuses all
        storage); for handing deliveries no move expects to code of yours, prefer
        :attr:`on_unexpected_delivery`."""
        self.acceptor_policy.store_handler = handler
        # Deliveries are written straight to a move's directory only for the router, which
        # knows to rename or remove those files.
        self.acceptor_policy.data_opener = (
            self.router.opener if handler == self.router.handle else None
        )

    @property
    def on_unexpected_delivery(self) -> UnexpectedHandler | None:
        """What to do with an instance that no active C-MOVE expects (a storage SCP's job):
        an async callable taking an :class:`~aiodicom.Instance` and returning the C-STORE
        status, or a :class:`~aiodicom.sinks.MemorySink` / :class:`~aiodicom.sinks.DirectorySink`
        to keep them all in (a DirectorySink gets each data set written as it arrives, at any
        size). ``None`` (the default) refuses such deliveries."""
        return self.router.unexpected

    @on_unexpected_delivery.setter
    def on_unexpected_delivery(
        self, handler: UnexpectedHandler | MemorySink | DirectorySink | None
    ) -> None:
        if isinstance(handler, (MemorySink, DirectorySink)):
            handler = SinkHandler(handler)
        self.router.unexpected = handler

    async def __aenter__(self) -> Client:
        if self._requested_port is not None:
            self._listener = await Listener.bind(
                self.host, self._requested_port, self._server_ssl_context,
                handshake_timeout=self.timeouts.artim,
            )
            self._tasks = anyio.create_task_group()
            await self._tasks.__aenter__()
            self._tasks.start_soon(self._listener.serve, self._serve_connection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._tasks is not None:
            self._tasks.cancel_scope.cancel()
            try:
                return await self._tasks.__aexit__(exc_type, exc, tb)
            finally:
                self._tasks = None
                if self._listener is not None:
                    with anyio.CancelScope(shield=True):
                        await self._listener.aclose()
        return None

    async def _serve_connection(self, connection: Connection) -> None:
        # One misbehaving peer must never take the acceptor (and the client) down with it.
        try:
            await serve_association(connection, self.acceptor_policy)
        except DicomError as exc:
            log.info("incoming association ended: %s", exc)
        except Exception:
            log.exception("incoming association failed")

    def peer(self, host: str, port: int, ae_title: str = "ANY-SCP") -> Peer:
        return Peer(self, host, port, ae_title)


@attrs.frozen
class Peer:
    """A remote application entity, reached through a :class:`Client`."""

    client: Client
    host: str
    port: int
    ae_title: str = "ANY-SCP"

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
        """Open one association; it is released when the block ends, aborted on error."""
        if not proposals:
            proposals = [ContextProposal(VERIFICATION, UNCOMPRESSED_TRANSFER_SYNTAXES)]
        rq = self.association_request(
            proposals, extended_negotiation=extended_negotiation, user_identity=user_identity,
            async_operations=async_operations,
        )
        async with open_session(
            self.host, self.port, rq, timeouts=self.client.timeouts,
            max_pdu_length=self.client.max_pdu_length, ssl_context=self.client.ssl_context,
            request_handler=request_handler,
        ) as session:
            yield session

    def find(
        self,
        query: Query,
        *,
        strict: bool = False,
        relational: bool = False,
        datetime_matching: bool = False,
        fuzzy_names: bool = False,
        timezone_adjustment: bool = False,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Find:
        """C-FIND on an association of its own: ``async for match in peer.find(query)``.

        The four options are proposed in SOP Class Extended Negotiation when asked for;
        ``find.negotiated`` (and ``find.result.negotiated``) says which the peer accepted. A
        query that breaks the hierarchical rules is sent only if relational was accepted.
        """
        options = FindOptions(relational, datetime_matching, fuzzy_names, timezone_adjustment)
        proposal = ContextProposal(query.sop_class_uid("find"), UNCOMPRESSED_TRANSFER_SYNTAXES)
        extended = [options.negotiation_item(proposal.abstract_syntax)] if options.any else []
        return Find(
            query,
            open_session=lambda: self.associate([proposal], extended_negotiation=extended),
            strict=strict, relational=relational, datetime_matching=datetime_matching,
            fuzzy_names=fuzzy_names, timezone_adjustment=timezone_adjustment,
            priority=priority, cancel_timeout=cancel_timeout,
        )

    def find_series(
        self, *, model: QueryModel = QueryModel.STUDY_ROOT, strict: bool = False,
        character_set: str | None = None, **keys: object,
    ) -> HierarchicalFind:
        """Series matching ``keys`` (any level down to SERIES) with hierarchical queries only,
        STUDY then SERIES, on one association; each match carries its study's attributes."""
        return self._hierarchy(Level.SERIES, model, strict, character_set, keys)

    def find_images(
        self, *, model: QueryModel = QueryModel.STUDY_ROOT, strict: bool = False,
        character_set: str | None = None, **keys: object,
    ) -> HierarchicalFind:
        """Like :meth:`find_series`, down to the IMAGE level."""
        return self._hierarchy(Level.IMAGE, model, strict, character_set, keys)

    def _hierarchy(
        self, level: Level, model: QueryModel, strict: bool, character_set: str | None,
        keys: dict[str, object],
    ) -> HierarchicalFind:
        uid = model.find_sop_class
        assert uid is not None
        proposal = ContextProposal(uid, UNCOMPRESSED_TRANSFER_SYNTAXES)
        return HierarchicalFind(
            level, keys, model=model, strict=strict, character_set=character_set,
            open_session=lambda: self.associate([proposal]),
        )

    def move(
        self,
        query: Query | Dataset,
        destination: str | None = None,
        *,
        sink: Sink | MemorySink | DirectorySink | None = None,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Retrieval:
        """C-MOVE to ``destination`` (default: this client's acceptor, which must be running).

        ``await peer.move(q)`` gives the :class:`RetrieveResult`; ``async with peer.move(q) as
        r: async for event in r`` shows progress. Instances go to ``sink`` (a
        :class:`MemorySink` unless given). ``query`` is a :class:`Query` or a C-FIND match;
        only its level and unique keys are sent. The PACS must know our AE title with our
        host and port; :class:`MoveDestinationUnknown` says so when it does not.
        """
        client = self.client
        to_us = destination is None or destination == client.ae_title
        if to_us and client.port is None:
            raise DicomError(
                "C-MOVE to this client needs its acceptor: use Client(ae_title, port=...) "
                "inside 'async with', or name another destination, or use get()"
            )
        model = retrieve_model(query)
        sop_class = retrieve_sop_class(model, "move")
        proposal = ContextProposal(sop_class, UNCOMPRESSED_TRANSFER_SYNTAXES)

        async def count_matches(identifier: Dataset) -> int:
            return len(await self.find(Query.from_dataset(identifier, model)).all())

        port = client.port
        return Retrieval(
            "move", query, sop_class_uid=sop_class, sink=sink,
            open_session=lambda _: self.associate([proposal]),
            destination=destination or client.ae_title,
            router=client.router if to_us else None,
            destination_address=(client.host, port) if to_us and port is not None else None,
            count_matches=count_matches,
            priority=priority, cancel_timeout=cancel_timeout,
        )

    def get(
        self,
        query: Query | Dataset,
        *,
        sink: Sink | MemorySink | DirectorySink | None = None,
        sop_classes: Sequence[str] | None = None,
        transfer_syntaxes: Sequence[str] | None = None,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Retrieval:
        """C-GET: the instances come back on the same association (no acceptor needed).

        Storage contexts are proposed for ``sop_classes``, else for the SOP classes a C-FIND
        match names (SOP Classes in Study, SOP Class UID), else for common storage classes;
        each class with uncompressed and, separately, the common lossless and lossy
        compressed transfer syntaxes, so the peer can send what it stores unchanged.
        ``transfer_syntaxes`` instead proposes exactly those, in that order, in one context per
        class: to ask for an encoding, or for peers (DCMTK dcmqrscp) that send everything on
        the first context accepted for a class.
        """
        sop_class = retrieve_sop_class(retrieve_model(query), "get")
        classes = sop_classes or sop_classes_from(query)
        proposals = get_proposals(sop_class, classes, transfer_syntaxes)
        return Retrieval(
            "get", query, sop_class_uid=sop_class, sink=sink,
            open_session=lambda _: self.associate(proposals),
            priority=priority, cancel_timeout=cancel_timeout,
        )

    def retrieve(
        self,
        query: Query | Dataset,
        *,
        sink: Sink | MemorySink | DirectorySink | None = None,
    ) -> Retrieval:
        """C-MOVE to our own acceptor when the client runs one, C-GET otherwise.

        ``result = await peer.retrieve(match)``, then ``result.series().to_sitk()`` for an
        image of the series held in memory.
        """
        if self.client.port is not None:
            return self.move(query, sink=sink)
        return self.get(query, sink=sink)

    async def echo(self) -> None:
        """Associate, C-ECHO, release. Raises a :class:`~aiodicom.DicomError` subclass on any
        failure: rejected association, abort, timeout or a non-success status."""
        async with self.associate() as session:
            await session.echo()

    async def store(
        self,
        items: store_service.StoreItems,
        *,
        priority: int = 0,
        move_originator: tuple[str, int] | None = None,
    ) -> store_service.StoreResult:
        """C-STORE each item (file path, Dataset, Instance) on associations of their own (more
        than one only past 128 presentation contexts). Failed objects are in the result;
        association failures raise."""
        return await store_service.store_on_associations(
            self.associate, items, priority=priority, move_originator=move_originator
        )


__all__ = ["Client", "Peer"]
