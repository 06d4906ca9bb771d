"""C-STORE SCU (Storage service, PS3.4 Annex B): send composite instances to a peer.

Each object travels in the transfer syntax it already has: a Part 10 file's data set bytes are
read from after its File Meta Information and sent untouched, an :class:`~aiodicom.Instance`
sends its ``data``, a pydicom ``Dataset`` is encoded once. Only when the peer accepted no
context in that transfer syntax is the object converted to an uncompressed one the peer did
accept (decoding compressed pixel data needs a pydicom decoder; without one the object fails).

An object that cannot be sent, or that the peer answers with a failure status, becomes a failed
:class:`StoreOutcome`; only association-level errors raise.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import attrs
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import UID

from aiodicom.datasets import decode_dataset, encode_dataset, is_encapsulated, transfer_syntax_name
from aiodicom.dimse import C_STORE_RQ, DATASET_PRESENT, PRIORITY_MEDIUM, DimseMessage
from aiodicom.errors import DicomError
from aiodicom.instance import Instance
from aiodicom.negotiation import MAX_CONTEXTS, ContextProposal, PresentationContext
from aiodicom.peek import peek_elements
from aiodicom.services.channel import ServiceChannel
from aiodicom.status import Status, StatusCategory, status_category, status_meaning
from aiodicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE, UNCOMPRESSED_TRANSFER_SYNTAXES, uid_name

log = logging.getLogger("aiodicom.store")

__all__ = [
    "FALLBACK_TRANSFER_SYNTAXES",
    "STATUS_NOT_SENT_LOCAL_ERROR",
    "STATUS_NOT_SENT_NO_CONTEXT",
    "StoreItem",
    "StoreItems",
    "StoreOutcome",
    "StoreResult",
    "proposals_for",
    "store",
    "store_on_associations",
]

StoreItem = str | os.PathLike[str] | Dataset | Instance
"""What can be stored: a Part 10 file path, a pydicom Dataset or a received Instance."""

StoreItems = Iterable[StoreItem]

FALLBACK_TRANSFER_SYNTAXES: tuple[str, ...] = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)
"""Proposed for every SOP class next to the syntaxes the objects carry: what we convert to."""

STATUS_NOT_SENT_NO_CONTEXT = Status.SOP_CLASS_NOT_SUPPORTED
"""Recorded (never sent by the peer) when the peer accepted the SOP class in no transfer syntax
we could produce: the negotiation-time form of "Refused: SOP class not supported"."""

STATUS_NOT_SENT_LOCAL_ERROR = Status.PROCESSING_FAILURE
"""Recorded when the object could not be read or encoded here ("Failure: processing failure")."""

_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018


@attrs.frozen
class StoreOutcome:
    """What became of one object."""

    sop_class_uid: str
    sop_instance_uid: str
    status: int
    status_text: str
    error_comment: str | None
    source: str
    """The file path, ``"<dataset>"`` or ``"<instance>"``."""
    transfer_syntax_uid: str | None
    """The transfer syntax the data set was sent in; ``None`` when it was not sent."""
    bytes_sent: int = 0
    """Size of the data set sent (without the command set)."""

    @property
    def ok(self) -> bool:
        return status_category(self.status) in (StatusCategory.SUCCESS, StatusCategory.WARNING)

    @property
    def sent(self) -> bool:
        return self.transfer_syntax_uid is not None


@attrs.frozen
class StoreResult:
    """The outcome of every object, in the order they were given."""

    outcomes: tuple[StoreOutcome, ...] = ()

    @property
    def succeeded(self) -> list[StoreOutcome]:
        """Status 0x0000."""
        return [o for o in self.outcomes if status_category(o.status) is StatusCategory.SUCCESS]

    @property
    def warnings(self) -> list[StoreOutcome]:
        """Stored with a warning status (Bxxx, coercion etc.): stored nonetheless."""
        return [o for o in self.outcomes if status_category(o.status) is StatusCategory.WARNING]

    @property
    def failed(self) -> list[StoreOutcome]:
        """Not stored: refused or failed by the peer, or not sent at all."""
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        """Every object was stored (with or without warnings)."""
        return all(o.ok for o in self.outcomes)

    @property
    def bytes_sent(self) -> int:
        return sum(o.bytes_sent for o in self.outcomes)


# --- the objects ---------------------------------------------------------------------------------


class _NotSent(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


@attrs.frozen
class _Object:
    """One item, identified but not yet loaded (a file's data set is read only when sent)."""

    index: int
    source: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: Path | None = None
    offset: int = 0
    dataset: Dataset | None = None
    data: bytes | memoryview | None = None

    def carried_bytes(self) -> bytes:
        """The data set in the transfer syntax it carries."""
        if self.path is not None:
            with open(self.path, "rb") as fp:
                fp.seek(self.offset)
                return fp.read()
        if self.data is not None:
            return self.data if isinstance(self.data, bytes) else bytes(self.data)
        assert self.dataset is not None
        return encode_dataset(self.dataset, self.transfer_syntax_uid)

    def converted_bytes(self, target: str) -> bytes:
        """The data set re-encoded in the uncompressed ``target``."""
        source = self.transfer_syntax_uid
        if self.dataset is not None:
            ds = self.dataset
        else:
            ds = decode_dataset(self.carried_bytes(), source)
        if is_encapsulated(source) and "PixelData" in ds:
            if ds is self.dataset:
                # decompress() works in place: the caller's Dataset must stay as it was given.
                ds = copy.deepcopy(ds)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = UID(source)
            try:
                # Same instance, only its encoding changes: keep the SOP Instance UID.
                ds.decompress(generate_instance_uid=False)
            except Exception as exc:
                raise _NotSent(
                    STATUS_NOT_SENT_NO_CONTEXT,
                    f"the peer does not accept {transfer_syntax_name(source)} for "
                    f"{uid_name(self.sop_class_uid)} and pydicom cannot decompress it: {exc}",
                ) from exc
        return encode_dataset(ds, target)


def _identify(index: int, item: StoreItem) -> _Object:
    """Find SOP class, instance and transfer syntax; raises :class:`_NotSent` (with what could
    be learnt in the message) when the item is unusable."""
    if isinstance(item, Instance):
        return _Object(
            index, "<instance>", item.sop_class_uid, item.sop_instance_uid,
            item.transfer_syntax_uid, data=item.data,
        )
    if isinstance(item, Dataset):
        meta = getattr(item, "file_meta", None)
        transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "") if meta else ""
        sop_class = str(item.get("SOPClassUID", "") or "")
        sop_instance = str(item.get("SOPInstanceUID", "") or "")
        if not sop_class or not sop_instance:
            raise _NotSent(
                STATUS_NOT_SENT_LOCAL_ERROR, "the data set has no SOP Class UID or SOP Instance UID"
            )
        return _Object(
            index, "<dataset>", sop_class, sop_instance, transfer_syntax or EXPLICIT_VR_LE,
            dataset=item,
        )
    if isinstance(item, (str, os.PathLike)):
        return _identify_file(index, Path(item))
    raise TypeError(
        f"cannot store a {type(item).__name__}: give file paths, pydicom Datasets or Instances"
    )


def _identify_file(index: int, path: Path) -> _Object:
    try:
        with open(path, "rb") as fp:
            if read_preamble(fp, False) is None:
                raise _NotSent(STATUS_NOT_SENT_LOCAL_ERROR, "not a DICOM Part 10 file")
            meta = _read_file_meta_info(fp)
            # pydicom leaves the file at the first element after group 0002, whatever
            # FileMetaInformationGroupLength says (some writers get it wrong).
            offset = fp.tell()
            transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "").rstrip("\0 ")
            if not transfer_syntax:
                raise _NotSent(
                    STATUS_NOT_SENT_LOCAL_ERROR, "the File Meta Information has no Transfer Syntax"
                )
            meta_class = str(meta.get("MediaStorageSOPClassUID", "") or "").rstrip("\0 ")
            meta_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "").rstrip("\0 ")
            # The command must carry the data set's own UIDs (PS3.7 Table 9.1-1), and some
            # writers leave a File Meta that disagrees with the data set (pydicom's rtplan.dcm):
            # a receiver then refuses the object (DCMTK storescp: 0xA900). Only the start of
            # the data set is read: the UIDs come before any pixel data.
            head = fp.read(64 * 1024)
            try:
                found = peek_elements(
                    head, transfer_syntax, (_SOP_CLASS_UID, _SOP_INSTANCE_UID)
                )
            except DicomError:
                found = {}  # unreadable this far: the File Meta is all there is to go by
            sop_class = found.get(_SOP_CLASS_UID) or meta_class
            sop_instance = found.get(_SOP_INSTANCE_UID) or meta_instance
            for what, in_meta, in_data in (
                ("SOP Class UID", meta_class, sop_class),
                ("SOP Instance UID", meta_instance, sop_instance),
            ):
                if in_meta and in_meta != in_data:
                    log.warning(
                        "%s: the File Meta's %s %s differs from the data set's %s; "
                        "sending the data set's", path, what, in_meta, in_data,
                    )
    except _NotSent:
        raise
    except Exception as exc:
        raise _NotSent(STATUS_NOT_SENT_LOCAL_ERROR, f"cannot read {path}: {exc}") from exc
    if not sop_class or not sop_instance:
        raise _NotSent(STATUS_NOT_SENT_LOCAL_ERROR, "no SOP Class UID or SOP Instance UID found")
    return _Object(index, str(path), sop_class, sop_instance, transfer_syntax, path=path,
                   offset=offset)


def _source_of(item: StoreItem) -> str:
    if isinstance(item, Instance):
        return "<instance>"
    if isinstance(item, Dataset):
        return "<dataset>"
    return os.fspath(item)


def _identify_all(items: Iterable[StoreItem]) -> list[_Object | StoreOutcome]:
    prepared: list[_Object | StoreOutcome] = []
    for index, item in enumerate(items):
        try:
            prepared.append(_identify(index, item))
        except _NotSent as exc:
            prepared.append(_not_sent(_source_of(item), "", "", exc))
    return prepared


def _not_sent(source: str, sop_class: str, sop_instance: str, exc: _NotSent) -> StoreOutcome:
    return StoreOutcome(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        status=exc.status,
        status_text=status_meaning(exc.status, "store"),
        error_comment=f"not sent: {exc.comment}",
        source=source,
        transfer_syntax_uid=None,
    )


# --- negotiation ---------------------------------------------------------------------------------


def _class_proposals(sop_class: str, transfer_syntaxes: Iterable[str]) -> list[ContextProposal]:
    # A context of its own per carried syntax: offered alongside others, the peer might pick
    # another one and force a conversion it did not need.
    proposals = [ContextProposal(sop_class, (ts,)) for ts in transfer_syntaxes]
    proposals.append(ContextProposal(sop_class, FALLBACK_TRANSFER_SYNTAXES))
    return proposals


def _syntaxes_by_class(objects: Iterable[_Object]) -> dict[str, dict[str, None]]:
    # dicts as ordered sets: proposals follow the order of the items.
    by_class: dict[str, dict[str, None]] = {}
    for obj in objects:
        by_class.setdefault(obj.sop_class_uid, {})[obj.transfer_syntax_uid] = None
    return by_class


def proposals_for(items: Iterable[StoreItem]) -> list[ContextProposal]:
    """The presentation contexts to store ``items`` on one association.

    One context per (SOP class, transfer syntax carried), plus one per SOP class offering
    Explicit and Implicit VR Little Endian to convert to. Items that cannot be read are left
    out (storing them reports why). Raises :class:`ValueError` beyond 128 contexts, the most an
    association carries; :meth:`Peer.store <aiodicom.Peer.store>` splits such sets instead.
    """
    objects = [o for o in _identify_all(items) if isinstance(o, _Object)]
    proposals = [
        proposal
        for sop_class, syntaxes in _syntaxes_by_class(objects).items()
        for proposal in _class_proposals(sop_class, syntaxes)
    ]
    if len(proposals) > MAX_CONTEXTS:
        raise ValueError(
            f"these objects need {len(proposals)} presentation contexts; one association "
            f"carries at most {MAX_CONTEXTS}: store them with Peer.store, which uses several"
        )
    return proposals


def _plan(objects: Sequence[_Object]) -> list[tuple[list[ContextProposal], list[_Object]]]:
    """Split the objects, whole SOP classes at a time, over associations of <= 128 contexts."""
    plans: list[tuple[list[ContextProposal], list[str]]] = []
    for sop_class, syntaxes in _syntaxes_by_class(objects).items():
        proposals = _class_proposals(sop_class, syntaxes)
        if len(proposals) > MAX_CONTEXTS:
            raise ValueError(
                f"{uid_name(sop_class)} objects come in {len(syntaxes)} transfer syntaxes: more "
                f"than the {MAX_CONTEXTS} presentation contexts of an association"
            )
        if not plans or len(plans[-1][0]) + len(proposals) > MAX_CONTEXTS:
            plans.append(([], []))
        plans[-1][0].extend(proposals)
        plans[-1][1].append(sop_class)
    result = []
    for proposals, classes in plans:
        wanted = set(classes)
        result.append((proposals, [o for o in objects if o.sop_class_uid in wanted]))
    return result


# --- sending -------------------------------------------------------------------------------------


def _choose(
    obj: _Object, contexts: Iterable[PresentationContext]
) -> tuple[PresentationContext, bool]:
    """The context to send ``obj`` on, and whether it must be converted for it."""
    accepted = [
        c for c in contexts
        if c.accepted and c.we_are_scu and c.abstract_syntax == obj.sop_class_uid
        and c.transfer_syntax is not None
    ]
    for context in accepted:
        if context.transfer_syntax == obj.transfer_syntax_uid:
            return context, False
    preference = {ts: rank for rank, ts in enumerate(UNCOMPRESSED_TRANSFER_SYNTAXES)}
    targets = sorted(
        (c for c in accepted if c.transfer_syntax in preference),
        key=lambda c: preference[c.transfer_syntax or ""],
    )
    if targets:
        return targets[0], True
    name = uid_name(obj.sop_class_uid)
    if accepted:
        offered = ", ".join(
            sorted({transfer_syntax_name(c.transfer_syntax or "") for c in accepted})
        )
        reason = (
            f"the peer accepts {name} only in {offered}, not in "
            f"{transfer_syntax_name(obj.transfer_syntax_uid)}, and we convert only to an "
            "uncompressed syntax"
        )
    else:
        reason = f"the peer accepted no presentation context for {name}"
    raise _NotSent(STATUS_NOT_SENT_NO_CONTEXT, reason)


async def _store_one(
    session: ServiceChannel,
    obj: _Object,
    priority: int,
    move_originator: tuple[str, int] | None,
) -> StoreOutcome:
    try:
        context, convert = _choose(obj, session.association.contexts.values())
        assert context.transfer_syntax is not None
        try:
            data = (
                obj.converted_bytes(context.transfer_syntax) if convert else obj.carried_bytes()
            )
        except _NotSent:
            raise
        except (OSError, DicomError) as exc:
            raise _NotSent(STATUS_NOT_SENT_LOCAL_ERROR, str(exc)) from exc
        except Exception as exc:
            # pydicom raises whatever it likes on data it cannot handle; one bad object must not
            # end the others' association.
            action = f"convert to {transfer_syntax_name(context.transfer_syntax)}" if convert \
                else "encode"
            raise _NotSent(
                STATUS_NOT_SENT_LOCAL_ERROR, f"cannot {action}: {type(exc).__name__}: {exc}"
            ) from exc
    except _NotSent as exc:
        return _not_sent(obj.source, obj.sop_class_uid, obj.sop_instance_uid, exc)

    originator_ae, originator_id = move_originator if move_originator else (None, None)
    dispatcher = session.dispatcher
    async with dispatcher.operation() as message_id:
        await dispatcher.send(DimseMessage(
            context.context_id,
            {
                "CommandField": C_STORE_RQ,
                "MessageID": message_id,
                "AffectedSOPClassUID": obj.sop_class_uid,
                "Priority": priority,
                "CommandDataSetType": DATASET_PRESENT,
                "AffectedSOPInstanceUID": obj.sop_instance_uid,
                "MoveOriginatorApplicationEntityTitle": originator_ae,
                "MoveOriginatorMessageID": originator_id,
            },
            data,
        ))
        response = await dispatcher.next_response(message_id)
    # A response without status cannot be taken for success.
    status = response.status_code
    comment = response.command.get("ErrorComment")
    return StoreOutcome(
        sop_class_uid=obj.sop_class_uid,
        sop_instance_uid=obj.sop_instance_uid,
        status=status,
        status_text=status_meaning(status, "store"),
        error_comment=str(comment) if comment else None,
        source=obj.source,
        transfer_syntax_uid=context.transfer_syntax,
        bytes_sent=len(data),
    )


async def store(
    session: ServiceChannel,
    items: Iterable[StoreItem],
    *,
    priority: int = PRIORITY_MEDIUM,
    move_originator: tuple[str, int] | None = None,
) -> StoreResult:
    """C-STORE each item on an open association (see :func:`proposals_for` for its contexts).

    ``move_originator`` is ``(ae_title, message_id)`` of the C-MOVE these stores serve, for an
    SCP performing its sub-operations. Items are read one at a time, as they are sent.
    """
    outcomes: list[StoreOutcome] = []
    for index, item in enumerate(items):
        try:
            obj = _identify(index, item)
        except _NotSent as exc:
            outcomes.append(_not_sent(_source_of(item), "", "", exc))
            continue
        outcomes.append(await _store_one(session, obj, priority, move_originator))
    return StoreResult(tuple(outcomes))


async def store_on_associations(
    associate: Callable[[list[ContextProposal]], AbstractAsyncContextManager[ServiceChannel]],
    items: Iterable[StoreItem],
    *,
    priority: int = PRIORITY_MEDIUM,
    move_originator: tuple[str, int] | None = None,
) -> StoreResult:
    """C-STORE each item on associations of its own, opened in sequence with ``associate``.

    One association unless the objects need more than 128 presentation contexts.
    """
    prepared = _identify_all(items)
    outcomes: dict[int, StoreOutcome] = {
        index: entry for index, entry in enumerate(prepared) if isinstance(entry, StoreOutcome)
    }
    objects = [entry for entry in prepared if isinstance(entry, _Object)]
    for proposals, group in _plan(objects):
        async with associate(proposals) as session:
            for obj in group:
                outcomes[obj.index] = await _store_one(session, obj, priority, move_originator)
    return StoreResult(tuple(outcomes[index] for index in range(len(prepared))))
