"""Storage Commitment Push Model (PS3.4 Annex J): asking a peer to take responsibility for
instances, and receiving its answer, wherever it arrives.

The SCU sends an N-ACTION-RQ (Action Type 1) naming a Transaction UID and the instances; the SCP
answers the N-ACTION at once and reports later with an N-EVENT-REPORT-RQ (Event Type 1: all
committed, 2: some failed) for that Transaction UID, either on the same association or on a new
association it opens to the SCU (PS3.4 J.3.3). Both paths end in one
:class:`CommitmentRegistry`, which keeps the pending transactions by Transaction UID (bounded,
with an expiry) the way :mod:`aiodicom.routing` keeps the running C-MOVEs: whoever waits for a
transaction wakes up whichever association carried its report. A report that nobody waits for
any more (the caller timed out) is kept until its transaction expires, so it can be awaited
again.

The SCP side's pieces are here too (reading an N-ACTION, writing and sending a report); the
embedded Q/R SCP decides what to report (:mod:`aiodicom.server.commitment`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio
import attrs
from pydicom.dataset import Dataset

from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.dimse import (
    N_ACTION_RQ,
    N_ACTION_RSP,
    N_EVENT_REPORT_RQ,
    N_EVENT_REPORT_RSP,
    NO_DATASET,
    DimseMessage,
)
from aiodicom.dispatcher import RequestHandler
from aiodicom.errors import AssociationAborted, DicomError, DimseError, StatusError
from aiodicom.instance import Instance
from aiodicom.negotiation import PresentationContext
from aiodicom.services.channel import ServiceChannel
from aiodicom.services.commitment_registry import (
    ACTION_REQUEST_COMMITMENT,
    EVENT_ALL_COMMITTED,
    EVENT_FAILURES_EXIST,
    CommitmentRegistry,
    CommitmentReport,
    CommitmentResult,
    FailedInstance,
    PendingCommitment,
    ReferencedInstance,
    new_transaction_uid,
    reference_item,
)
from aiodicom.services.storage_scp import unrecognized_response
from aiodicom.services.store import StoreOutcome, StoreResult
from aiodicom.status import Status, StatusCategory, status_category, status_meaning
from aiodicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE

log = logging.getLogger("aiodicom.commitment")

__all__ = [
    "UNKNOWN_TRANSACTION_STATUS",
    "CommitItem",
    "CommitItems",
    "StoredAndCommitted",
    "answer_event_report",
    "commitment_handler",
    "hold_for_report",
    "read_action_request",
    "read_report",
    "references",
    "request_commitment",
    "send_event_report",
]

UNKNOWN_TRANSACTION_STATUS = Status.INVALID_ARGUMENT_VALUE
"""The N-EVENT-REPORT-RSP status for a report whose Transaction UID we never issued (or whose
transaction expired): 0x0115 "invalid argument value", which PS3.7 (10.1.1.1.8) gives for event
information whose value is out of range or otherwise inappropriate. The Transaction UID is
event information; the other statuses of the list do not fit: 0x0110 (processing failure) would
tell the SCP to retry a report that can never succeed, 0x0112 concerns the Affected SOP Instance
(the well-known instance, which is right), 0x0113 the Event Type ID."""

_TRANSACTION_UID = "TransactionUID"
_MAX_REFERENCES = 65_535
"""Instances in one report or request we read: a sequence item per instance, bounded."""


@attrs.frozen
class StoredAndCommitted:
    """What :meth:`~aiodicom.Peer.store_and_commit` did: the C-STOREs, and the commitment
    asked for the instances stored (``None`` when none was)."""

    stored: StoreResult
    commitment: CommitmentResult | None

    @property
    def ok(self) -> bool:
        """Every object was stored and committed."""
        return self.stored.ok and self.commitment is not None and self.commitment.ok


CommitItem = ReferencedInstance | StoreOutcome | Instance | Dataset | tuple[str, str]
"""An instance to commit: a :class:`ReferencedInstance`, the outcome of its C-STORE, an
:class:`~aiodicom.Instance`, a pydicom Dataset, or ``(sop_class_uid, sop_instance_uid)``."""

CommitItems = Iterable[CommitItem]


def references(items: CommitItems) -> list[ReferencedInstance]:
    """The SOP class and instance of each item, in order, without duplicates."""
    seen: dict[str, ReferencedInstance] = {}
    for item in items:
        if isinstance(item, ReferencedInstance):
            ref = item
        elif isinstance(item, (StoreOutcome, Instance)):
            ref = ReferencedInstance(item.sop_class_uid, item.sop_instance_uid)
        elif isinstance(item, Dataset):
            ref = ReferencedInstance(_uid(item, "SOPClassUID"), _uid(item, "SOPInstanceUID"))
        elif isinstance(item, tuple) and len(item) == 2:
            ref = ReferencedInstance(str(item[0]), str(item[1]))
        else:
            raise TypeError(
                f"cannot commit a {type(item).__name__}: give ReferencedInstance, StoreOutcome, "
                "Instance, Dataset or (sop_class_uid, sop_instance_uid)"
            )
        if not ref.sop_class_uid or not ref.sop_instance_uid:
            raise ValueError(f"{item!r} lacks a SOP Class UID or SOP Instance UID")
        seen.setdefault(ref.sop_instance_uid, ref)
    return list(seen.values())


# --- data sets ------------------------------------------------------------------------------------


def _references(ds: Dataset, keyword: str) -> list[Dataset]:
    items = ds.get(keyword)
    if items is None:
        return []
    if len(items) > _MAX_REFERENCES:
        raise DimseError(f"{keyword} has {len(items)} items; at most {_MAX_REFERENCES} are read")
    return list(items)


def _uid(item: Dataset, keyword: str) -> str:
    return str(item.get(keyword, "") or "")


def _decode(message: DimseMessage, context: PresentationContext) -> Dataset:
    if message.data is None or context.transfer_syntax is None:
        raise DimseError(f"{message.name} without a data set")
    try:
        ds = decode_dataset(message.data, context.transfer_syntax)
        for _ in ds:  # pydicom decodes lazily: fail here, not while reading the values
            pass
    except DicomError:
        raise
    except Exception as exc:  # pydicom raises many kinds of error on malformed data
        raise DimseError(f"the {message.name} data set does not decode: {exc}") from exc
    return ds


def read_report(message: DimseMessage, context: PresentationContext) -> CommitmentReport:
    """The report an N-EVENT-REPORT-RQ carries; :class:`DimseError` when it has none."""
    ds = _decode(message, context)
    transaction_uid = _uid(ds, _TRANSACTION_UID)
    if not transaction_uid:
        raise DimseError("the report has no Transaction UID (0008,1195)")
    committed = tuple(
        ReferencedInstance(_uid(i, "ReferencedSOPClassUID"), _uid(i, "ReferencedSOPInstanceUID"))
        for i in _references(ds, "ReferencedSOPSequence")
    )
    failed = []
    for item in _references(ds, "FailedSOPSequence"):
        reason = item.get("FailureReason")
        failed.append(FailedInstance(
            _uid(item, "ReferencedSOPClassUID"), _uid(item, "ReferencedSOPInstanceUID"),
            int(reason) if reason is not None and str(reason) != "" else None,
        ))
    retrieve = ds.get("RetrieveAETitle")
    return CommitmentReport(
        transaction_uid, committed, tuple(failed),
        str(retrieve).strip() if retrieve else None,
    )


def read_action_request(
    message: DimseMessage, context: PresentationContext
) -> tuple[str, tuple[ReferencedInstance, ...]]:
    """The Transaction UID and the instances of an N-ACTION-RQ (Request Storage Commitment);
    :class:`DimseError` when they cannot be read."""
    ds = _decode(message, context)
    transaction_uid = _uid(ds, _TRANSACTION_UID)
    if not transaction_uid:
        raise DimseError("the request has no Transaction UID (0008,1195)")
    return transaction_uid, tuple(
        ReferencedInstance(_uid(i, "ReferencedSOPClassUID"), _uid(i, "ReferencedSOPInstanceUID"))
        for i in _references(ds, "ReferencedSOPSequence")
    )


# --- SCU ------------------------------------------------------------------------------------------


def _report_response(request: DimseMessage, status: int) -> DimseMessage:
    return DimseMessage(
        request.context_id,
        {
            "CommandField": N_EVENT_REPORT_RSP,
            "MessageIDBeingRespondedTo": request.message_id,
            "AffectedSOPClassUID": request.command.get("AffectedSOPClassUID"),
            "AffectedSOPInstanceUID": request.command.get("AffectedSOPInstanceUID"),
            "EventTypeID": request.command.get("EventTypeID"),
            "CommandDataSetType": NO_DATASET,
            "Status": status,
        },
        None,
    )


def answer_event_report(
    request: DimseMessage, context: PresentationContext | None, reporter_ae_title: str,
    registry: CommitmentRegistry, *, same_association: bool,
) -> DimseMessage:
    """Receive an N-EVENT-REPORT-RQ of Storage Commitment: its N-EVENT-REPORT-RSP. What cannot
    be taken is answered with a failure status and logged, never raised."""
    sop_class = request.command.get("AffectedSOPClassUID")
    if context is None or not context.accepted:
        return _report_response(request, Status.SOP_CLASS_NOT_SUPPORTED)
    if sop_class != STORAGE_COMMITMENT_PUSH_MODEL:
        log.warning("refused an N-EVENT-REPORT of %s from %s: only Storage Commitment reports "
                    "are taken", sop_class, reporter_ae_title)
        return _report_response(request, Status.NO_SUCH_SOP_CLASS)
    event_type = request.command.get("EventTypeID")
    if event_type not in (EVENT_ALL_COMMITTED, EVENT_FAILURES_EXIST):
        log.warning("refused a storage commitment report from %s: Event Type ID %s is neither "
                    "1 nor 2", reporter_ae_title, event_type)
        return _report_response(request, Status.NO_SUCH_EVENT_TYPE)
    try:
        report = read_report(request, context)
    except DimseError as exc:
        log.warning("refused a storage commitment report from %s: %s", reporter_ae_title, exc)
        status = Status.INVALID_ARGUMENT_VALUE if "Transaction UID" in str(exc) \
            else Status.PROCESSING_FAILURE
        return _report_response(request, status)
    result = registry.report(report, reporter_ae_title, same_association=same_association)
    if result is None:
        log.warning(
            "refused a storage commitment report from %s for transaction %s: no such "
            "transaction is pending here (never requested, already reported and taken, or "
            "expired)", reporter_ae_title, report.transaction_uid,
        )
        return _report_response(request, UNKNOWN_TRANSACTION_STATUS)
    log.info("storage commitment transaction %s reported by %s: %d committed, %d failed",
             result.transaction_uid, reporter_ae_title, len(result.committed), len(result.failed))
    return _report_response(request, Status.SUCCESS)


def commitment_handler(
    channel: ServiceChannel, registry: CommitmentRegistry, reporter_ae_title: str,
    fallback: RequestHandler | None = None,
) -> RequestHandler:
    """A request handler for an association we requested: answers the N-EVENT-REPORTs an SCP
    sends on it, hands other requests to ``fallback`` (refused as unrecognized without one)."""
    association = channel.association

    async def handle(request: DimseMessage) -> None:
        if request.command_field == N_EVENT_REPORT_RQ:
            context = association.contexts.get(request.context_id)
            await association.send_message(answer_event_report(
                request, context, reporter_ae_title, registry, same_association=True
            ))
        elif fallback is not None:
            await fallback(request)
        else:
            log.warning("refused %s from %s: no such service here", request.name,
                        reporter_ae_title)
            await association.send_message(unrecognized_response(request))

    return handle


def _context(channel: ServiceChannel) -> PresentationContext:
    context = channel.association.context(STORAGE_COMMITMENT_PUSH_MODEL)
    if context.transfer_syntax is None:  # pragma: no cover - accepted contexts have one
        raise DimseError("the Storage Commitment context has no transfer syntax")
    return context


async def request_commitment(
    channel: ServiceChannel, instances: Iterable[ReferencedInstance],
    registry: CommitmentRegistry, *, peer_ae_title: str, transaction_uid: str | None = None,
) -> PendingCommitment:
    """Send the N-ACTION-RQ (Request Storage Commitment) and read its response; the report is
    then awaited with :meth:`CommitmentRegistry.wait`. The caller keeps an N-EVENT-REPORT on
    this association answered (:func:`commitment_handler`) from before this call: an SCP may
    report before its N-ACTION-RSP is read. A refusal raises :class:`StatusError` (and the
    transaction is forgotten)."""
    requested = tuple(instances)
    if not requested:
        raise ValueError("no instance to commit")
    if len(requested) > _MAX_REFERENCES:
        raise ValueError(f"{len(requested)} instances in one request; at most "
                         f"{_MAX_REFERENCES} (split them over several commit() calls)")
    context = _context(channel)
    assert context.transfer_syntax is not None
    ds = Dataset()
    uid = transaction_uid or new_transaction_uid()
    ds.TransactionUID = uid
    ds.ReferencedSOPSequence = [
        reference_item(i.sop_class_uid, i.sop_instance_uid) for i in requested
    ]
    data = encode_dataset(ds, context.transfer_syntax)
    pending = registry.begin(uid, requested, peer_ae_title)
    try:
        response = await _exchange(channel, context.context_id, {
            "CommandField": N_ACTION_RQ,
            "RequestedSOPClassUID": STORAGE_COMMITMENT_PUSH_MODEL,
            "RequestedSOPInstanceUID": STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
            "ActionTypeID": ACTION_REQUEST_COMMITMENT,
        }, data)
        if response.command_field != N_ACTION_RSP:
            raise DimseError(f"{response.name} received in answer to an N-ACTION-RQ")
        status = response.status_code
        if status_category(status) is StatusCategory.FAILURE:
            comment = response.command.get("ErrorComment")
            raise StatusError(status, status_meaning(status),
                              str(comment) if comment else None)
    except AssociationAborted as exc:
        registry.discard(uid)
        # Orthanc aborts when the requestor is not among its DicomModalities.
        raise type(exc)(
            f"{exc} in answer to the storage commitment request (N-ACTION): the peer may not "
            "know our AE title (Orthanc: DicomModalities; others: their AE table)",
            exc.source, exc.reason,
        ) from exc
    except BaseException:
        registry.discard(uid)
        raise
    return pending


async def hold_for_report(
    channel: ServiceChannel, registry: CommitmentRegistry, transaction_uid: str,
    hold: float | None,
) -> None:
    """Keep reading the request's association (where the SCP may report) until the report
    arrives by any path, ``hold`` seconds pass, or the association ends."""
    arrived = registry.arrived(transaction_uid)
    if arrived is None or arrived.is_set():
        return
    dispatcher = channel.dispatcher

    async def read() -> None:
        try:
            async with dispatcher.reading():
                while not dispatcher.ended and not arrived.is_set():
                    await dispatcher.read_one()
        except DicomError as exc:
            # The report can still reach our acceptor on an association of its own.
            log.info("the association of storage commitment transaction %s ended while its "
                     "report was awaited: %s", transaction_uid, exc)

    with anyio.move_on_after(hold):
        async with anyio.create_task_group() as tasks:
            # Whichever comes first ends the other: the association read to its end (or the
            # report read on it), or the report arriving at our acceptor.
            async def read_then_stop() -> None:
                await read()
                tasks.cancel_scope.cancel()

            async def until_reported() -> None:
                await arrived.wait()
                tasks.cancel_scope.cancel()

            tasks.start_soon(read_then_stop)
            tasks.start_soon(until_reported)


async def send_event_report(
    channel: ServiceChannel, report: CommitmentReport, context_id: int | None = None,
) -> int:
    """Send an N-EVENT-REPORT-RQ (SCP side) on ``channel`` and return the status the SCU
    answered with (its response is awaited within the DIMSE timeout)."""
    context = (
        _context(channel) if context_id is None else channel.association.contexts[context_id]
    )
    assert context.transfer_syntax is not None
    data = encode_dataset(report.to_dataset(), context.transfer_syntax)
    response = await _exchange(channel, context.context_id, {
        "CommandField": N_EVENT_REPORT_RQ,
        "AffectedSOPClassUID": STORAGE_COMMITMENT_PUSH_MODEL,
        "AffectedSOPInstanceUID": STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
        "EventTypeID": report.event_type_id,
    }, data)
    return response.status_code


async def _exchange(
    channel: ServiceChannel, context_id: int, command: dict[str, object], data: bytes
) -> DimseMessage:
    """Send one request (its Message ID filled in) and read its response."""
    dispatcher = channel.dispatcher
    async with dispatcher.operation() as message_id:
        await dispatcher.send(DimseMessage(
            context_id, {**command, "MessageID": message_id}, data
        ))
        return await dispatcher.next_response(message_id)
