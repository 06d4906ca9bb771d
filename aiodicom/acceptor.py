"""The acceptor side: associations other AEs open to us (Verification and Storage SCP).

It reuses the association and DIMSE layers of the requestor; only the negotiation policy and the
request handlers differ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import cache

import attrs

from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Association, Timeouts
from aiodicom.dimse import DataSetOpener, DimseMessage
from aiodicom.dispatcher import Dispatcher
from aiodicom.negotiation import PresentationContext, acceptor_contexts
from aiodicom.pdu import (
    APPLICATION_CONTEXT_NAME,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    UserInformation,
)
from aiodicom.services.storage_scp import answer_request
from aiodicom.transport import Connection
from aiodicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION,
    compressed_transfer_syntaxes,
    storage_sop_classes,
)


@attrs.frozen
class IncomingStore:
    """A C-STORE-RQ that arrived at our acceptor, with what is known about its association."""

    message: DimseMessage
    context: PresentationContext
    calling_ae_title: str
    called_ae_title: str


StoreHandler = Callable[[IncomingStore], Awaitable[DimseMessage]]
"""Handles one incoming C-STORE-RQ and returns the C-STORE-RSP to send."""

DataOpenerFactory = Callable[[Mapping[int, PresentationContext], str], DataSetOpener]


@attrs.define
class AcceptorPolicy:
    """What our acceptor agrees to."""

    ae_title: str
    timeouts: Timeouts = attrs.Factory(Timeouts)
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH
    require_called_ae_title: bool = False
    store_handler: StoreHandler | None = None
    #: Given an association's contexts and the calling AE title, chooses where incoming data
    #: sets go (see :class:`~aiodicom.dimse.DataSetOpener`); default: memory.
    data_opener: DataOpenerFactory | None = None

    def transfer_syntaxes_for(self, abstract_syntax: str) -> Iterable[str] | None:
        if abstract_syntax == VERIFICATION:
            return UNCOMPRESSED_TRANSFER_SYNTAXES
        if self.store_handler is not None and abstract_syntax in _storage_classes():
            return _storage_transfer_syntaxes()
        return None

    def decide(self, rq: AssociateRQ) -> AssociateAC | AssociateRJ:
        if rq.application_context_name != APPLICATION_CONTEXT_NAME:
            return AssociateRJ(result=1, source=1, reason=2)
        if rq.protocol_version & 1 == 0:
            return AssociateRJ(result=1, source=2, reason=2)
        if self.require_called_ae_title and rq.called_ae_title != self.ae_title:
            return AssociateRJ(result=1, source=1, reason=7)
        answers, roles, _ = acceptor_contexts(rq, self.transfer_syntaxes_for)
        return AssociateAC(
            called_ae_title=rq.called_ae_title,
            calling_ae_title=rq.calling_ae_title,
            presentation_contexts=answers,
            user_information=UserInformation(
                max_pdu_length=self.max_pdu_length,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version_name=IMPLEMENTATION_VERSION_NAME,
                role_selections=roles,
            ),
        )

    def contexts_for(self, rq: AssociateRQ, _ac: AssociateAC) -> dict[int, PresentationContext]:
        return acceptor_contexts(rq, self.transfer_syntaxes_for)[2]


@cache
def _storage_classes() -> frozenset[str]:
    return frozenset(storage_sop_classes())


@cache
def _storage_transfer_syntaxes() -> tuple[str, ...]:
    return UNCOMPRESSED_TRANSFER_SYNTAXES + compressed_transfer_syntaxes()


async def serve_association(connection: Connection, policy: AcceptorPolicy) -> None:
    """Serve one incoming connection until the association ends."""
    association = await Association.accept(
        connection, policy.decide, timeouts=policy.timeouts, max_pdu_length=policy.max_pdu_length,
        contexts_for=policy.contexts_for,
    )
    if association is None:
        return
    assert association.request is not None
    request = association.request
    if policy.data_opener is not None:
        association.open_data = policy.data_opener(
            association.contexts, request.calling_ae_title
        )

    async def receive(message: DimseMessage, context: PresentationContext) -> DimseMessage:
        assert policy.store_handler is not None
        return await policy.store_handler(IncomingStore(
            message, context, request.calling_ae_title, request.called_ae_title
        ))

    async def handle(message: DimseMessage) -> None:
        # Read when each request comes: the store handler may be replaced meanwhile.
        store = receive if policy.store_handler is not None else None
        await association.send_message(
            await answer_request(message, association.contexts, store)
        )

    dispatcher = Dispatcher(association, request_handler=handle)
    try:
        await dispatcher.run()
    finally:
        if not association.closed.is_set():
            await association.abort()


__all__ = ["AcceptorPolicy", "IncomingStore", "StoreHandler", "serve_association"]
