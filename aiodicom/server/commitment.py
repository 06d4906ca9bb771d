"""The embedded Q/R SCP as Storage Commitment SCP (PS3.4 J.3, Push Model).

An N-ACTION-RQ (Request Storage Commitment) is answered at once; then the report is built from
the index: an instance it holds (with that SOP class) is committed, any other fails with 0x0112
"no such object instance" (0x0119 "class/instance conflict" when the index holds it under
another SOP class). A hook may fail more (tests: to see failures reported).

The report (N-EVENT-REPORT-RQ) goes, as :class:`CommitmentOptions` says, on the request's
association right after the N-ACTION-RSP, or on a new association to the requestor, at the
address the server knows for its AE title (its C-MOVE destinations: one table of AEs, as DCMTK
and Orthanc keep). On a new association the server proposes the SCP role for Storage
Commitment (PS3.4 J.3.3): the requestor stays the SCU receiving the report. When the requestor
released the association before the report could go on it, the report goes on a new one if the
address is known; a report that cannot be delivered at all is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import anyio.abc
import attrs

from aiodicom.acceptor import IncomingOperation
from aiodicom.dimse import N_ACTION_RSP, NO_DATASET, DimseMessage
from aiodicom.errors import DicomError, DimseError
from aiodicom.negotiation import ContextProposal
from aiodicom.server.operations import QRContext, association_request
from aiodicom.services.commitment import read_action_request, send_event_report
from aiodicom.services.commitment_registry import (
    ACTION_REQUEST_COMMITMENT,
    CommitmentReport,
    FailedInstance,
    FailureReason,
    ReferencedInstance,
)
from aiodicom.session import open_session
from aiodicom.status import Status, describe_status
from aiodicom.uids import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
)

log = logging.getLogger("aiodicom.qrscp")

__all__ = [
    "CommitmentOptions",
    "FailureHook",
    "ReportOn",
    "ReportTasks",
    "build_report",
    "serve_commitment",
]

ReportOn = Literal["same-association", "new-association"]

FailureHook = Callable[[ReferencedInstance], "int | None"]
"""Given an instance asked to be committed, a failure reason to report it with (a
:class:`~aiodicom.services.commitment.FailureReason` value), or ``None`` to decide by the index."""


@attrs.define
class CommitmentOptions:
    """How the embedded SCP answers storage commitment requests (changes apply to the next)."""

    #: Where the report goes: on the request's association, or on a new one to the requestor
    #: (whose AE title must be among the server's move destinations; else on the same one).
    report_on: ReportOn = "same-association"
    #: Fails chosen instances whatever the index holds (see :data:`FailureHook`).
    failure_reason: FailureHook | None = None
    #: Reports being sent on associations of their own at once; beyond that a report goes on
    #: the request's association (bounded like every other table).
    max_background_reports: int = 16


def build_report(
    qr: QRContext, transaction_uid: str, requested: tuple[ReferencedInstance, ...],
    options: CommitmentOptions,
) -> CommitmentReport:
    """The report for a request: each instance committed if the index holds it."""
    committed: list[ReferencedInstance] = []
    failed: list[FailedInstance] = []
    for ref in requested:
        reason = options.failure_reason(ref) if options.failure_reason is not None else None
        if reason is None:
            stored = qr.index.get(ref.sop_instance_uid)
            if stored is None:
                reason = FailureReason.NO_SUCH_OBJECT_INSTANCE
            elif stored.sop_class_uid != ref.sop_class_uid:
                reason = FailureReason.CLASS_INSTANCE_CONFLICT
        if reason is None:
            committed.append(ref)
        else:
            failed.append(FailedInstance(ref.sop_class_uid, ref.sop_instance_uid, int(reason)))
    return CommitmentReport(transaction_uid, tuple(committed), tuple(failed), qr.ae_title)


def _action_response(
    op: IncomingOperation, status: int, comment: str | None = None
) -> DimseMessage:
    return DimseMessage(
        op.message.context_id,
        {
            "CommandField": N_ACTION_RSP,
            "MessageIDBeingRespondedTo": op.message.message_id,
            "AffectedSOPClassUID": STORAGE_COMMITMENT_PUSH_MODEL,
            "AffectedSOPInstanceUID": STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
            "ActionTypeID": op.message.command.get("ActionTypeID"),
            "CommandDataSetType": NO_DATASET,
            "Status": status,
            "ErrorComment": comment[:64] if comment else None,
        },
        None,
    )


def _refusal(command: dict[str, object], context_class: str) -> tuple[int, str] | None:
    if context_class != STORAGE_COMMITMENT_PUSH_MODEL or \
            command.get("RequestedSOPClassUID") != STORAGE_COMMITMENT_PUSH_MODEL:
        return Status.NO_SUCH_SOP_CLASS, "only Storage Commitment Push Model is served"
    if command.get("RequestedSOPInstanceUID") != STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE:
        return Status.NO_SUCH_SOP_INSTANCE, "not the well-known instance 1.2.840.10008.1.20.1.1"
    if command.get("ActionTypeID") != ACTION_REQUEST_COMMITMENT:
        return Status.NO_SUCH_ACTION, "only Action Type 1 (request storage commitment)"
    return None


class ReportTasks:
    """Reports on associations of their own, running on the server's task group."""

    def __init__(self) -> None:
        self.tasks: anyio.abc.TaskGroup | None = None
        self.running = 0


async def serve_commitment(
    op: IncomingOperation, qr: QRContext, options: CommitmentOptions, reports: ReportTasks
) -> None:
    """Answer an N-ACTION-RQ (Request Storage Commitment), then report."""
    refusal = _refusal(op.message.command, op.context.abstract_syntax)
    if refusal is None:
        try:
            transaction_uid, requested = read_action_request(op.message, op.context)
        except DimseError as exc:
            refusal = Status.INVALID_ARGUMENT_VALUE, str(exc)
    if refusal is not None:
        status, comment = refusal
        log.info("N-ACTION from %s refused (0x%04X): %s", op.calling_ae_title, status, comment)
        await op.association.send_message(_action_response(op, status, comment))
        return
    await op.association.send_message(_action_response(op, Status.SUCCESS))
    report = build_report(qr, transaction_uid, requested, options)
    address = qr.move_destinations.get(op.calling_ae_title)
    if options.report_on == "new-association":
        if address is not None and _start_report(qr, op.calling_ae_title, address, report,
                                                 reports, options):
            return
        log.warning("storage commitment %s: reporting to %s on the request's association (%s)",
                    transaction_uid, op.calling_ae_title,
                    "its address is unknown: add it to the move destinations"
                    if address is None else "too many reports under way")
    try:
        status = await send_event_report(op, report)
    except DicomError as exc:
        if address is not None and _start_report(qr, op.calling_ae_title, address, report,
                                                 reports, options):
            log.info("storage commitment %s: the request's association ended (%s); "
                     "reporting on a new one", transaction_uid, exc)
            return
        log.warning("storage commitment %s: report to %s lost: %s", transaction_uid,
                    op.calling_ae_title, exc)
        return
    _log_answer(transaction_uid, op.calling_ae_title, status)


def _log_answer(transaction_uid: str, ae_title: str, status: int) -> None:
    if status == Status.SUCCESS:
        log.info("storage commitment %s reported to %s", transaction_uid, ae_title)
    else:
        log.warning("storage commitment %s: %s answered the report with %s", transaction_uid,
                    ae_title, describe_status(status))


def _start_report(
    qr: QRContext, ae_title: str, address: tuple[str, int], report: CommitmentReport,
    reports: ReportTasks, options: CommitmentOptions,
) -> bool:
    if reports.tasks is None or reports.running >= options.max_background_reports:
        return False
    reports.running += 1
    reports.tasks.start_soon(_report_on_new_association, qr, ae_title, address, report, reports)
    return True


async def _report_on_new_association(
    qr: QRContext, ae_title: str, address: tuple[str, int], report: CommitmentReport,
    reports: ReportTasks,
) -> None:
    proposal = ContextProposal(
        STORAGE_COMMITMENT_PUSH_MODEL, UNCOMPRESSED_TRANSFER_SYNTAXES, scu_role=False,
        scp_role=True,
    )
    rq = association_request(qr, ae_title, [proposal])
    try:
        async with open_session(
            address[0], address[1], rq, timeouts=qr.timeouts, max_pdu_length=qr.max_pdu_length,
        ) as session:
            status = await send_event_report(session, report)
        _log_answer(report.transaction_uid, ae_title, status)
    except DicomError as exc:
        log.warning("storage commitment %s: report to %s at %s:%d failed: %s",
                    report.transaction_uid, ae_title, address[0], address[1], exc)
    finally:
        reports.running -= 1
