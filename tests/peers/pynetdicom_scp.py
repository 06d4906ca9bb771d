"""pynetdicom SCPs run in-process (threads) as test-only peers, on a free loopback port.

* :class:`EchoScp` - Verification SCP.
* :class:`FindScp` - Q/R C-FIND SCP (Patient Root, Study Root, Patient/Study Only, Modality
  Worklist) answering from a list of datasets or a responder function; it records the
  identifiers it received and every C-CANCEL-RQ, can slow down between responses (so a client
  gets to cancel), and can end with any final status.

Both bind port 0 (the kernel picks a free port: no race) and set TCP_NODELAY on accepted
sockets (pynetdicom never does; Nagle would stall each small response by ~40 ms).
"""

from __future__ import annotations

import fnmatch
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from . import LOOPBACK, check_interop_allowed

__all__ = [
    "CancelRecord",
    "EchoScp",
    "FindScp",
    "PynetdicomScp",
    "Responder",
    "match_identifier",
    "response_identifier",
]

# (status, identifier) pairs, as a pynetdicom C-FIND handler yields them
Responder = Callable[[Dataset], Iterable[tuple[int, Dataset | None]]]

FIND_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root FIND
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root FIND
    "1.2.840.10008.5.1.4.1.2.3.1",  # Patient/Study Only FIND (retired)
    "1.2.840.10008.5.1.4.31",  # Modality Worklist FIND
)
VERIFICATION = "1.2.840.10008.1.1"
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
]


@dataclass(frozen=True)
class CancelRecord:
    message_id_being_responded_to: int
    received_at: float  # time.monotonic()


class PynetdicomScp:
    """Common part: an AE serving on ``host:port`` until :meth:`stop`."""

    def __init__(self, *, ae_title: str, max_pdu: int = 16384, host: str = LOOPBACK) -> None:
        self.ae_title = ae_title
        self.max_pdu = max_pdu
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self.associations = 0  # associations accepted so far
        self.requestor_max_pdus: list[int] = []  # peer's maximum PDU length, per association
        self._ae: Any = None
        self._server: Any = None

    # subclasses add their presentation contexts and handlers
    def _configure(self, ae: Any) -> list[tuple[Any, Callable[..., Any]]]:
        raise NotImplementedError

    def start(self) -> PynetdicomScp:
        from pynetdicom import AE, evt

        check_interop_allowed(f"pynetdicom SCP {self.ae_title}")
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = self.max_pdu
        ae.require_called_aet = False
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.network_timeout = 60
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_ACCEPTED, self._on_accepted),
            *self._configure(ae),
        ]
        self._ae = ae
        self._server = ae.start_server((self.host, 0), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        if self._ae is not None:
            self._ae.shutdown()  # aborts active associations, stops the server threads
            self._ae = None
            self._server = None

    def running(self) -> bool:
        return self._server is not None

    def _on_conn_open(self, event: Any) -> None:
        try:
            sock = event.assoc.dul.socket.socket
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):  # pragma: no cover - best effort
            pass

    def _on_accepted(self, event: Any) -> None:
        with self._lock:
            self.associations += 1
            with_pdu = getattr(event.assoc.requestor, "maximum_length", None)
            if with_pdu is not None:
                self.requestor_max_pdus.append(int(with_pdu))

    def __enter__(self) -> PynetdicomScp:
        return self.start() if not self.running() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ae_title}@{self.host}:{self.port}>"


class EchoScp(PynetdicomScp):
    """Verification SCP; ``echoes`` counts the C-ECHO requests answered."""

    def __init__(
        self,
        *,
        ae_title: str = "ECHOSCP",
        max_pdu: int = 16384,
        status: int = 0x0000,
        host: str = LOOPBACK,
    ) -> None:
        super().__init__(ae_title=ae_title, max_pdu=max_pdu, host=host)
        self.status = status
        self.echoes = 0

    def _configure(self, ae: Any) -> list[tuple[Any, Callable[..., Any]]]:
        from pynetdicom import evt

        ae.add_supported_context(VERIFICATION, TRANSFER_SYNTAXES)
        return [(evt.EVT_C_ECHO, self._on_echo)]

    def _on_echo(self, event: Any) -> int:
        with self._lock:
            self.echoes += 1
        return self.status


class FindScp(PynetdicomScp):
    """C-FIND SCP answering from ``datasets`` (or a ``responder``).

    ``datasets``: candidate records; those matching the identifier (:func:`match_identifier`)
    are answered with the requested keys only (:func:`response_identifier`), in list order.
    ``responder``: instead of ``datasets``, a function identifier -> iterable of
    ``(status, dataset)``; yield pendings (0xFF00/0xFF01) and optionally a final status.
    ``delay``: seconds to sleep before each pending response (lets a client cancel in between).
    ``final_status``: sent after all pendings (default success 0x0000), e.g. 0xA700, 0xC000.
    Records: ``identifiers`` (each C-FIND identifier received), ``cancels`` (each C-CANCEL-RQ
    received, from the DIMSE layer), ``cancelled`` (Message IDs of C-FINDs that stopped with
    FE00 because of a cancel), ``pendings_sent`` (pending responses sent, per request).
    Also serves Verification.
    """

    def __init__(
        self,
        datasets: Sequence[Dataset] = (),
        *,
        responder: Responder | None = None,
        delay: float = 0.0,
        final_status: int = 0x0000,
        ae_title: str = "FINDSCP",
        max_pdu: int = 16384,
        host: str = LOOPBACK,
    ) -> None:
        super().__init__(ae_title=ae_title, max_pdu=max_pdu, host=host)
        self.datasets = list(datasets)
        self.responder = responder
        self.delay = delay
        self.final_status = final_status
        self.identifiers: list[Dataset] = []
        self.cancels: list[CancelRecord] = []
        self.cancelled: list[int] = []
        self.pendings_sent: list[int] = []

    def _configure(self, ae: Any) -> list[tuple[Any, Callable[..., Any]]]:
        from pynetdicom import evt

        ae.add_supported_context(VERIFICATION, TRANSFER_SYNTAXES)
        for uid in FIND_SOP_CLASSES:
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        return [
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_DIMSE_RECV, self._on_dimse_recv),
        ]

    def _on_dimse_recv(self, event: Any) -> None:
        cs = getattr(event.message, "command_set", None)
        if cs is not None and getattr(cs, "CommandField", None) == 0x0FFF:
            with self._lock:
                self.cancels.append(
                    CancelRecord(int(cs.MessageIDBeingRespondedTo), time.monotonic())
                )

    def _answers(self, identifier: Dataset) -> Iterable[tuple[int, Dataset | None]]:
        if self.responder is not None:
            return self.responder(identifier)
        return (
            (0xFF00, response_identifier(identifier, ds))
            for ds in self.datasets
            if match_identifier(identifier, ds)
        )

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        identifier = event.identifier
        msg_id = int(event.request.MessageID)
        with self._lock:
            self.identifiers.append(identifier)
            slot = len(self.pendings_sent)
            self.pendings_sent.append(0)
        for status, ds in self._answers(identifier):
            if self.delay:
                time.sleep(self.delay)
            if event.is_cancelled:
                with self._lock:
                    self.cancelled.append(msg_id)
                yield 0xFE00, None
                return
            if status in (0xFF00, 0xFF01):
                with self._lock:
                    self.pendings_sent[slot] += 1
                yield status, ds
            else:  # a final status from a responder
                yield status, ds
                return
        if event.is_cancelled:
            with self._lock:
                self.cancelled.append(msg_id)
            yield 0xFE00, None
            return
        if self.final_status != 0x0000:
            yield self.final_status, None


# --------------------------------------------------------------------------------------------
# A small, test-grade matcher (single value, wildcard, UID list, range, universal)
# --------------------------------------------------------------------------------------------

_IGNORED = {"QueryRetrieveLevel", "SpecificCharacterSet"}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def match_identifier(identifier: Dataset, candidate: Dataset) -> bool:
    """Whether ``candidate`` matches the non-empty keys of ``identifier`` (sequences ignored)."""
    for elem in identifier:
        kw = elem.keyword
        if not kw or kw in _IGNORED or elem.VR == "SQ" or elem.is_empty:
            continue
        if kw not in candidate:
            return False
        have_elem = candidate[kw]
        haves = (
            [_text(v) for v in have_elem.value] if have_elem.VM > 1 else [_text(have_elem.value)]
        )
        if elem.VR == "UI" and elem.VM > 1:  # UID list
            wanted = {_text(v) for v in elem.value}
            if not any(h in wanted for h in haves):
                return False
            continue
        want = _text(elem.value)
        if elem.VR in ("DA", "TM", "DT") and "-" in want:
            lo, _, hi = want.partition("-")
            if not any((not lo or h >= lo) and (not hi or h[: len(hi)] <= hi) for h in haves):
                return False
            continue
        if "*" in want or "?" in want:
            if not any(fnmatch.fnmatchcase(h, want) for h in haves):
                return False
            continue
        if want not in haves:
            return False
    return True


def response_identifier(identifier: Dataset, candidate: Dataset) -> Dataset:
    """The requested keys (plus QueryRetrieveLevel and Specific Character Set) of a match."""
    out = Dataset()
    if "SpecificCharacterSet" in candidate:
        out.SpecificCharacterSet = candidate.SpecificCharacterSet
    for elem in identifier:
        kw = elem.keyword
        if not kw or kw == "SpecificCharacterSet":
            continue
        if kw == "QueryRetrieveLevel":
            out.QueryRetrieveLevel = elem.value
        elif kw in candidate:
            out[elem.tag] = candidate[elem.tag]
        else:
            out[elem.tag] = elem
    return out
