"""The PDU data model (PS3.8 section 9.3): PDUs, items and sub-items as values, and words for the
numbers in rejections and aborts. :mod:`aiodicom.pdu` encodes and decodes them.
"""

from __future__ import annotations

import attrs

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 Table 9-11 and following)
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

PDU_HEADER_LENGTH = 6

# Presentation context results (PS3.8 Table 9-18)
ACCEPTANCE = 0
USER_REJECTION = 1
NO_REASON = 2
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAX_NOT_SUPPORTED = 4

CONTEXT_RESULT_TEXT = {
    ACCEPTANCE: "acceptance",
    USER_REJECTION: "user rejection",
    NO_REASON: "no reason (provider rejection)",
    ABSTRACT_SYNTAX_NOT_SUPPORTED: "abstract syntax not supported (provider rejection)",
    TRANSFER_SYNTAX_NOT_SUPPORTED: "transfer syntaxes not supported (provider rejection)",
}


# --- user information sub-items -------------------------------------------------------------


@attrs.frozen
class AsyncOperationsWindow:
    """Sub-item 0x53. Zero means unlimited."""

    max_operations_invoked: int
    max_operations_performed: int


@attrs.frozen
class RoleSelection:
    """Sub-item 0x54: which side may act as SCU and SCP for one SOP class."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@attrs.frozen
class SOPClassExtendedNegotiation:
    """Sub-item 0x56: service-class specific application information for one SOP class."""

    sop_class_uid: str
    application_information: bytes


@attrs.frozen
class SOPClassCommonExtendedNegotiation:
    """Sub-item 0x57 (only sent in A-ASSOCIATE-RQ)."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_class_uids: tuple[str, ...] = ()


@attrs.frozen
class UserIdentityRQ:
    """Sub-item 0x58.

    ``identity_type``: 1 username, 2 username+passcode, 3 Kerberos, 4 SAML, 5 JWT.
    """

    identity_type: int
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes = b""


@attrs.frozen
class UserIdentityAC:
    """Sub-item 0x59."""

    server_response: bytes


@attrs.frozen
class UnknownSubItem:
    """A user information sub-item this codec does not know: kept, re-encoded as it came."""

    item_type: int
    data: bytes


@attrs.frozen
class UserInformation:
    """Item 0x50. ``max_pdu_length`` 0 means no limit; ``None`` means the sub-item is absent."""

    max_pdu_length: int | None = None
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    async_operations_window: AsyncOperationsWindow | None = None
    role_selections: tuple[RoleSelection, ...] = ()
    sop_class_extended: tuple[SOPClassExtendedNegotiation, ...] = ()
    sop_class_common_extended: tuple[SOPClassCommonExtendedNegotiation, ...] = ()
    user_identity_rq: UserIdentityRQ | None = None
    user_identity_ac: UserIdentityAC | None = None
    unknown_items: tuple[UnknownSubItem, ...] = ()


# --- presentation contexts --------------------------------------------------------------------


@attrs.frozen
class PresentationContextRQ:
    """Item 0x20: one abstract syntax offered with one or more transfer syntaxes."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@attrs.frozen
class PresentationContextAC:
    """Item 0x21. ``transfer_syntax`` is meaningful only when ``result`` is 0 (acceptance)."""

    context_id: int
    result: int
    transfer_syntax: str | None = None


# --- PDUs ---------------------------------------------------------------------------------------


@attrs.frozen
class AssociateRQ:
    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextRQ, ...]
    user_information: UserInformation = UserInformation()
    application_context_name: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = 1


@attrs.frozen
class AssociateAC:
    """The AE titles are echoed from the request (PS3.8 says "shall not be tested")."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextAC, ...]
    user_information: UserInformation = UserInformation()
    application_context_name: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = 1


@attrs.frozen
class AssociateRJ:
    """``result``: 1 permanent, 2 transient. ``source``: 1 user, 2 ACSE provider, 3 presentation."""

    result: int
    source: int
    reason: int


@attrs.frozen
class PresentationDataValue:
    """One PDV: a fragment of a command (``is_command``) or data set.

    ``is_last`` marks the last fragment of the message.
    """

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes | memoryview = attrs.field(eq=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PresentationDataValue):
            return NotImplemented
        return (
            self.context_id == other.context_id
            and self.is_command == other.is_command
            and self.is_last == other.is_last
            and bytes(self.data) == bytes(other.data)
        )

    def __hash__(self) -> int:
        return hash((self.context_id, self.is_command, self.is_last, bytes(self.data)))


@attrs.frozen
class PDataTF:
    pdvs: tuple[PresentationDataValue, ...]


@attrs.frozen
class AReleaseRQ:
    pass


@attrs.frozen
class AReleaseRP:
    pass


@attrs.frozen
class AAbort:
    """``source``: 0 service user, 2 service provider. ``reason`` only means something for 2."""

    source: int = 0
    reason: int = 0


PDU = AssociateRQ | AssociateAC | AssociateRJ | PDataTF | AReleaseRQ | AReleaseRP | AAbort


# --- words for numbers ----------------------------------------------------------------------------

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
