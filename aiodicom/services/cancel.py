"""C-CANCEL for C-FIND, C-MOVE and C-GET (PS3.7 9.3.2.3, 9.3.3.3, 9.3.4.3)."""

from __future__ import annotations

import logging

import anyio

from aiodicom.dimse import C_CANCEL_RQ, NO_DATASET, DimseMessage
from aiodicom.services.channel import ServiceChannel
from aiodicom.status import StatusCategory, status_category

log = logging.getLogger("aiodicom.cancel")

CANCEL_TIMEOUT = 10.0
"""How long a cancelled operation waits for the peer's final response before aborting."""


async def cancel_operation(
    session: ServiceChannel, context_id: int, message_id: int, timeout: float, service: str
) -> DimseMessage | None:
    """Send C-CANCEL-RQ for ``message_id`` and wait up to ``timeout`` seconds for its final
    response, which is returned. A peer that does not answer in time (or an association that
    breaks meanwhile) gets A-ABORT, and ``None`` is returned: the association cannot be trusted
    with another operation while an old one may still be answering."""
    dispatcher = session.dispatcher
    if dispatcher.ended:
        return None
    try:
        await dispatcher.send(DimseMessage(
            context_id,
            {
                "CommandField": C_CANCEL_RQ,
                "MessageIDBeingRespondedTo": message_id,
                "CommandDataSetType": NO_DATASET,
            },
            None,
        ))
        # Pendings already on their way come first; the FE00 (or any final) ends the wait.
        with anyio.move_on_after(timeout):
            while True:
                response = await dispatcher.next_response(message_id, timeout=None)
                status = response.status_code
                if status_category(status) is not StatusCategory.PENDING:
                    return response
        log.warning(
            "%s: no final response within %s s of C-CANCEL; aborting the association",
            service, timeout,
        )
    except Exception as exc:  # any failure here means: give up the association
        log.info("%s: C-CANCEL did not complete: %s", service, exc)
    await session.association.abort()
    return None
