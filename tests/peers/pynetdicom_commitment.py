"""A pynetdicom Storage Commitment SCP (Push Model) as a test-only peer.

It answers each N-ACTION-RQ (Request Storage Commitment) with success, then reports with an
N-EVENT-REPORT-RQ, from a thread of its own (pynetdicom pauses the association's reactor to send,
which it cannot do from inside the N-ACTION handler):

* ``report_on="same-association"``: on the request's association, once the N-ACTION-RSP is out;
* ``report_on="new-association"``: on a new association to ``report_to`` (host, port), with
  the calling AE title of the request as called AE title, proposing the SCP role (PS3.4 J.3.3).

With ``storage=True`` it is also a Storage SCP (CT, MR, Secondary Capture) that holds (in
memory, the SOP Instance UID only) what it receives. Instances in ``held`` (SOP Instance UIDs)
are committed; the others fail with 0x0112 "no such
object instance", or with the reason ``reasons`` gives for them. ``transaction_uid`` reports
under that Transaction UID instead of the request's (an SCU must refuse it). ``reports``
records each report sent: (Transaction UID, event type, status the SCU answered).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydicom.dataset import Dataset

from . import LOOPBACK
from .pynetdicom_scp import TRANSFER_SYNTAXES, VERIFICATION, PynetdicomScp

__all__ = ["STORAGE_COMMITMENT", "CommitmentScp"]

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
)


class CommitmentScp(PynetdicomScp):
    def __init__(
        self,
        *,
        held: Iterable[str] = (),
        reasons: Mapping[str, int] | None = None,
        report_on: Literal["same-association", "new-association"] = "same-association",
        report_to: tuple[str, int] | None = None,
        transaction_uid: str | None = None,
        storage: bool = False,
        ae_title: str = "COMMITSCP",
        max_pdu: int = 16384,
        host: str = LOOPBACK,
    ) -> None:
        super().__init__(ae_title=ae_title, max_pdu=max_pdu, host=host)
        self.held = set(held)
        self.reasons = dict(reasons or {})
        self.report_on = report_on
        self.report_to = report_to
        self.transaction_uid = transaction_uid
        self.storage = storage
        self.reports: list[tuple[str, int, int | None]] = []
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []

    def _configure(self, ae: Any) -> list[tuple[Any, Callable[..., Any]]]:
        from pynetdicom import evt

        ae.add_supported_context(VERIFICATION, TRANSFER_SYNTAXES)
        ae.add_supported_context(STORAGE_COMMITMENT, TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_N_ACTION, self._on_action), (evt.EVT_C_ECHO, lambda event: 0x0000)]
        if self.storage:
            for uid in STORAGE_CLASSES:
                ae.add_supported_context(uid, TRANSFER_SYNTAXES)
            handlers.append((evt.EVT_C_STORE, self._on_store))
        return handlers

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.held.add(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def report_for(self, request: Dataset) -> tuple[int, Dataset]:
        report = Dataset()
        report.TransactionUID = self.transaction_uid or request.TransactionUID
        committed, failed = [], []
        for item in request.get("ReferencedSOPSequence", []):
            uid = str(item.ReferencedSOPInstanceUID)
            out = Dataset()
            out.ReferencedSOPClassUID = item.ReferencedSOPClassUID
            out.ReferencedSOPInstanceUID = uid
            if uid in self.held and uid not in self.reasons:
                committed.append(out)
            else:
                out.FailureReason = self.reasons.get(uid, 0x0112)
                failed.append(out)
        if committed:
            report.ReferencedSOPSequence = committed
        if failed:
            report.FailedSOPSequence = failed
        return (2 if failed else 1), report

    def _on_action(self, event: Any) -> tuple[int, Dataset | None]:
        if event.action_type != 1:
            return 0x0123, None
        request = event.action_information
        event_type, report = self.report_for(request)
        if self.report_on == "same-association":
            target = self._same_association
            args: tuple[Any, ...] = (event.assoc, event_type, report)
        else:
            target = self._new_association
            args = (event.assoc.requestor.ae_title, event_type, report)
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()
        return 0x0000, None

    def _record(self, report: Dataset, event_type: int, status: Any) -> None:
        code = getattr(status, "Status", None)
        with self._lock:
            self.reports.append((str(report.TransactionUID), event_type,
                                 int(code) if code is not None else None))

    def _same_association(self, assoc: Any, event_type: int, report: Dataset) -> None:
        try:
            status, _ = assoc.send_n_event_report(
                report, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
            )
            self._record(report, event_type, status)
        except Exception as exc:  # recorded for the test to show
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _new_association(self, calling_ae: str, event_type: int, report: Dataset) -> None:
        from pynetdicom import AE, build_role

        try:
            assert self.report_to is not None, "report_to=(host, port) is needed"
            ae = AE(ae_title=self.ae_title)
            ae.add_requested_context(STORAGE_COMMITMENT, TRANSFER_SYNTAXES)
            role = build_role(STORAGE_COMMITMENT, scu_role=False, scp_role=True)
            assoc = ae.associate(
                self.report_to[0], self.report_to[1], ae_title=calling_ae.strip(),
                ext_neg=[role],
            )
            if not assoc.is_established:
                self.errors.append("association for the report not established")
                return
            try:
                status, _ = assoc.send_n_event_report(
                    report, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
                )
                self._record(report, event_type, status)
            finally:
                assoc.release()
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        for thread in self._threads:
            thread.join(timeout=30)
        super().stop()
