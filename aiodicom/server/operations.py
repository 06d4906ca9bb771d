"""The embedded Q/R SCP's operations: C-FIND, C-MOVE and C-GET over an :class:`InstanceIndex`.

Each handler serves one request on the acceptor (see :class:`aiodicom.acceptor.IncomingOperation`)
and calls the index and the engine as :mod:`aiodicom.server` says: validation first (a
:class:`QueryRefused` becomes the final status before any pending response), then bounded
batches through :func:`stepwise`, so the loop gets a checkpoint between batches, a C-CANCEL is
read meanwhile and noticed before the next response or sub-operation.

Sub-operations send each instance's data set as stored (``index.read_data``), never re-encoded:
a C-MOVE proposes, to its destination, one presentation context per (SOP class, stored transfer
syntax) and nothing to convert to; a C-GET sends on a context the requestor accepted in exactly
the stored transfer syntax, and counts an instance without one as a failed sub-operation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import attrs
from pydicom.dataset import Dataset

from aiodicom.acceptor import IncomingOperation
from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Timeouts
from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.dimse import C_FIND_RQ, C_GET_RQ, C_MOVE_RQ, DimseMessage
from aiodicom.errors import DicomError
from aiodicom.instance import Instance
from aiodicom.model import QueryModel
from aiodicom.negotiation import MAX_CONTEXTS, ContextProposal, build_request_contexts
from aiodicom.pdu import AssociateRQ, UserInformation
from aiodicom.server.index import IndexedFileChanged, InstanceIndex, StoredInstance
from aiodicom.server.query import (
    QueryRefused,
    count_for_retrieve,
    find,
    instances_for_retrieve,
    syntaxes_for_retrieve,
)
from aiodicom.server.steps import stepwise
from aiodicom.services.store import store
from aiodicom.session import open_session
from aiodicom.status import Status, StatusCategory, status_category
from aiodicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

log = logging.getLogger("aiodicom.qrscp")

__all__ = [
    "QR_SOP_CLASSES",
    "QRContext",
    "association_request",
    "serve_find",
    "serve_get",
    "serve_move",
]

MAX_FAILED_UIDS = 1000
"""Failed SOP Instance UIDs listed in one final response: a UI element of an Explicit VR
identifier holds at most 65534 bytes (about 1000 UIDs); the counts still say how many failed."""


def _sop_classes() -> dict[str, tuple[QueryModel, int]]:
    classes: dict[str, tuple[QueryModel, int]] = {}
    for model in (QueryModel.PATIENT_ROOT, QueryModel.STUDY_ROOT, QueryModel.PATIENT_STUDY_ONLY):
        for uid, command in (
            (model.find_sop_class, C_FIND_RQ), (model.move_sop_class, C_MOVE_RQ),
            (model.get_sop_class, C_GET_RQ),
        ):
            assert uid is not None
            classes[uid] = (model, command)
    return classes


QR_SOP_CLASSES: Mapping[str, tuple[QueryModel, int]] = _sop_classes()
"""Every Q/R SOP Class UID served -> its information model and the request it carries."""


@attrs.define
class QRContext:
    """What the handlers share: the index, who we are, where C-MOVEs may send."""

    index: InstanceIndex
    ae_title: str
    move_destinations: dict[str, tuple[str, int]]
    timeouts: Timeouts = attrs.Factory(Timeouts)
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH


# --- responses ----------------------------------------------------------------------------------


def _response(
    op: IncomingOperation, status: int, data: bytes | None = None, **fields: object
) -> DimseMessage:
    request = op.message
    return DimseMessage(
        request.context_id,
        {
            "CommandField": request.command_field | 0x8000,
            "MessageIDBeingRespondedTo": request.message_id,
            "AffectedSOPClassUID": op.context.abstract_syntax,
            "Status": status,
            **{k: v for k, v in fields.items() if v is not None},
        },
        data,
    )


async def _refuse(op: IncomingOperation, status: int, comment: str) -> None:
    log.info("%s from %s refused (0x%04X): %s", op.message.name, op.calling_ae_title, status,
             comment)
    # LO: at most 64 characters.
    await op.association.send_message(_response(op, status, ErrorComment=comment[:64]))


def _identifier(op: IncomingOperation) -> tuple[Dataset, QueryModel]:
    """The request's identifier and its model; :class:`QueryRefused` (A900) when it is missing
    or cannot be decoded."""
    served = QR_SOP_CLASSES.get(op.context.abstract_syntax)
    if served is None or served[1] != op.message.command_field:
        raise _WrongContext(f"no {op.message.name} on this presentation context")
    model = served[0]
    data = op.message.data
    transfer_syntax = op.context.transfer_syntax
    if data is None or transfer_syntax is None:
        raise _Unreadable("the request has no identifier")
    try:
        identifier = decode_dataset(data, transfer_syntax)
        for _ in identifier:  # pydicom decodes lazily: raise here, not in the engine
            pass
    except Exception as exc:  # pydicom raises many kinds of error on malformed data
        raise _Unreadable(f"the identifier does not decode: {exc}") from exc
    return identifier, model


class _Unreadable(QueryRefused):
    status = Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS


class _WrongContext(QueryRefused):
    status = Status.SOP_CLASS_NOT_SUPPORTED


# --- C-FIND -------------------------------------------------------------------------------------


async def serve_find(op: IncomingOperation, qr: QRContext) -> None:
    """C-FIND: a Pending response per match, streamed batch by batch; 0xFE00 once cancelled."""
    send = op.association.send_message
    transfer_syntax = op.context.transfer_syntax
    assert transfer_syntax is not None
    try:
        identifier, model = _identifier(op)
        batches = find(qr.index, identifier, model, retrieve_ae_title=qr.ae_title)
    except QueryRefused as exc:
        await _refuse(op, exc.status, str(exc))
        return
    matches = 0
    try:
        async for batch in stepwise(batches):
            for match in batch:
                if op.cancelled.is_set():
                    break
                await send(_response(op, Status.PENDING, encode_dataset(match, transfer_syntax)))
                matches += 1
            if op.cancelled.is_set():
                log.info("C-FIND from %s cancelled after %d matches", op.calling_ae_title,
                         matches)
                await send(_response(op, Status.CANCEL))
                return
    except QueryRefused as exc:
        await _refuse(op, exc.status, str(exc))
        return
    except DicomError:
        raise  # the association failed: nothing more to tell the peer
    except Exception as exc:  # a value pydicom cannot handle, a database error
        log.exception("C-FIND from %s failed", op.calling_ae_title)
        await _refuse(op, Status.UNABLE_TO_PROCESS, f"{type(exc).__name__}: {exc}")
        return
    await send(_response(op, Status.SUCCESS))


# --- C-MOVE / C-GET -----------------------------------------------------------------------------


@attrs.define
class _Counts:
    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = attrs.Factory(list)

    @property
    def remaining(self) -> int:
        return max(self.total - self.completed - self.failed - self.warning, 0)

    def fail(self, sop_instance_uid: str) -> None:
        self.failed += 1
        if len(self.failed_uids) < MAX_FAILED_UIDS:
            self.failed_uids.append(sop_instance_uid)

    def fail_rest(self) -> None:
        """Count every sub-operation not done as failed (their UIDs are not listed: the walk
        that knows them did not get there)."""
        self.failed += self.remaining

    def record(self, stored: StoredInstance, status: int) -> None:
        category = status_category(status)
        if category is StatusCategory.SUCCESS:
            self.completed += 1
        elif category is StatusCategory.WARNING:
            self.warning += 1
        else:
            self.fail(stored.sop_instance_uid)


SubOperation = Callable[[StoredInstance, Instance], Awaitable[int]]
"""Sends one instance; returns the C-STORE status (or a local failure status)."""


def _pending(op: IncomingOperation, counts: _Counts) -> DimseMessage:
    return _response(
        op, Status.PENDING,
        NumberOfRemainingSuboperations=counts.remaining,
        NumberOfCompletedSuboperations=counts.completed,
        NumberOfFailedSuboperations=counts.failed,
        NumberOfWarningSuboperations=counts.warning,
    )


def _final(op: IncomingOperation, counts: _Counts, status: int | None = None) -> DimseMessage:
    """The final response; the status follows from the counts unless given (Cancel, Failure).
    Remaining is sent only with Cancel (absent in Success, Warning and Failure, PS3.4 C.4.2)."""
    if status is None:
        status = (
            Status.COERCION_OR_SUB_OPERATION_FAILURES if counts.failed or counts.warning
            else Status.SUCCESS
        )
    data = None
    if counts.failed_uids:
        failed = Dataset()
        failed.FailedSOPInstanceUIDList = counts.failed_uids
        assert op.context.transfer_syntax is not None
        data = encode_dataset(failed, op.context.transfer_syntax)
    return _response(
        op, status, data,
        NumberOfRemainingSuboperations=counts.remaining if status == Status.CANCEL else None,
        NumberOfCompletedSuboperations=counts.completed,
        NumberOfFailedSuboperations=counts.failed,
        NumberOfWarningSuboperations=counts.warning,
    )


async def _sub_operations(
    op: IncomingOperation, qr: QRContext, identifier: Dataset, model: QueryModel,
    counts: _Counts, send_one: SubOperation,
) -> bool:
    """Send every instance the identifier selects, a Pending response after each; ``False``
    when a C-CANCEL stopped it (the Cancel response is sent)."""
    send = op.association.send_message
    async for batch in stepwise(instances_for_retrieve(qr.index, identifier, model)):
        for stored in batch:
            if op.cancelled.is_set():
                log.info("%s from %s cancelled: %d sub-operations left", op.message.name,
                         op.calling_ae_title, counts.remaining)
                await send(_final(op, counts, Status.CANCEL))
                return False
            try:
                data = qr.index.read_data(stored)
            except (IndexedFileChanged, OSError) as exc:
                log.warning("cannot send %s: %s", stored.sop_instance_uid, exc)
                counts.fail(stored.sop_instance_uid)
            else:
                instance = Instance(
                    stored.sop_class_uid, stored.sop_instance_uid, stored.transfer_syntax_uid,
                    data,
                )
                counts.record(stored, await send_one(stored, instance))
            if counts.remaining:
                await send(_pending(op, counts))
    return True


def _association_request(qr: QRContext, called: str, pairs: list[tuple[str, str]]) -> AssociateRQ:
    # Only the stored syntaxes: the data go as they are, or the sub-operation fails.
    return association_request(
        qr, called, [ContextProposal(sop_class, (ts,)) for sop_class, ts in pairs[:MAX_CONTEXTS]]
    )


def association_request(
    qr: QRContext, called: str, proposals: list[ContextProposal]
) -> AssociateRQ:
    """An A-ASSOCIATE-RQ from the server to ``called`` (a C-MOVE destination, a storage
    commitment report)."""
    contexts, roles = build_request_contexts(proposals)
    return AssociateRQ(
        called_ae_title=called,
        calling_ae_title=qr.ae_title,
        presentation_contexts=contexts,
        user_information=UserInformation(
            max_pdu_length=qr.max_pdu_length,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            role_selections=roles,
        ),
    )


async def _retrieval_start(
    op: IncomingOperation, qr: QRContext
) -> tuple[Dataset, QueryModel, _Counts] | None:
    """Validate and count; ``None`` when the final response was already sent."""
    try:
        identifier, model = _identifier(op)
        counts = _Counts(count_for_retrieve(qr.index, identifier, model))
    except QueryRefused as exc:
        await _refuse(op, exc.status, str(exc))
        return None
    if counts.total == 0:
        await op.association.send_message(_final(op, counts))
        return None
    return identifier, model, counts


async def serve_move(op: IncomingOperation, qr: QRContext) -> None:
    """C-MOVE: the instances go on an association of ours to the named destination."""
    destination = str(op.message.command.get("MoveDestination") or "").strip()
    address = qr.move_destinations.get(destination)
    if address is None:
        await _refuse(op, Status.MOVE_DESTINATION_UNKNOWN,
                      f"move destination {destination!r} unknown")
        return
    started = await _retrieval_start(op, qr)
    if started is None:
        return
    identifier, model, counts = started
    pairs = syntaxes_for_retrieve(qr.index, identifier, model)
    rq = _association_request(qr, destination, pairs)
    originator = (op.calling_ae_title, op.message.message_id or 0)
    finished = True
    try:
        async with open_session(
            address[0], address[1], rq, timeouts=qr.timeouts, max_pdu_length=qr.max_pdu_length,
        ) as session:

            async def send_one(stored: StoredInstance, instance: Instance) -> int:
                result = await store(session, [instance], move_originator=originator)
                return result.outcomes[0].status

            finished = await _sub_operations(op, qr, identifier, model, counts, send_one)
    except DicomError as exc:
        if op.association.closed.is_set():
            raise
        # The destination could not be reached or dropped the association: whatever was not
        # sent has failed.
        log.warning("C-MOVE from %s to %s failed: %s", op.calling_ae_title, destination, exc)
        sent = counts.completed + counts.failed + counts.warning
        counts.fail_rest()
        status = Status.OUT_OF_RESOURCES_SUB_OPERATIONS if sent == 0 else None
        await op.association.send_message(_final(op, counts, status))
        return
    if finished:
        await op.association.send_message(_final(op, counts))


async def serve_get(op: IncomingOperation, qr: QRContext) -> None:
    """C-GET: the instances go as C-STOREs on the requestor's own association, on contexts it
    accepted with the SCP role for it in exactly the stored transfer syntax."""
    started = await _retrieval_start(op, qr)
    if started is None:
        return
    identifier, model, counts = started
    contexts = op.association.contexts

    async def send_one(stored: StoredInstance, instance: Instance) -> int:
        if not any(
            c.accepted and c.we_are_scu and c.abstract_syntax == stored.sop_class_uid
            and c.transfer_syntax == stored.transfer_syntax_uid for c in contexts.values()
        ):
            log.info("C-GET from %s: no context for %s in %s", op.calling_ae_title,
                     stored.sop_class_uid, stored.transfer_syntax_uid)
            return Status.SOP_CLASS_NOT_SUPPORTED
        result = await store(op, [instance])
        return result.outcomes[0].status

    if await _sub_operations(op, qr, identifier, model, counts, send_one):
        await op.association.send_message(_final(op, counts))


def handlers(qr: QRContext) -> dict[int, Callable[[IncomingOperation], Awaitable[None]]]:
    """The acceptor's operation handlers, by request command field."""

    async def on_find(op: IncomingOperation) -> None:
        await serve_find(op, qr)

    async def on_move(op: IncomingOperation) -> None:
        await serve_move(op, qr)

    async def on_get(op: IncomingOperation) -> None:
        await serve_get(op, qr)

    return {C_FIND_RQ: on_find, C_MOVE_RQ: on_move, C_GET_RQ: on_get}

