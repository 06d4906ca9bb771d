"""Readable dumps of what goes over an association, for DEBUG logs (the CLI's ``-d``).

Two loggers, both at DEBUG only:

- ``aiodicom.pdu``: the association PDUs, one block each: A-ASSOCIATE-RQ/AC/RJ in full (AE
  titles, presentation contexts with their syntaxes by name and results, maximum PDU length,
  implementation class and version, role selections, extended negotiation, the User Identity
  type, never its passcode or token), A-RELEASE-RQ/RP, A-ABORT with its source and reason.
  P-DATA-TF PDUs are not dumped one by one: what they carry is.
- ``aiodicom.dimse``: every DIMSE message sent and received, one block each: command, Message ID
  (or the one it responds to), SOP classes by name, status with its meaning, sub-operation
  counts, and whether a data set follows and its size (never the data set itself).

:class:`~aiodicom.association.Association` decides once, when it is created, whether either
logger is enabled; when neither is, nothing here runs. Pure formatting: no I/O of its own.
"""

from __future__ import annotations

import logging
import re

from aiodicom.dimse import (
    C_ECHO_RQ,
    C_FIND_RQ,
    C_GET_RQ,
    C_MOVE_RQ,
    C_STORE_RQ,
    DimseMessage,
)
from aiodicom.pdu import (
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    UserInformation,
    describe_abort,
    describe_rejection,
)
from aiodicom.pdu_types import CONTEXT_RESULT_TEXT
from aiodicom.status import describe_status
from aiodicom.uids import uid_name

__all__ = [
    "DIMSE_LOG",
    "PDU_LOG",
    "dump_abort",
    "dump_associate_ac",
    "dump_associate_rj",
    "dump_associate_rq",
    "dump_message",
    "dump_release",
]

PDU_LOG = logging.getLogger("aiodicom.pdu")
DIMSE_LOG = logging.getLogger("aiodicom.dimse")

_WELL_FORMED_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_PRIORITY = {0: "medium", 1: "high", 2: "low"}
_SERVICE = {C_ECHO_RQ: "echo", C_STORE_RQ: "store", C_FIND_RQ: "find", C_MOVE_RQ: "move",
            C_GET_RQ: "get"}
_IDENTITY_TYPE = {1: "username", 2: "username and passcode", 3: "Kerberos service ticket",
                  4: "SAML assertion", 5: "JSON web token"}
_SUB_OPERATIONS = (
    ("NumberOfRemainingSuboperations", "remaining"),
    ("NumberOfCompletedSuboperations", "completed"),
    ("NumberOfFailedSuboperations", "failed"),
    ("NumberOfWarningSuboperations", "warning"),
)


def _block(direction: str, title: str, lines: list[str]) -> str:
    # One log record per PDU or message: a header line, indented fields, an end line, as
    # DCMTK's -d prints them, so that interleaved associations stay readable.
    head = f"===== {direction} {title} ====="
    return "\n".join([head, *(f"  {line}" for line in lines), f"===== END {title} ====="])


def _field(label: str, value: object) -> str:
    return f"{label + ':':<32}{value}".rstrip()


def _direction(sent: bool) -> str:
    return "OUTGOING" if sent else "INCOMING"


def _well_formed(uid: str) -> bool:
    # A peer's malformed UID is shown as it came (quoted), never looked up: pydicom warns about
    # every malformed UID it is handed, and a dump must add no noise of its own.
    return len(uid) <= 64 and _WELL_FORMED_UID.fullmatch(uid) is not None


def _name(uid: str) -> str:
    return uid_name(uid) if _well_formed(uid) else repr(uid)


def _syntax(uid: str) -> str:
    if not _well_formed(uid):
        return repr(uid)
    name = uid_name(uid)
    return uid if name == uid else f"{name} ({uid})"


def _flag(value: bool) -> str:
    return "yes" if value else "no"


def _user_information(info: UserInformation) -> list[str]:
    limit = info.max_pdu_length
    lines = [
        _field("Maximum PDU length", "none announced" if limit is None
               else "no limit" if limit == 0 else limit),
        _field("Implementation class UID", info.implementation_class_uid or "(none)"),
        _field("Implementation version name", info.implementation_version_name or "(none)"),
    ]
    window = info.async_operations_window
    if window is not None:
        lines.append(_field("Asynchronous operations",
                            f"invoked {window.max_operations_invoked}, performed "
                            f"{window.max_operations_performed} (0: unlimited)"))
    lines.append(_field("SCP/SCU role selections", "" if info.role_selections else "none"))
    lines.extend(f"  {_name(role.sop_class_uid)}: SCU {_flag(role.scu_role)}, "
                 f"SCP {_flag(role.scp_role)}" for role in info.role_selections)
    lines.append(_field("Extended negotiation", "" if info.sop_class_extended else "none"))
    lines.extend(f"  {_name(item.sop_class_uid)}: {item.application_information.hex(' ')}"
                 for item in info.sop_class_extended)
    for common in info.sop_class_common_extended:
        related = ", ".join(_name(uid) for uid in common.related_general_sop_class_uids)
        lines.append(_field("Common extended negotiation",
                            f"{_name(common.sop_class_uid)} in "
                            f"{_name(common.service_class_uid)}"
                            + (f", related: {related}" if related else "")))
    identity = info.user_identity_rq
    if identity is not None:
        kind = _IDENTITY_TYPE.get(identity.identity_type, f"type {identity.identity_type}")
        # Only a username is shown; passcodes, tickets, assertions and tokens are secrets.
        shown = (f", user {identity.primary_field.decode('utf-8', 'replace')!r}"
                 if identity.identity_type in (1, 2)
                 else f", {len(identity.primary_field)} bytes (not shown)")
        asked = "requested" if identity.positive_response_requested else "not requested"
        lines.append(_field("User identity", f"{kind}{shown}, positive response {asked}"))
    if info.user_identity_ac is not None:
        lines.append(_field("User identity response",
                            f"{len(info.user_identity_ac.server_response)} bytes (not shown)"))
    lines.extend(_field(f"Unknown sub-item 0x{item.item_type:02X}", f"{len(item.data)} bytes")
                 for item in info.unknown_items)
    return lines


def dump_associate_rq(rq: AssociateRQ, *, sent: bool) -> str:
    lines = [
        _field("Calling AE title", rq.calling_ae_title),
        _field("Called AE title", rq.called_ae_title),
        _field("Application context", _syntax(rq.application_context_name)),
        _field("Protocol version", rq.protocol_version),
        *_user_information(rq.user_information),
        "Presentation contexts:",
    ]
    for context in rq.presentation_contexts:
        lines.append(f"  Context ID {context.context_id}: {_syntax(context.abstract_syntax)}")
        lines.extend(f"    proposed: {_syntax(ts)}" for ts in context.transfer_syntaxes)
    return _block(_direction(sent), "A-ASSOCIATE-RQ", lines)


def dump_associate_ac(ac: AssociateAC, rq: AssociateRQ | None, *, sent: bool) -> str:
    proposed = {} if rq is None else {c.context_id: c for c in rq.presentation_contexts}
    lines = [
        _field("Calling AE title", ac.calling_ae_title),
        _field("Called AE title", ac.called_ae_title),
        _field("Application context", _syntax(ac.application_context_name)),
        *_user_information(ac.user_information),
        "Presentation contexts:",
    ]
    for context in ac.presentation_contexts:
        asked = proposed.get(context.context_id)
        abstract = "(not proposed)" if asked is None else _syntax(asked.abstract_syntax)
        result = CONTEXT_RESULT_TEXT.get(context.result, f"result {context.result}")
        lines.append(f"  Context ID {context.context_id}: {abstract}")
        if context.result == 0 and context.transfer_syntax is not None:
            lines.append(f"    accepted: {_syntax(context.transfer_syntax)}")
        else:
            lines.append(f"    {result}")
    return _block(_direction(sent), "A-ASSOCIATE-AC", lines)


def dump_associate_rj(rj: AssociateRJ, *, sent: bool) -> str:
    lines = [f"Result {rj.result}, source {rj.source}, reason {rj.reason}: "
             f"{describe_rejection(rj.result, rj.source, rj.reason)}"]
    return _block(_direction(sent), "A-ASSOCIATE-RJ", lines)


def dump_release(kind: str, *, sent: bool) -> str:
    """``kind``: ``"RQ"`` or ``"RP"``."""
    return _block(_direction(sent), f"A-RELEASE-{kind}", [])


def dump_abort(source: int, reason: int, *, sent: bool, detail: str = "") -> str:
    lines = [f"Source {source}, reason {reason}: {describe_abort(source, reason)}"]
    if detail:
        lines.append(f"Why: {detail}")
    return _block(_direction(sent), "A-ABORT", lines)


def dump_message(message: DimseMessage, *, sent: bool) -> str:
    command = message.command
    field = command.get("CommandField")
    service = _SERVICE.get(field & 0x7FFF) if isinstance(field, int) else None
    lines = [_field("Presentation context ID", message.context_id)]

    def add(label: str, value: object) -> None:
        lines.append(_field(label, value))

    for keyword, label in (("MessageID", "Message ID"),
                           ("MessageIDBeingRespondedTo", "Message ID being responded to")):
        if keyword in command:
            add(label, command[keyword])
    for keyword, label in (("AffectedSOPClassUID", "Affected SOP class"),
                           ("RequestedSOPClassUID", "Requested SOP class")):
        value = command.get(keyword)
        if isinstance(value, str):
            add(label, _syntax(value))
    for keyword, label in (("AffectedSOPInstanceUID", "Affected SOP instance"),
                           ("RequestedSOPInstanceUID", "Requested SOP instance"),
                           ("MoveDestination", "Move destination"),
                           ("MoveOriginatorApplicationEntityTitle", "Move originator AE title"),
                           ("MoveOriginatorMessageID", "Move originator message ID"),
                           ("EventTypeID", "Event type ID"),
                           ("ActionTypeID", "Action type ID")):
        if keyword in command:
            add(label, command[keyword])
    priority = command.get("Priority")
    if isinstance(priority, int):
        add("Priority", _PRIORITY.get(priority, priority))
    status = command.get("Status")
    if isinstance(status, int):
        add("Status", describe_status(status, service))
    for keyword, label in (("ErrorComment", "Error comment"), ("ErrorID", "Error ID")):
        if keyword in command:
            add(label, command[keyword])
    offending = command.get("OffendingElement")
    if isinstance(offending, list):
        add("Offending element", ", ".join(f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
                                           for tag in offending))
    counts = [f"{word} {command[keyword]}" for keyword, word in _SUB_OPERATIONS
              if keyword in command]
    if counts:
        add("Sub-operations", ", ".join(counts))
    if not message.has_dataset:
        add("Data set", "none")
    elif message.data is None:
        add("Data set", "present")
    else:
        # A data set written to a file as it arrived is left there: its writer knows the size.
        writer = message.writer
        if getattr(writer, "deferred", False):
            size = getattr(writer, "size", 0)
        else:
            size = memoryview(message.data).nbytes
        add("Data set", f"present, {size} bytes")
    return _block(_direction(sent), f"{message.name} (DIMSE)", lines)
