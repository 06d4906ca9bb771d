"""A requested association with its dispatcher running: the place where services are invoked.

:class:`Operations` holds every service call once; a :class:`Session` runs them on its own
association, a :class:`~aiodicom.Peer` on associations borrowed from its client's pool. Both
therefore offer the same operations with the same signatures.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal, Protocol

import anyio
from pydicom import Dataset

from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Association, Timeouts
from aiodicom.dispatcher import Dispatcher, RequestHandler
from aiodicom.errors import DicomError
from aiodicom.model import Level, QueryModel
from aiodicom.negotiation import ContextProposal, PresentationContext
from aiodicom.pdu import AssociateRQ, SOPClassExtendedNegotiation
from aiodicom.query import Query
from aiodicom.services import commitment, commitment_registry, series_selection
from aiodicom.services import echo as echo_service
from aiodicom.services import store as store_service
from aiodicom.services.cancel import CANCEL_TIMEOUT
from aiodicom.services.find import NO_OPTIONS, Find, FindOptions, HierarchicalFind
from aiodicom.services.get_contexts import get_proposals, sop_classes_from
from aiodicom.services.retrieve import (
    MoveRouter,
    Retrieval,
    retrieve_model,
    retrieve_sop_class,
)
from aiodicom.sinks import DirectorySink, MemorySink, Sink
from aiodicom.uids import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION,
)

log = logging.getLogger("aiodicom.session")


class OwningClient(Protocol):
    """What a session needs of the :class:`aiodicom.Client` that opened it: who we are, and
    where a C-MOVE to ourselves lands (a Protocol, so that session.py need not import client.py,
    which builds sessions)."""

    @property
    def ae_title(self) -> str: ...

    @property
    def listen_host(self) -> str: ...

    @property
    def listen_port(self) -> int | None: ...

    @property
    def _router(self) -> MoveRouter: ...

    @property
    def commitments(self) -> commitment_registry.CommitmentRegistry: ...

AnySink = Sink | MemorySink | DirectorySink
Clean = Callable[[], bool]
"""Asked when an operation gives its association back: may it be reused?"""


class Operations:
    """The DICOM operations, written once for :class:`Session` and :class:`~aiodicom.Peer`.

    Each one says which presentation contexts it needs; :meth:`_using` supplies an association
    (a Session: itself, whatever it proposed; a Peer: one from the pool covering them).
    """

    def _using(
        self,
        proposals: Sequence[ContextProposal],
        extended: Sequence[SOPClassExtendedNegotiation] = (),
        clean: Clean | None = None,
    ) -> AbstractAsyncContextManager[Session]:
        raise NotImplementedError

    @property
    def _itself(self) -> Session | None:
        """The one association every operation runs on, if there is one."""
        return None

    @property
    def _client(self) -> OwningClient | None:
        raise NotImplementedError

    @property
    def _commitments(self) -> commitment_registry.CommitmentRegistry:
        client = self._client
        if client is None:
            raise NotImplementedError
        return client.commitments

    # --- C-FIND ---------------------------------------------------------------------------

    def find(
        self,
        query: Query,
        *,
        options: FindOptions | None = None,
        strict: bool = False,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Find:
        """C-FIND: ``async for match in peer.find(query)`` (streamed: each response is read
        when the loop asks for it). ``async with`` it (or ``aclose()``) to stop early; C-CANCEL
        is sent then. ``strict`` drops responses contradicting the query.

        ``options`` (:class:`~aiodicom.FindOptions`) are proposed in SOP Class Extended
        Negotiation; ``find.negotiated`` says which the peer accepted. A query that breaks the
        hierarchical rules is sent only if relational queries were accepted. On a
        :class:`Session` they must have been proposed when associating
        (``options.negotiation_item(uid)``).
        """
        options = options or NO_OPTIONS
        uid = query.sop_class_uid("find")
        extended = [options.negotiation_item(uid)] if options.any else []
        return Find(
            query, session=self._itself,
            open_session=self._opener([_plain(uid)], extended),
            strict=strict, relational=options.relational,
            datetime_matching=options.datetime_matching, fuzzy_names=options.fuzzy_names,
            timezone_adjustment=options.timezone_adjustment,
            priority=priority, cancel_timeout=cancel_timeout,
        )

    def find_series(
        self, *, model: QueryModel = QueryModel.STUDY_ROOT, strict: bool = False,
        character_set: str | None = None, **keys: object,
    ) -> HierarchicalFind:
        """Series matching ``keys`` (any level down to SERIES) with hierarchical queries only,
        STUDY then SERIES, on one association; each match carries its study's attributes.
        See :class:`~aiodicom.services.find.HierarchicalFind`."""
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
        return HierarchicalFind(
            level, keys, model=model, session=self._itself,
            open_session=self._opener([_plain(uid)]), strict=strict,
            character_set=character_set,
        )

    def _opener(
        self,
        proposals: Sequence[ContextProposal],
        extended: Sequence[SOPClassExtendedNegotiation] = (),
    ) -> Callable[[], AbstractAsyncContextManager[Session]] | None:
        if self._itself is not None:
            return None
        return lambda: self._using(proposals, extended)

    # --- C-MOVE, C-GET ----------------------------------------------------------------------

    def move(
        self,
        query: Query | Dataset,
        destination: str | None = None,
        *,
        sink: AnySink | None = None,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Retrieval:
        """C-MOVE to ``destination`` (default: this client's acceptor, which must be listening).

        ``await peer.move(q)`` gives the :class:`~aiodicom.RetrieveResult`; ``async with
        peer.move(q) as r: async for event in r`` shows progress. Instances reaching our
        acceptor go to ``sink`` (a :class:`~aiodicom.MemorySink` unless given). ``query`` is a
        :class:`~aiodicom.Query` or a C-FIND match; only its level and unique keys are sent.
        The PACS must know our AE title with our host and port;
        :class:`~aiodicom.MoveDestinationUnknown` says so when it does not. The FIND context of
        the model is proposed too: after a bare refusal a C-FIND on the same association tells
        whether the PACS holds what was asked for.
        """
        client = self._client
        if destination is None and client is None:
            raise DicomError(
                "name the C-MOVE destination: this association belongs to no Client whose "
                "acceptor could receive the instances"
            )
        to_us = client is not None and destination in (None, client.ae_title)
        if to_us and client is not None and client.listen_port is None:
            raise DicomError(
                "C-MOVE to this client needs its acceptor: use Client(ae_title, "
                "listen_port=...) (0 picks a free port) inside 'async with', or name another "
                "destination, or use get()"
            )
        model = retrieve_model(query)
        sop_class = retrieve_sop_class(model, "move")
        proposals = [_plain(sop_class)]
        if model.find_sop_class is not None:
            proposals.append(_plain(model.find_sop_class))

        async def count_matches(identifier: Dataset) -> int:
            # A Session runs it on itself; a Peer gets the association the move just gave back.
            return len(await self.find(Query.from_dataset(identifier, model)).all())

        address = None
        router = None
        if to_us and client is not None and client.listen_port is not None:
            address = (client.listen_host, client.listen_port)
            router = client._router
        return Retrieval(
            "move", query, sop_class_uid=sop_class, sink=sink, session=self._itself,
            open_session=self._retrieval_opener(proposals),
            destination=destination or (client.ae_title if client is not None else None),
            router=router, destination_address=address, count_matches=count_matches,
            priority=priority, cancel_timeout=cancel_timeout,
        )

    def get(
        self,
        query: Query | Dataset,
        *,
        sink: AnySink | None = None,
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
        the first context accepted for a class. On a :class:`Session` the association's
        contexts are already settled (propose
        :func:`~aiodicom.services.get_contexts.get_proposals` when associating): these two
        then change nothing. One C-GET at a time per association.
        """
        sop_class = retrieve_sop_class(retrieve_model(query), "get")
        classes = sop_classes or sop_classes_from(query)
        proposals = get_proposals(sop_class, classes, transfer_syntaxes)
        return Retrieval(
            "get", query, sop_class_uid=sop_class, sink=sink, session=self._itself,
            open_session=self._retrieval_opener(proposals),
            priority=priority, cancel_timeout=cancel_timeout,
        )

    def retrieve(
        self,
        query: Query | Dataset,
        *,
        sink: AnySink | None = None,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Retrieval:
        """C-MOVE to our own acceptor when the client listens, C-GET otherwise.

        ``result = await peer.retrieve(match)``, then ``result.series().to_sitk()`` for an
        image of the series held in memory.
        """
        client = self._client
        if client is not None and client.listen_port is not None:
            return self.move(query, sink=sink, priority=priority, cancel_timeout=cancel_timeout)
        return self.get(query, sink=sink, priority=priority, cancel_timeout=cancel_timeout)

    async def retrieve_series(
        self,
        *,
        method: Literal["move", "get"] | None = None,
        sink: MemorySink | DirectorySink | None = None,
        model: QueryModel = QueryModel.STUDY_ROOT,
        character_set: str | None = None,
        **keys: object,
    ) -> series_selection.SeriesSelection:
        """The series matching ``keys`` (any level down to SERIES), retrieved as
        :class:`~aiodicom.Series` objects: ``for series in await peer.retrieve_series(
        PatientID=..., StudyDate=..., SeriesDescription="AX*"): series.to_sitk()``.

        Keys the peer ignored are checked here before any bulk transfer: on the value it
        returned, or, where it returned none, on the header of one instance of each candidate
        series; only the series that really match are retrieved whole. The
        :class:`~aiodicom.services.series_selection.SeriesSelection` says per candidate and
        key how it was checked. ``method``: "move" (to our acceptor) or "get"; by default as
        :meth:`retrieve` chooses. Instances go to ``sink`` (a MemorySink unless given).
        """
        if method not in (None, "move", "get"):
            raise ValueError(f"method must be 'move', 'get' or None (as retrieve()): {method!r}")
        if method is None:
            client = self._client
            method = "move" if client is not None and client.listen_port is not None \
                else "get"
        return await series_selection.retrieve_series(
            self, keys, method=method, sink=sink, model=model, character_set=character_set
        )

    def _retrieval_opener(
        self, proposals: Sequence[ContextProposal]
    ) -> Callable[[Retrieval], AbstractAsyncContextManager[Session]] | None:
        if self._itself is not None:
            return None

        def lease(retrieval: Retrieval) -> AbstractAsyncContextManager[Session]:
            # A retrieval keeps a timeout or our cancel in its result instead of raising it
            # through the association's block: ask it whether the association is still sound.
            def clean() -> bool:
                result = retrieval.result
                return result is not None and not result.cancelled \
                    and result.interrupted is None

            return self._using(proposals, clean=clean)

        return lease

    # --- C-ECHO, C-STORE --------------------------------------------------------------------

    async def echo(self) -> None:
        """C-ECHO. Raises a :class:`~aiodicom.DicomError` subclass on any failure: rejected
        association, abort, timeout or a non-success status
        (:class:`~aiodicom.StatusError`)."""
        async with self._using([_plain(VERIFICATION)]) as session:
            await echo_service.echo(session.dispatcher)

    async def store(
        self,
        items: store_service.StoreItems,
        *,
        priority: int = 0,
        move_originator: tuple[str, int] | None = None,
    ) -> store_service.StoreResult:
        """C-STORE each item (file path, Dataset, Instance); a per-object status in the result,
        never raised (association failures raise). A Peer proposes what the items need (more
        than one association only past 128 presentation contexts); on a Session propose
        :func:`~aiodicom.services.store.proposals_for` when associating."""
        return await store_service.store_on_associations(
            lambda proposals: self._using(proposals), items, priority=priority,
            move_originator=move_originator,
        )

    async def store_and_commit(
        self,
        items: store_service.StoreItems,
        *,
        timeout: float = 60.0,
        same_association_wait: float | None = None,
        priority: int = 0,
    ) -> commitment.StoredAndCommitted:
        """C-STORE each item, then ask for storage commitment of those stored (see
        :meth:`store` and :meth:`commit`): the peer's answer says which it now keeps safe."""
        stored = await self.store(items, priority=priority)
        ok = [outcome for outcome in stored.outcomes if outcome.ok]
        committed = await self.commit(
            ok, timeout=timeout, same_association_wait=same_association_wait
        ) if ok else None
        return commitment.StoredAndCommitted(stored, committed)

    # --- Storage Commitment -----------------------------------------------------------------

    async def commit(
        self,
        instances: commitment.CommitItems,
        *,
        timeout: float = 60.0,
        same_association_wait: float | None = None,
        transaction_uid: str | None = None,
    ) -> commitment_registry.CommitmentResult:
        """Storage Commitment (PS3.4 Annex J): ask the peer to take responsibility for
        ``instances`` and wait up to ``timeout`` seconds for its answer, a
        :class:`~aiodicom.CommitmentResult` listing the instances committed and those failed
        (with failure reasons).

        The peer answers with an N-EVENT-REPORT, on the request's association or later on one
        it opens to our acceptor (the client must then listen, and the peer know our AE
        title, host and port). The request's association is kept and read for
        ``same_association_wait`` seconds (default: the whole timeout), then given back while
        the wait goes on. On timeout :class:`~aiodicom.CommitmentTimeout` is raised and the
        transaction stays pending: ``await client.commitment_result(exc.transaction_uid)``
        waits again. A refused request raises :class:`~aiodicom.StatusError`.
        """
        requested = commitment.references(instances)
        registry = self._commitments
        started = anyio.current_time()
        hold = timeout if same_association_wait is None else min(same_association_wait, timeout)
        async with self._using([_plain(STORAGE_COMMITMENT_PUSH_MODEL)]) as session:
            rq = session.association.request
            peer_ae_title = rq.called_ae_title if rq is not None else ""
            dispatcher = session.dispatcher
            previous = dispatcher.request_handler
            dispatcher.request_handler = commitment.commitment_handler(
                session, registry, peer_ae_title, previous
            )
            try:
                pending = await commitment.request_commitment(
                    session, requested, registry, peer_ae_title=peer_ae_title,
                    transaction_uid=transaction_uid,
                )
                await commitment.hold_for_report(
                    session, registry, pending.transaction_uid, hold
                )
            finally:
                dispatcher.request_handler = previous
        remaining = max(0.0, timeout - (anyio.current_time() - started))
        return await registry.wait(pending.transaction_uid, remaining)

    async def commitment_result(
        self, transaction_uid: str, *, timeout: float | None = 60.0
    ) -> commitment_registry.CommitmentResult:
        """Wait again for the report of a storage commitment transaction whose
        :meth:`commit` timed out (it arrives at our acceptor, or on an association of ours)."""
        return await self._commitments.wait(transaction_uid, timeout)


def _plain(abstract_syntax: str) -> ContextProposal:
    return ContextProposal(abstract_syntax, UNCOMPRESSED_TRANSFER_SYNTAXES)


class Session(Operations):
    """An established association as seen by a service user.

    Obtain one with ``async with peer.associate(...) as session``; every operation started here
    shares the one association, which is released when the block ends (aborted on error). It
    offers the operations of :class:`~aiodicom.Peer` with the same signatures; ``client`` (the
    :class:`~aiodicom.Client` it was opened by, if any) is where a C-MOVE to ourselves lands.
    """

    def __init__(
        self, association: Association, dispatcher: Dispatcher, client: OwningClient | None = None
    ) -> None:
        self.association = association
        self.dispatcher = dispatcher
        self.client = client
        # Without a client, the reports can only come on this association: its own registry.
        self._own_commitments = (
            commitment_registry.CommitmentRegistry() if client is None else None
        )

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        rq: AssociateRQ,
        *,
        timeouts: Timeouts,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        ssl_context: ssl.SSLContext | None = None,
        request_handler: RequestHandler | None = None,
        client: OwningClient | None = None,
    ) -> Session:
        """Connect and negotiate; end it with :meth:`close` (or use :func:`open_session`)."""
        association = await Association.open(
            host, port, rq, timeouts=timeouts, max_pdu_length=max_pdu_length,
            ssl_context=ssl_context,
        )
        assert association.response is not None
        window = association.response.user_information.async_operations_window
        dispatcher = Dispatcher(
            association,
            request_handler=request_handler,
            max_outstanding=window.max_operations_invoked if window is not None else 1,
        )
        return cls(association, dispatcher, client)

    @property
    def _itself(self) -> Session:
        return self

    @property
    def _client(self) -> OwningClient | None:
        return self.client

    @property
    def _commitments(self) -> commitment_registry.CommitmentRegistry:
        if self._own_commitments is not None:
            return self._own_commitments
        return super()._commitments

    @asynccontextmanager
    async def _using(
        self,
        proposals: Sequence[ContextProposal],
        extended: Sequence[SOPClassExtendedNegotiation] = (),
        clean: Clean | None = None,
    ) -> AsyncIterator[Session]:
        yield self  # the contexts were settled when associating; the owner ends it

    @property
    def contexts(self) -> dict[int, PresentationContext]:
        """Every proposed presentation context with the peer's answer."""
        return self.association.contexts

    @property
    def peer_max_pdu_length(self) -> int:
        return self.association.peer_max_pdu_length

    @property
    def usable(self) -> bool:
        """Established, and no operation is waiting for responses."""
        return self.association.is_established and not self.dispatcher.ended \
            and not self.dispatcher.outstanding

    @property
    def reusable(self) -> bool:
        """Fit for another operation: :attr:`usable`, no failure seen, connection open."""
        return self.usable and self.dispatcher.failure is None \
            and not self.association.closed.is_set()

    async def release(self) -> None:
        """A-RELEASE, waiting (ACSE timeout) for the peer's reply; abort if none comes."""
        association = self.association
        if self.dispatcher.ended:
            await association.abort()
            return
        await association.release()
        try:
            with anyio.fail_after(association.timeouts.acse):
                async with self.dispatcher.reading():
                    while not self.dispatcher.ended:
                        await self.dispatcher.read_one()
        except (TimeoutError, DicomError):
            pass
        finally:
            await association.abort()

    async def close(self) -> None:
        """End the association whatever its state: release when usable, abort otherwise.
        Shielded from cancellation, bounded by the ACSE timeout."""
        with anyio.CancelScope(shield=True):
            if self.usable:
                try:
                    await self.release()
                    return
                except DicomError as exc:
                    # The peer closed meanwhile (an idle association it timed out): the
                    # A-RELEASE-RQ cannot be sent. Closing must not fail for that.
                    log.debug("release failed, aborting instead: %s", exc)
            await self.association.abort()


@asynccontextmanager
async def open_session(
    host: str,
    port: int,
    rq: AssociateRQ,
    *,
    timeouts: Timeouts,
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
    ssl_context: ssl.SSLContext | None = None,
    request_handler: RequestHandler | None = None,
    client: OwningClient | None = None,
) -> AsyncIterator[Session]:
    """One association for the life of the block: released at its end, also on error (an
    operation that failed or was cancelled has already cancelled itself on the wire; if the
    association survived that, it ends politely), aborted when it cannot be released."""
    session = await Session.open(
        host, port, rq, timeouts=timeouts, max_pdu_length=max_pdu_length,
        ssl_context=ssl_context, request_handler=request_handler, client=client,
    )
    try:
        yield session
    finally:
        await session.close()


__all__ = ["Operations", "Session", "open_session"]
