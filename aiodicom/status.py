"""DIMSE status codes: their category (PS3.7 Annex C) and meaning per service (PS3.4).

``status_category`` depends on the code alone, because PS3.7 gives every code one category
whatever the service. ``status_meaning`` depends on the service too: 0xB000 is a coercion warning
for C-STORE but "sub-operations complete with failures" for C-MOVE and C-GET.
"""

from __future__ import annotations

import enum

__all__ = [
    "SERVICES",
    "Status",
    "StatusCategory",
    "describe_status",
    "status_category",
    "status_meaning",
]


class StatusCategory(str, enum.Enum):
    SUCCESS = "success"
    PENDING = "pending"
    CANCEL = "cancel"
    WARNING = "warning"
    FAILURE = "failure"


class Status(enum.IntEnum):
    """The DIMSE status codes this library sends or acts on, by name (PS3.7 Annex C, PS3.4).

    An ``IntEnum``, so a member is the code itself: it goes on the wire and compares equal to
    the integer a peer sent. Codes given as ranges by the standard (A7xx, A9xx, Cxxx) are named
    by the one value this library sends.
    """

    SUCCESS = 0x0000
    WARNING_OPTIONAL_ATTRIBUTES = 0x0001
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    NO_SUCH_EVENT_TYPE = 0x0113
    NO_SUCH_ARGUMENT = 0x0114
    INVALID_ARGUMENT_VALUE = 0x0115
    INVALID_SOP_INSTANCE = 0x0117
    NO_SUCH_SOP_CLASS = 0x0118
    CLASS_INSTANCE_CONFLICT = 0x0119
    MISSING_ATTRIBUTE = 0x0120
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NO_SUCH_ACTION = 0x0123
    NOT_AUTHORIZED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNIZED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212
    RESOURCE_LIMITATION = 0x0213
    OUT_OF_RESOURCES = 0xA700
    OUT_OF_RESOURCES_MATCHES = 0xA701
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    UNABLE_TO_PROCESS = 0xC000
    COERCION_OR_SUB_OPERATION_FAILURES = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    CANCEL = 0xFE00
    PENDING = 0xFF00
    PENDING_OPTIONAL_KEYS_UNSUPPORTED = 0xFF01


SERVICES = ("echo", "store", "find", "move", "get")
"""Values of ``service`` for ``status_meaning`` (case and a ``"C-"`` prefix are ignored)."""

# --- categories ---------------------------------------------------------------------------------

_WARNING_CODES = frozenset({0x0001, 0x0107, 0x0116})


def status_category(code: int) -> StatusCategory:
    """The category of a status code, by PS3.7 Annex C.

    Codes no standard defines fall into FAILURE (except Bxxx, which PS3.7 reserves for warnings):
    a client must not mistake an unknown answer for success or keep waiting on it.
    """
    if code == 0x0000:
        return StatusCategory.SUCCESS
    if code == 0xFF00 or code == 0xFF01:
        return StatusCategory.PENDING
    if code == 0xFE00:
        return StatusCategory.CANCEL
    if code & 0xF000 == 0xB000 or code in _WARNING_CODES:
        return StatusCategory.WARNING
    return StatusCategory.FAILURE


# --- meanings -----------------------------------------------------------------------------------

# PS3.7 Annex C: statuses any DIMSE service may return.
_GENERAL: dict[int, str] = {
    0x0000: "Success",
    0x0001: "Warning: requested optional attributes are not supported",
    0x0105: "Failure: no such attribute",
    0x0106: "Failure: invalid attribute value",
    0x0107: "Warning: attribute list error",
    0x0110: "Failure: processing failure",
    0x0111: "Failure: duplicate SOP instance",
    0x0112: "Failure: no such SOP instance",
    0x0113: "Failure: no such event type",
    0x0114: "Failure: no such argument",
    0x0115: "Failure: invalid argument value",
    0x0116: "Warning: attribute value out of range",
    0x0117: "Failure: invalid SOP instance",
    0x0118: "Failure: no such SOP class",
    0x0119: "Failure: class-instance conflict",
    0x0120: "Failure: missing attribute",
    0x0121: "Failure: missing attribute value",
    0x0122: "Refused: SOP class not supported",
    0x0123: "Failure: no such action",
    0x0124: "Refused: not authorized",
    0x0210: "Failure: duplicate invocation",
    0x0211: "Failure: unrecognized operation",
    0x0212: "Failure: mistyped argument",
    0x0213: "Failure: resource limitation",
    # Codes of the services below whose meaning does not depend on the service, so that a
    # caller without a service still gets words for them.
    0xA701: "Refused: out of resources, unable to calculate number of matches",
    0xA702: "Refused: out of resources, unable to perform sub-operations",
    0xA801: "Refused: move destination unknown",
    0xAA00: "Failed: none of the frames requested were found in the SOP instance",
    0xAA01: "Failed: unable to create new object for this SOP class",
    0xAA02: "Failed: unable to extract frames",
    0xAA03: "Failed: time-based request received for a non-time-based original SOP instance",
    0xAA04: "Failed: invalid request",
    0xB000: (
        "Warning: coercion of data elements (C-STORE) or sub-operations complete with one or "
        "more failures or warnings (C-MOVE, C-GET)"
    ),
    0xB006: "Warning: elements discarded",
    0xB007: "Warning: data set does not match SOP class",
    0xFE00: "Cancel: sub-operations terminated",
    0xFF00: "Pending",
    0xFF01: "Pending: matches are continuing, one or more optional keys were not supported",
}

# Ranges: (mask, value, meaning). A code matches when ``code & mask == value``.
_Ranges = tuple[tuple[int, int, str], ...]

_GENERAL_RANGES: _Ranges = (
    (0xFF00, 0xA700, "Refused: out of resources"),
    (0xFF00, 0xA900, "Error: data set does not match SOP class"),
    (0xF000, 0xC000, "Failed: unable to process"),
)

_QR_RANGES: _Ranges = (
    (0xFF00, 0xA700, "Refused: out of resources"),
    (0xFF00, 0xA900, "Error: identifier does not match SOP class"),
    (0xF000, 0xC000, "Failed: unable to process"),
)

_RETRIEVE: dict[int, str] = {
    0x0000: "Success: sub-operations complete, no failures or warnings",
    0xA701: "Refused: out of resources, unable to calculate number of matches",
    0xA702: "Refused: out of resources, unable to perform sub-operations",
    0xB000: "Warning: sub-operations complete, one or more failures or warnings",
    0xFE00: "Cancel: sub-operations terminated",
    0xFF00: "Pending: sub-operations are continuing",
}

# PS3.4 Annex A (Verification), B.2.3 (Storage), C.4.1-C.4.3 (Query/Retrieve).
_SERVICE: dict[str, tuple[dict[int, str], _Ranges]] = {
    "echo": ({}, ()),
    "store": (
        {
            0xB000: "Warning: coercion of data elements",
            0xB006: "Warning: elements discarded",
            0xB007: "Warning: data set does not match SOP class",
        },
        (
            (0xFF00, 0xA700, "Refused: out of resources"),
            (0xFF00, 0xA900, "Error: data set does not match SOP class"),
            (0xF000, 0xC000, "Error: cannot understand"),
        ),
    ),
    "find": (
        {
            0x0000: "Success: matching is complete",
            0xFE00: "Cancel: matching terminated due to cancel request",
            0xFF00: "Pending: matches are continuing",
            0xFF01: (
                "Pending: matches are continuing, one or more optional keys were not supported"
            ),
        },
        _QR_RANGES,
    ),
    "move": (_RETRIEVE, _QR_RANGES),
    "get": (_RETRIEVE, _QR_RANGES),
}


def _normalize_service(service: str) -> str:
    name = service.lower()
    if name.startswith("c-"):
        name = name[2:]
    if name not in _SERVICE:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    return name


def _lookup(
    code: int, table: dict[int, str], ranges: tuple[tuple[int, int, str], ...]
) -> str | None:
    meaning = table.get(code)
    if meaning is not None:
        return meaning
    for mask, value, text in ranges:
        if code & mask == value:
            return text
    return None


def status_meaning(code: int, service: str | None = None) -> str:
    """Words for a status code, e.g. ``"Refused: move destination unknown"`` for 0xA801.

    ``service`` is one of :data:`SERVICES`; the answer then follows that service's table in PS3.4
    before the general statuses of PS3.7. Unknown codes give ``"unknown <category> status"``.
    """
    if service is not None:
        table, ranges = _SERVICE[_normalize_service(service)]
        meaning = _lookup(code, table, ranges)
        if meaning is not None:
            return meaning
    meaning = _lookup(code, _GENERAL, _GENERAL_RANGES)
    if meaning is not None:
        return meaning
    return f"unknown {status_category(code).value} status"


def describe_status(code: int, service: str | None = None) -> str:
    """``"0xA801 (Refused: move destination unknown)"``: for logs and error messages."""
    return f"0x{code:04X} ({status_meaning(code, service)})"
