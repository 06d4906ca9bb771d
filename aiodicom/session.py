"""A requested association with its dispatcher running: the place where services are invoked."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Association, Timeouts
from aiodicom.dispatcher import Dispatcher, RequestHandler
from aiodicom.errors import DicomError
from aiodicom.negotiation import PresentationContext
from aiodicom.pdu import AssociateRQ
from aiodicom.query import Query
from aiodicom.services import echo as echo_service
from aiodicom.services import store as store_service
from aiodicom.services.find import Find


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

    def find(self, query: Query, *, strict: bool = False, relational: bool = False) -> Find:
        """C-FIND on this association; see :class:`~aiodicom.services.find.Find`."""
        return Find(query, session=self, strict=strict, relational=relational)

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
