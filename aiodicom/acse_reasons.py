"""Words for the numbers of A-ASSOCIATE-RJ and A-ABORT (PS3.8 9.3.4, 9.3.8), for messages.

Below both the PDU codec and the exception hierarchy: :class:`~aiodicom.errors.AssociationRejected`
describes itself with them, and the PDU layer raises those errors.
"""

from __future__ import annotations

__all__ = ["describe_abort", "describe_rejection"]

_RJ_RESULT = {1: "rejected permanently", 2: "rejected transiently"}
_RJ_SOURCE = {
    1: "by the DICOM UL service user",
    2: "by the DICOM UL service provider (ACSE)",
    3: "by the DICOM UL service provider (presentation)",
}
_RJ_REASON = {
    1: {
        1: "no reason given",
        2: "application context name not supported",
        3: "calling AE title not recognized",
        7: "called AE title not recognized",
    },
    2: {1: "no reason given", 2: "protocol version not supported"},
    3: {1: "temporary congestion", 2: "local limit exceeded"},
}
_ABORT_SOURCE = {0: "service user", 1: "reserved source", 2: "service provider"}
_ABORT_REASON = {
    0: "reason not specified",
    1: "unrecognized PDU",
    2: "unexpected PDU",
    4: "unrecognized PDU parameter",
    5: "unexpected PDU parameter",
    6: "invalid PDU parameter value",
}


def describe_rejection(result: int, source: int, reason: int) -> str:
    """A sentence for an A-ASSOCIATE-RJ, e.g. "association rejected permanently by ...: called
    AE title not recognized"."""
    reason_text = _RJ_REASON.get(source, {}).get(reason, f"reason {reason}")
    return (
        f"association {_RJ_RESULT.get(result, f'result {result}')} "
        f"{_RJ_SOURCE.get(source, f'by source {source}')}: {reason_text}"
    )


def describe_abort(source: int, reason: int) -> str:
    text = f"association aborted by the {_ABORT_SOURCE.get(source, f'source {source}')}"
    if source == 2:
        text += f": {_ABORT_REASON.get(reason, f'reason {reason}')}"
    return text
