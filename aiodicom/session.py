"""A requested association with its dispatcher running: the place where services are invoked."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from pydicom import Dataset

from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Association, Timeouts
from aiodicom.dispatcher import Dispatcher, RequestHandler
from aiodicom.errors import DicomError
from aiodicom.negotiation import PresentationContext
from aiodicom.pdu import AssociateRQ
from aiodicom.query import Level, Query, QueryModel
from aiodicom.services import echo as echo_service
from aiodicom.services import retrieve as retrieve_service
from aiodicom.services import store as store_service
from aiodicom.services.cancel import CANCEL_TIMEOUT
from aiodicom.services.find import Find, HierarchicalFind
from aiodicom.sinks import DirectorySink, MemorySink, Sink

if TYPE_CHECKING:
    from aiodicom.client import Client


class Session:
    """An established association as seen by a service user.

    Obtain one with ``async with peer.associate(...) as session``; every operation started here
    shares the one association, which is released when the block ends (aborted on error).
    """

    def __init__(self, association: Association, dispatcher: Dispatcher) -> None:
        self.association = association
        self.dispatcher = dispatcher

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

    def find(
        self, query: Query, *, strict: bool = False, relational: bool = False,
        datetime_matching: bool = False, fuzzy_names: bool = False,
        timezone_adjustment: bool = False, priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> Find:
        """C-FIND on this association; see :class:`~aiodicom.services.find.Find`. The options
        must have been proposed when associating (``FindOptions(...).negotiation_item(uid)``)."""
        return Find(
            query, session=self, strict=strict, relational=relational,
            datetime_matching=datetime_matching, fuzzy_names=fuzzy_names,
            timezone_adjustment=timezone_adjustment, priority=priority,
            cancel_timeout=cancel_timeout,
        )

    def find_series(
        self, *, model: QueryModel = QueryModel.STUDY_ROOT, strict: bool = False,
        character_set: str | None = None, **keys: object,
    ) -> HierarchicalFind:
        """Series by hierarchical queries (STUDY, then SERIES per study) on this association;
        see :class:`~aiodicom.services.find.HierarchicalFind`."""
        return HierarchicalFind(Level.SERIES, keys, model=model, session=self, strict=strict,
                                character_set=character_set)

    def find_images(
        self, *, model: QueryModel = QueryModel.STUDY_ROOT, strict: bool = False,
        character_set: str | None = None, **keys: object,
    ) -> HierarchicalFind:
        """Like :meth:`find_series`, down to the IMAGE level."""
        return HierarchicalFind(Level.IMAGE, keys, model=model, session=self, strict=strict,
                                character_set=character_set)

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

    async def echo(self) -> None:
        """C-ECHO: returns on status 0000, raises :class:`~aiodicom.StatusError` otherwise."""
        await echo_service.echo(self.dispatcher)

    async def store(
        self,
        items: store_service.StoreItems,
        *,
        priority: int = 0,
        move_originator: tuple[str, int] | None = None,
    ) -> store_service.StoreResult:
        """C-STORE each item (file path, Dataset, Instance); a per-object status, never raised.

        Propose :func:`~aiodicom.services.store.proposals_for` when associating.
        """
        return await store_service.store(
            self, items, priority=priority, move_originator=move_originator
        )

    def move(
        self,
        query: Query | Dataset,
        destination: str | None = None,
        *,
        client: Client | None = None,
        sink: Sink | MemorySink | DirectorySink | None = None,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> retrieve_service.Retrieval:
        """C-MOVE on this association (the Move SOP class of the query's model must have been
        proposed). With ``client``, the destination defaults to its AE title and the
        deliveries reaching its acceptor go to ``sink``; without, name the ``destination``.
        A FIND context of the same model, if accepted, lets errors say whether the PACS holds
        what was asked for. See :class:`~aiodicom.services.retrieve.Retrieval`."""
        model = retrieve_service.retrieve_model(query)
        sop_class = retrieve_service.retrieve_sop_class(model, "move")
        to_us = client is not None and destination in (None, client.ae_title)
        if client is not None and to_us and client.port is None:
            raise DicomError("C-MOVE to this client needs its acceptor: Client(..., port=0)")
        if client is None and destination is None:
            raise TypeError("name the move destination, or pass client= to receive the instances")
        find_uid = model.find_sop_class
        can_find = any(
            ctx.accepted and ctx.abstract_syntax == find_uid for ctx in self.contexts.values()
        )

        async def count_matches(identifier: Dataset) -> int:
            return len(await self.find(Query.from_dataset(identifier, model)).all())

        address = None
        if client is not None and to_us and client.port is not None:
            address = (client.host, client.port)
        return retrieve_service.Retrieval(
            "move", query, sop_class_uid=sop_class, sink=sink, session=self,
            destination=destination or (client.ae_title if client is not None else None),
            router=client.router if client is not None and to_us else None,
            destination_address=address,
            count_matches=count_matches if can_find else None,
            priority=priority, cancel_timeout=cancel_timeout,
        )

    def get(
        self,
        query: Query | Dataset,
        *,
        sink: Sink | MemorySink | DirectorySink | None = None,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> retrieve_service.Retrieval:
        """C-GET on this association: propose
        :func:`~aiodicom.services.get_contexts.get_proposals` when associating, so that the
        Get model and the storage contexts (SCP role) are there. One C-GET at a time."""
        sop_class = retrieve_service.retrieve_sop_class(
            retrieve_service.retrieve_model(query), "get"
        )
        return retrieve_service.Retrieval(
            "get", query, sop_class_uid=sop_class, sink=sink, session=self,
            priority=priority, cancel_timeout=cancel_timeout,
        )


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
) -> AsyncIterator[Session]:
    association = await Association.open(
        host, port, rq, timeouts=timeouts, max_pdu_length=max_pdu_length, ssl_context=ssl_context
    )
    assert association.response is not None
    window = association.response.user_information.async_operations_window
    dispatcher = Dispatcher(
        association,
        request_handler=request_handler,
        max_outstanding=window.max_operations_invoked if window is not None else 1,
    )
    session = Session(association, dispatcher)
    try:
        yield session
    except BaseException:
        # An operation that failed or was cancelled has already cancelled itself on the wire;
        # if the association survived that, end it politely rather than abort.
        with anyio.CancelScope(shield=True):
            if session.usable:
                await session.release()
            else:
                await association.abort()
        raise
    await session.release()


__all__ = ["Session", "open_session"]
