"""Storage SCP (PS3.4 B.2.2): receiving a C-STORE, wherever C-STOREs reach us.

They reach us on a C-GET's own association, and at the client's acceptor (C-MOVE deliveries and
anything else sent to us); both receive them here, and differ only in their
:class:`StoreRouting`, which says where each instance goes. Receiving one is the same everywhere:

* choosing its writer before the data set arrives: a :class:`~aiodicom.sinks.DirectorySink`
  known from the command alone gets the data set written to its directory as it arrives;
* building the :class:`~aiodicom.instance.Instance` from the data set exactly as it came;
* checking that command, context and data set agree: the command's Affected SOP Class UID
  must be the context's abstract syntax, and the data set's SOP Class and SOP Instance UIDs
  (when it has them) the command's; otherwise "data set does not match SOP class" (0xA900),
  or "cannot understand" (0xC000) for a data set that cannot be read that far;
* handing it over and mapping what goes wrong to a status: a data set that could not be
  written or a sink failing with an OS error is "out of resources" (0xA700), any other sink
  error "cannot understand" (0xC000), an instance nobody wants "not authorized" (0x0124);
* answering with the C-STORE-RSP, and removing a temporary file whose instance was not kept.

Requests other than C-STORE and C-ECHO are answered "unrecognized operation" (0x0211): the
association lives on (PS3.7 C.5).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from aiodicom.dimse import (
    C_ECHO_RQ,
    C_STORE_RQ,
    C_STORE_RSP,
    NO_DATASET,
    DataSetWriter,
    DimseMessage,
    encode_store_response,
)
from aiodicom.errors import DicomError, DimseError
from aiodicom.instance import Instance
from aiodicom.limits import Limits
from aiodicom.negotiation import PresentationContext
from aiodicom.peek import MAX_INFLATED_PEEK
from aiodicom.reassembly import DataSetOpener
from aiodicom.services.echo import echo_response
from aiodicom.sinks import DirectorySink, MemorySink, Sink
from aiodicom.spool import SpooledFile, memory_spool
from aiodicom.status import Status

log = logging.getLogger("aiodicom.storage")

__all__ = [
    "OneRecipient",
    "Recipient",
    "SinkHandler",
    "SpoolError",
    "StoreRouting",
    "answer_request",
    "data_opener",
    "instance_from_request",
    "mismatch",
    "receive_store",
    "release_spool",
    "spool_for",
    "store_into",
    "store_response",
    "unrecognized_response",
]


class SpoolError(DimseError):
    """A data set written to disk while it arrived could not be written whole."""


class Recipient(Protocol):
    """Who a C-STORE is for, as far as its command alone tells (a retrieval, or the handler
    of unexpected deliveries): known before the data set arrives."""

    @property
    def sink(self) -> object:
        """Where its instances go; a :class:`DirectorySink` has each data set written to its
        directory while it arrives."""

    @property
    def closed(self) -> bool:
        """It takes no more instances: nothing is to be written for it any more."""

    def record_local_failure(self, sop_instance_uid: str) -> None:
        """An instance for it arrived but could not be kept."""

    @property
    def requested(self) -> bool:
        """Its instances were asked for (a retrieval of ours): each data set is received the
        way its sink keeps it, as a C-GET's is (in memory for a MemorySink or a callable).
        ``False`` for the handler of unexpected deliveries: there a data set past
        :attr:`Limits.max_data_set_memory <aiodicom.Limits>` waits in a temporary file."""


class StoreRouting(Protocol):
    """Where the C-STOREs reaching one place go."""

    def recipient_by_command(
        self, command: Mapping[str, object], source_ae_title: str
    ) -> Recipient | None:
        """The recipient the command alone names, before the data set arrives; ``None`` when
        it takes the data set to tell (or nobody wants it)."""

    async def deliver(
        self, command: Mapping[str, object], source_ae_title: str, instance: Instance
    ) -> int:
        """Hand ``instance`` to whoever wants it; the C-STORE status to answer with."""


class OneRecipient:
    """Every C-STORE to one recipient: a C-GET's, on the association the C-GET runs on."""

    def __init__(
        self, recipient: Recipient, accept: Callable[[Instance], Awaitable[int]]
    ) -> None:
        self._recipient = recipient
        self._accept = accept

    def recipient_by_command(
        self, command: Mapping[str, object], source_ae_title: str
    ) -> Recipient | None:
        return self._recipient

    async def deliver(
        self, command: Mapping[str, object], source_ae_title: str, instance: Instance
    ) -> int:
        return await self._accept(instance)


async def store_into(sink: Sink, instance: Instance) -> Status:
    """Hand ``instance`` to ``sink``; what it raises becomes the status telling the sender."""
    try:
        await sink(instance)
    except OSError as exc:
        log.error("could not store %s: %s", instance.sop_instance_uid, exc)
        return Status.OUT_OF_RESOURCES
    except Exception as exc:
        log.error("sink refused %s: %s", instance.sop_instance_uid, exc)
        return Status.UNABLE_TO_PROCESS
    return Status.SUCCESS


class SinkHandler:
    """Keeps every unexpected delivery in a sink: answers 0x0000 once the sink has it, 0xA700
    (out of resources) when the sink fails with an OS error, 0xC000 for anything else."""

    def __init__(self, sink: MemorySink | DirectorySink) -> None:
        self.sink = sink

    requested = False  # nobody asked for these: large data sets wait in a temporary file

    @property
    def closed(self) -> bool:
        return False  # takes deliveries for as long as it is the client's handler

    def record_local_failure(self, sop_instance_uid: str) -> None:
        pass  # an unexpected delivery has no result to account for it in; the sender is told

    async def __call__(self, instance: Instance) -> int:
        return await store_into(self.sink, instance)


# --- before the data set ------------------------------------------------------------------------


def spool_for(
    sink: object, context: PresentationContext | None, command: Mapping[str, object],
    source_ae_title: str | None,
) -> DataSetWriter | None:
    """A writer putting the data set of a C-STORE-RQ straight into a file of ``sink`` when it
    is a DirectorySink; ``None`` (received in memory) otherwise."""
    if not isinstance(sink, DirectorySink) or command.get("CommandField") != C_STORE_RQ:
        return None
    if context is None or context.transfer_syntax is None:
        return None
    return sink.open_spool(
        str(command.get("AffectedSOPClassUID", "")),
        str(command.get("AffectedSOPInstanceUID", "")),
        context.transfer_syntax,
        source_ae_title,
    )


def data_opener(
    routing: StoreRouting, contexts: Mapping[int, PresentationContext], source_ae_title: str
) -> DataSetOpener:
    """For an association's :attr:`~aiodicom.association.Association.open_data`: the data set
    of a C-STORE whose recipient the command names is written where that recipient keeps it."""

    def open_data(context_id: int, command: dict[str, object]) -> DataSetWriter | None:
        if command.get("CommandField") != C_STORE_RQ:
            return None
        recipient = routing.recipient_by_command(command, source_ae_title)
        if recipient is None or recipient.closed:
            return None
        writer = spool_for(recipient.sink, contexts.get(context_id), command, source_ae_title)
        if writer is None and recipient.requested:
            # Chosen here, so that the acceptor does not put it in a temporary file: the
            # C-MOVE that asked for it keeps it in memory, as the same C-GET would.
            return memory_spool()
        return writer

    return open_data


# --- the data set arrived -----------------------------------------------------------------------


def instance_from_request(
    request: DimseMessage, transfer_syntax_uid: str, source_ae_title: str | None,
    max_inflated: int = MAX_INFLATED_PEEK,
) -> Instance:
    """The instance a C-STORE-RQ carries, its data set untouched; :class:`SpoolError` when the
    data set could not be written to disk as it arrived, :class:`DimseError` without one."""
    if request.data is None:
        raise DimseError("C-STORE-RQ without a data set")
    spool = request.writer if isinstance(request.writer, SpooledFile) else None
    if spool is not None and spool.error is not None:
        raise SpoolError(f"could not write the received data set to disk: {spool.error}")
    return Instance(
        sop_class_uid=str(request.command.get("AffectedSOPClassUID", "")),
        sop_instance_uid=str(request.command.get("AffectedSOPInstanceUID", "")),
        transfer_syntax_uid=transfer_syntax_uid,
        data=request.data,
        source_ae_title=source_ae_title,
        spool=spool,
        max_inflated=max_inflated,
    )


def release_spool(request: DimseMessage) -> None:
    """Remove the temporary file of a C-STORE whose instance was not kept (refused, failed)."""
    if isinstance(request.writer, SpooledFile) and not request.writer.committed:
        request.writer.discard()


async def receive_store(
    request: DimseMessage, context: PresentationContext, source_ae_title: str,
    routing: StoreRouting, limits: Limits | None = None,
) -> DimseMessage:
    """Receive one C-STORE-RQ: the C-STORE-RSP to send. The instance is with its recipient
    before the response says it was stored."""
    try:
        status = await _store(request, context, source_ae_title, routing, limits)
    finally:
        release_spool(request)
    return store_response(request, status)


def mismatch(instance: Instance, context: PresentationContext) -> tuple[int, str] | None:
    """Why ``instance`` must not be stored as its command describes it (status, reason), or
    ``None``: the command's SOP class is the context's, and the data set's SOP Class and SOP
    Instance UIDs, when present, are the command's (a file is named and described by them)."""
    if instance.sop_class_uid != context.abstract_syntax:
        return Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, (
            f"Affected SOP Class UID {instance.sop_class_uid!r} on a presentation context for "
            f"{context.abstract_syntax}"
        )
    try:
        sop_uids = instance.peek_sop_uids()
    except DicomError as exc:
        return Status.UNABLE_TO_PROCESS, f"data set unreadable: {exc}"
    for value, name, expected in (
        (sop_uids[0], "SOP Class UID", instance.sop_class_uid),
        (sop_uids[1], "SOP Instance UID", instance.sop_instance_uid),
    ):
        if value is not None and value != expected:
            return Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, (
                f"the data set's {name} {value!r} is not the command's {expected!r}"
            )
    return None


async def _store(
    request: DimseMessage, context: PresentationContext, source_ae_title: str,
    routing: StoreRouting, limits: Limits | None,
) -> int:
    command = request.command
    if context.transfer_syntax is None:  # a context the negotiation did not accept
        return Status.SOP_CLASS_NOT_SUPPORTED
    try:
        instance = instance_from_request(
            request, context.transfer_syntax, source_ae_title,
            limits.max_inflated_bytes if limits is not None else MAX_INFLATED_PEEK,
        )
    except SpoolError as exc:
        log.error("refused a C-STORE from %s: %s", source_ae_title, exc)
        recipient = routing.recipient_by_command(command, source_ae_title)
        if recipient is not None:
            recipient.record_local_failure(str(command.get("AffectedSOPInstanceUID", "")))
        return Status.OUT_OF_RESOURCES
    except DimseError as exc:
        log.warning("malformed C-STORE from %s: %s", source_ae_title, exc)
        return Status.UNABLE_TO_PROCESS
    refused = mismatch(instance, context)
    if refused is not None:
        status, reason = refused
        log.warning("refused a C-STORE from %s: %s", source_ae_title, reason)
        recipient = routing.recipient_by_command(command, source_ae_title)
        if recipient is not None:
            recipient.record_local_failure(instance.sop_instance_uid)
        return status
    return await routing.deliver(command, source_ae_title, instance)


# --- answering ----------------------------------------------------------------------------------


def store_response(request: DimseMessage, status: int) -> DimseMessage:
    """The C-STORE-RSP to ``request``; its command set comes encoded (one per instance)."""
    command = request.command
    message_id = command.get("MessageID")
    sop_class_uid = command.get("AffectedSOPClassUID")
    sop_instance_uid = command.get("AffectedSOPInstanceUID")
    encoded = None
    if (
        isinstance(message_id, int) and isinstance(sop_class_uid, str)
        and isinstance(sop_instance_uid, str)
    ):
        encoded = encode_store_response(message_id, sop_class_uid, sop_instance_uid, status)
    # else: a request missing some of them; the generic encoder leaves out what is missing.
    return DimseMessage(
        request.context_id,
        {
            "CommandField": C_STORE_RSP,
            "MessageIDBeingRespondedTo": message_id,
            "AffectedSOPClassUID": sop_class_uid,
            "AffectedSOPInstanceUID": sop_instance_uid,
            "CommandDataSetType": NO_DATASET,
            "Status": status,
        },
        None,
        encoded_command=encoded,
    )


def unrecognized_response(request: DimseMessage) -> DimseMessage:
    """The response refusing a request we do not provide: the association lives on."""
    return DimseMessage(
        request.context_id,
        {
            "CommandField": request.command_field | 0x8000,
            "MessageIDBeingRespondedTo": request.message_id,
            "CommandDataSetType": NO_DATASET,
            "Status": Status.UNRECOGNIZED_OPERATION,
        },
        None,
    )


StoreReceiver = Callable[[DimseMessage, PresentationContext], Awaitable[DimseMessage]]
"""Receives one C-STORE-RQ on its presentation context; returns the C-STORE-RSP."""


async def answer_request(
    request: DimseMessage, contexts: Mapping[int, PresentationContext],
    receive: StoreReceiver | None,
) -> DimseMessage:
    """The response to a request a peer sends us as SCP: C-ECHO is answered, C-STORE given to
    ``receive`` (refused as unrecognized without one), anything else refused likewise."""
    command_field = request.command_field
    if command_field == C_ECHO_RQ:
        return echo_response(request)
    if command_field == C_STORE_RQ and receive is not None:
        context = contexts.get(request.context_id)
        if context is None:
            return store_response(request, Status.SOP_CLASS_NOT_SUPPORTED)
        return await receive(request, context)
    log.warning("refused %s: no such service here", request.name)
    return unrecognized_response(request)
