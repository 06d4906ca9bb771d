"""C-ECHO (Verification service, PS3.4 Annex A), both sides."""

from __future__ import annotations

from aiodicom.dimse import C_ECHO_RQ, C_ECHO_RSP, NO_DATASET, DimseMessage
from aiodicom.dispatcher import Dispatcher
from aiodicom.errors import DicomTimeoutError, StatusError
from aiodicom.status import Status, status_meaning
from aiodicom.uids import VERIFICATION


async def echo(dispatcher: Dispatcher) -> int:
    """Send C-ECHO-RQ and return status 0x0000, or raise :class:`StatusError`."""
    context = dispatcher.association.context(VERIFICATION)
    async with dispatcher.operation() as message_id:
        request = DimseMessage(
            context.context_id,
            {
                "CommandField": C_ECHO_RQ,
                "MessageID": message_id,
                "AffectedSOPClassUID": VERIFICATION,
                "CommandDataSetType": NO_DATASET,
            },
            None,
        )
        await dispatcher.send(request)
        try:
            response = await dispatcher.next_response(message_id)
        except DicomTimeoutError:
            # C-ECHO cannot be cancelled and its answer may still come: the association's
            # state is unknown, so it must not be reused or released.
            await dispatcher.association.abort()
            raise
    status = response.status_code
    if status != Status.SUCCESS:
        error_comment = response.command.get("ErrorComment")
        raise StatusError(
            status, status_meaning(status, "echo"),
            str(error_comment) if error_comment else None,
        )
    return status


def echo_response(request: DimseMessage) -> DimseMessage:
    """The answer of a Verification SCP: always success."""
    return DimseMessage(
        request.context_id,
        {
            "CommandField": C_ECHO_RSP,
            "MessageIDBeingRespondedTo": request.message_id,
            "AffectedSOPClassUID": VERIFICATION,
            "CommandDataSetType": NO_DATASET,
            "Status": Status.SUCCESS,
        },
        None,
    )
