"""Storage commitment transactions and their results (PS3.4 Annex J), and the registry that
keeps the pending ones by Transaction UID until their reports arrive (see
:mod:`aiodicom.services.commitment` for the messages)."""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import anyio
import attrs
from pydicom.dataset import Dataset

from aiodicom.errors import DicomError, DicomTimeoutError

log = logging.getLogger("aiodicom.commitment")

__all__ = [
    "ACTION_REQUEST_COMMITMENT",
    "EVENT_ALL_COMMITTED",
    "EVENT_FAILURES_EXIST",
    "CommitmentJournal",
    "CommitmentRegistry",
    "CommitmentReport",
    "CommitmentResult",
    "CommitmentTimeout",
    "FailedInstance",
    "FailureReason",
    "PendingCommitment",
    "ReferencedInstance",
    "new_transaction_uid",
    "reference_item",
]

ACTION_REQUEST_COMMITMENT = 1
"""Action Type ID of "Request Storage Commitment" (PS3.4 J.3.2)."""
EVENT_ALL_COMMITTED = 1
"""Event Type ID: storage commitment request successful (every instance committed)."""
EVENT_FAILURES_EXIST = 2
"""Event Type ID: storage commitment request complete, failures exist."""


class FailureReason(enum.IntEnum):
    """Failure Reason (0008,1197) values of a Failed SOP Sequence item (PS3.3 C.14.1.1)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    CLASS_INSTANCE_CONFLICT = 0x0119
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    RESOURCE_LIMITATION = 0x0213
    DUPLICATE_TRANSACTION_UID = 0x0131


_REASON_TEXT = {
    FailureReason.PROCESSING_FAILURE: "processing failure",
    FailureReason.NO_SUCH_OBJECT_INSTANCE: "no such object instance",
    FailureReason.CLASS_INSTANCE_CONFLICT: "class/instance conflict",
    FailureReason.REFERENCED_SOP_CLASS_NOT_SUPPORTED: "referenced SOP class not supported",
    FailureReason.RESOURCE_LIMITATION: "resource limitation",
    FailureReason.DUPLICATE_TRANSACTION_UID: "duplicate transaction UID",
}


@attrs.frozen
class ReferencedInstance:
    """An instance named in a commitment request or report."""

    sop_class_uid: str
    sop_instance_uid: str


@attrs.frozen
class FailedInstance:
    """An instance the SCP did not commit, and why (``failure_reason``: a
    :class:`FailureReason` value, or whatever code the SCP sent; ``None`` when it sent none)."""

    sop_class_uid: str
    sop_instance_uid: str
    failure_reason: int | None

    @property
    def reason(self) -> str:
        """The failure reason in words (``"no such object instance"``)."""
        code = self.failure_reason
        if code is None:
            return "no failure reason given"
        try:
            return _REASON_TEXT[FailureReason(code)]
        except ValueError:
            return f"failure reason 0x{code:04X} (not defined by PS3.3 C.14.1.1)"


@attrs.frozen
class CommitmentReport:
    """What an N-EVENT-REPORT of Storage Commitment says (the SCP writes one, the SCU reads it)."""

    transaction_uid: str
    committed: tuple[ReferencedInstance, ...] = ()
    failed: tuple[FailedInstance, ...] = ()
    retrieve_ae_title: str | None = None

    @property
    def event_type_id(self) -> int:
        return EVENT_FAILURES_EXIST if self.failed else EVENT_ALL_COMMITTED

    def to_dataset(self) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        if self.retrieve_ae_title:
            ds.RetrieveAETitle = self.retrieve_ae_title
        if self.committed:
            ds.ReferencedSOPSequence = [reference_item(i.sop_class_uid, i.sop_instance_uid)
                                        for i in self.committed]
        if self.failed:
            items = []
            for failed in self.failed:
                item = reference_item(failed.sop_class_uid, failed.sop_instance_uid)
                if failed.failure_reason is not None:
                    item.FailureReason = failed.failure_reason
                items.append(item)
            ds.FailedSOPSequence = items
        return ds


@attrs.frozen
class CommitmentResult:
    """The answer to one storage commitment request.

    ``committed``: the instances the SCP took responsibility for; ``failed``: the others, with
    their failure reasons; ``unreported``: instances requested that the report names in neither
    list (an SCP should never leave one out). ``same_association``: whether the report came on
    the association of the request, else on one the SCP (``reporter_ae_title``) opened to us.
    """

    transaction_uid: str
    committed: tuple[ReferencedInstance, ...]
    failed: tuple[FailedInstance, ...]
    requested: tuple[ReferencedInstance, ...]
    event_type_id: int
    reporter_ae_title: str
    same_association: bool
    retrieve_ae_title: str | None = None

    @property
    def unreported(self) -> tuple[ReferencedInstance, ...]:
        reported = {i.sop_instance_uid for i in self.committed}
        reported.update(f.sop_instance_uid for f in self.failed)
        return tuple(i for i in self.requested if i.sop_instance_uid not in reported)

    @property
    def ok(self) -> bool:
        """Every instance requested was committed."""
        return not self.failed and not self.unreported


@attrs.frozen
class PendingCommitment:
    """A transaction whose report has not been taken yet (what a journal keeps).

    ``requested_at``/``expires_at`` are wall-clock times (``time.time()``), so that a journal
    outliving the process can tell which transactions are still worth waiting for.
    """

    transaction_uid: str
    requested: tuple[ReferencedInstance, ...]
    peer_ae_title: str
    requested_at: float
    expires_at: float


class CommitmentTimeout(DicomTimeoutError):
    """No report arrived in time; the transaction stays pending (``transaction_uid``) until it
    expires, and can be awaited again."""

    def __init__(self, transaction_uid: str, timeout: float, expires_at: float) -> None:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires_at))
        super().__init__(
            f"no N-EVENT-REPORT for storage commitment transaction {transaction_uid} within "
            f"{timeout} s; it stays pending until {when}: wait again with "
            f"client.commitment_result({transaction_uid!r}), give commit() a longer timeout, "
            "or check that the SCP knows our AE title, host and port (it may report on a new "
            "association to our acceptor, which must be listening)"
        )
        self.transaction_uid = transaction_uid
        self.expires_at = expires_at


class CommitmentJournal(Protocol):
    """Where a :class:`CommitmentRegistry` records its transactions, for a caller that must not
    lose them with the process (the bulk runner's journal). Called synchronously, once per
    transaction event: keep each call short."""

    def pending(self, transaction: PendingCommitment) -> None:
        """A request is about to be sent: its report is awaited (first call per transaction)."""

    def reported(self, result: CommitmentResult) -> None:
        """Its report arrived (the transaction may still be waited for)."""

    def forget(self, transaction_uid: str) -> None:
        """The caller took the result, the SCP refused the request, or the transaction expired
        (last call per transaction)."""


def new_transaction_uid() -> str:
    """A Transaction UID: ``2.25.`` and a random UUID (PS3.5 B.2), unique without a root."""
    return f"2.25.{uuid.uuid4().int}"


# --- the pending transactions --------------------------------------------------------------------


@attrs.define
class _Entry:
    pending: PendingCommitment
    arrived: anyio.Event = attrs.Factory(anyio.Event)
    result: CommitmentResult | None = None
    waiters: int = 0


class CommitmentRegistry:
    """Pending storage commitment transactions by Transaction UID (one per
    :class:`~aiodicom.Client`): reports are matched to them whichever association brings them.

    At most ``max_pending`` are kept; a transaction (and a report nobody took) is forgotten
    ``expiry`` seconds after its request. When full, expired ones go first, then the oldest that
    nobody waits for; if every one is awaited, a new request is refused. Expiry is checked when
    the registry is used (no timer runs).
    """

    def __init__(
        self, *, max_pending: int = 10_000, expiry: float = 24 * 3600.0,
        journal: CommitmentJournal | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.expiry = expiry
        self.journal = journal
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, transaction_uid: object) -> bool:
        self._purge()
        return transaction_uid in self._entries

    @property
    def pending(self) -> tuple[PendingCommitment, ...]:
        """The transactions kept (reported or not), oldest first."""
        self._purge()
        return tuple(entry.pending for entry in self._entries.values())

    def begin(
        self, transaction_uid: str, requested: Sequence[ReferencedInstance], peer_ae_title: str
    ) -> PendingCommitment:
        """Expect a report for ``transaction_uid`` (before the request is sent: the report may
        come before the N-ACTION-RSP is read)."""
        now = time.time()
        pending = PendingCommitment(
            transaction_uid, tuple(requested), peer_ae_title, now, now + self.expiry
        )
        self.restore(pending)
        if self.journal is not None:
            self.journal.pending(pending)
        return pending

    def restore(self, pending: PendingCommitment, result: CommitmentResult | None = None) -> None:
        """Keep ``pending`` (and its report, if it came): how a journal re-seeds a new
        registry after a restart."""
        self._purge()
        if pending.transaction_uid in self._entries:
            raise DicomError(f"storage commitment transaction {pending.transaction_uid} is "
                             "already pending")
        self._make_room()
        entry = _Entry(pending)
        if result is not None:
            entry.result = result
            entry.arrived.set()
        self._entries[pending.transaction_uid] = entry

    def discard(self, transaction_uid: str) -> None:
        """Forget a transaction (its request failed, or its result was taken)."""
        if self._entries.pop(transaction_uid, None) is not None and self.journal is not None:
            self.journal.forget(transaction_uid)

    def report(
        self, report: CommitmentReport, reporter_ae_title: str, *, same_association: bool
    ) -> CommitmentResult | None:
        """Record an arrived report; ``None`` when its transaction is unknown (or expired)."""
        self._purge()
        entry = self._entries.get(report.transaction_uid)
        if entry is None:
            return None
        result = CommitmentResult(
            transaction_uid=report.transaction_uid,
            committed=report.committed,
            failed=report.failed,
            requested=entry.pending.requested,
            event_type_id=report.event_type_id,
            reporter_ae_title=reporter_ae_title,
            same_association=same_association,
            retrieve_ae_title=report.retrieve_ae_title,
        )
        if entry.result is not None:
            log.warning("a second report for storage commitment transaction %s (from %s) "
                        "replaces the first", report.transaction_uid, reporter_ae_title)
        entry.result = result
        entry.arrived.set()
        if self.journal is not None:
            self.journal.reported(result)
        return result

    def arrived(self, transaction_uid: str) -> anyio.Event | None:
        """Set when the report of ``transaction_uid`` arrives; ``None`` for an unknown one."""
        entry = self._entries.get(transaction_uid)
        return entry.arrived if entry is not None else None

    def result(self, transaction_uid: str) -> CommitmentResult | None:
        """The report of a transaction if it arrived (the transaction stays kept)."""
        self._purge()
        entry = self._entries.get(transaction_uid)
        return entry.result if entry is not None else None

    async def wait(self, transaction_uid: str, timeout: float | None) -> CommitmentResult:
        """The report of ``transaction_uid``, waiting up to ``timeout`` seconds for it
        (:class:`CommitmentTimeout` then; the transaction stays pending). Once returned, the
        transaction is forgotten."""
        self._purge()
        entry = self._entries.get(transaction_uid)
        if entry is None:
            raise DicomError(
                f"no storage commitment transaction {transaction_uid} is pending here: it was "
                "never requested by this client, its result was already taken, or it expired"
            )
        entry.waiters += 1
        try:
            if entry.result is None:
                try:
                    with anyio.fail_after(timeout):
                        await entry.arrived.wait()
                except TimeoutError:
                    raise CommitmentTimeout(
                        transaction_uid, timeout or 0.0, entry.pending.expires_at
                    ) from None
        finally:
            entry.waiters -= 1
        result = entry.result
        assert result is not None
        if self._entries.get(transaction_uid) is entry:
            self.discard(transaction_uid)
        return result

    def _purge(self) -> None:
        now = time.time()
        expired = [uid for uid, entry in self._entries.items()
                   if entry.pending.expires_at <= now and not entry.waiters]
        for uid in expired:
            log.info("storage commitment transaction %s expired%s", uid,
                     "" if self._entries[uid].result else " without a report")
            self.discard(uid)

    def _make_room(self) -> None:
        if len(self._entries) < self.max_pending:
            return
        for uid, entry in self._entries.items():
            if not entry.waiters:
                log.warning("storage commitment transaction %s forgotten: %d transactions are "
                            "kept at most", uid, self.max_pending)
                self.discard(uid)
                return
        raise DicomError(
            f"{self.max_pending} storage commitment transactions are being awaited: wait for "
            "some to finish, or raise CommitmentRegistry.max_pending"
        )


def reference_item(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item
