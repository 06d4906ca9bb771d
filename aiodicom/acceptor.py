"""The acceptor side: associations other AEs open to us (Verification and Storage SCP).

It reuses the association and DIMSE layers of the requestor; only the negotiation policy and the
request handlers differ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import cache

import attrs

from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Association, Timeouts
from aiodicom.dimse import C_ECHO_RQ, C_STORE_RQ, DataSetOpener, DimseMessage
from aiodicom.dispatcher import Dispatcher
from aiodicom.negotiation import PresentationContext, acceptor_contexts
from aiodicom.pdu import (
    APPLICATION_CONTEXT_NAME,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    UserInformation,
)
from aiodicom.services.echo import echo_response
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

    async def handle(message: DimseMessage) -> None:
        if message.command_field == C_ECHO_RQ:
            await association.send_message(echo_response(message))
        elif message.command_field == C_STORE_RQ and policy.store_handler is not None:
            incoming = IncomingStore(
                message, association.contexts[message.context_id],
                request.calling_ae_title, request.called_ae_title,
            )
            await association.send_message(await policy.store_handler(incoming))
        else:
            # PS3.7 C.5: an operation we do not provide is refused, the association lives on.
            await association.send_message(_unrecognized(message))

    dispatcher = Dispatcher(association, request_handler=handle)
    try:
        await dispatcher.run()
    finally:
        if not association.closed.is_set():
            await association.abort()


def _unrecognized(message: DimseMessage) -> DimseMessage:
    return DimseMessage(
        message.context_id,
        {
            "CommandField": message.command_field | 0x8000,
            "MessageIDBeingRespondedTo": message.message_id,
            "CommandDataSetType": 0x0101,
            "Status": 0x0211,
        },
        None,
    )


__all__ = ["AcceptorPolicy", "IncomingStore", "StoreHandler", "serve_association"]
