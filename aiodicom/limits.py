"""What a peer talking to our acceptor may cost us: the :class:`Limits` value, and the gate that
counts associations against it.

An acceptor (the client's Storage SCP, the embedded Q/R SCP) listens on a hospital network: any
host that reaches the port can open connections and send whatever it likes. Every resource such
a peer can make us hold is bounded here, by a value with safe defaults, so that a flood of
misbehaving connections costs bounded memory, descriptors and time and never takes the service
down for the legitimate peers.

Timeouts that bound how long *we* wait for a peer we called (connect, ACSE, DIMSE responses)
stay in :class:`~aiodicom.Timeouts`, as does ARTIM (a PS3.8 timer of both sides). What bounds a
peer that called *us* (the idle time of an incoming association, the minimum rate at which a
PDU must arrive) is here: those defaults must be finite for a listener, whereas an SCU waiting
for a slow PACS may legitimately wait for ever between responses (``Timeouts.network=None``).
"""

from __future__ import annotations

import attrs

from aiodicom.pdu_types import AssociateRJ

__all__ = ["LOCAL_LIMIT_EXCEEDED", "AssociationGate", "Limits"]

LOCAL_LIMIT_EXCEEDED = AssociateRJ(result=2, source=3, reason=2)
"""The A-ASSOCIATE-RJ past a limit: transient, ACSE service-provider (presentation related),
local limit exceeded (PS3.8 9.3.4)."""

_KIB = 1 << 10
_MIB = 1 << 20


_positive = attrs.validators.gt(0)
_positive_seconds = attrs.validators.gt(0.0)


@attrs.frozen
class Limits:
    """Bounds on what peers opening associations to us may make us hold (see the module
    docstring). Every field has a safe default; raise one only for a peer you trust.

    ``max_associations``: connections served at once (associated or still negotiating). Past
    it, the oldest connection still negotiating after a second is closed to make room; if
    there is none, the new connection is answered with an A-ASSOCIATE-RJ (transient, "local
    limit exceeded") at once, without reading what it sends, and closed.
    ``max_associations_per_address``: the same, per source IP address.
    ``max_associations_per_ae``: associations at once per calling AE title; past it the
    A-ASSOCIATE-RQ is answered with that same rejection.
    ``max_command_bytes``: the largest command set accepted (command sets are a few hundred
    bytes; one sent in fragments without end would otherwise grow without limit). Larger: the
    association is aborted.
    ``max_data_set_memory``: data set bytes held in memory while a message arrives; beyond
    them the data set goes to a temporary file (``spool_directory``, default the system's
    temporary directory), whatever the receiving path.
    ``max_inflated_bytes``: the most a Deflated Explicit VR Little Endian data set is inflated
    to read a few of its elements (Study and Series Instance UIDs, SOP Instance UID); a data set
    whose elements lie further is refused (a decompression bomb inflates a thousandfold).
    ``idle_timeout``: seconds an incoming association may send nothing while no operation of
    it is running; then it is aborted.
    ``min_receive_rate`` (bytes per second) and ``pdu_grace`` (seconds): a PDU that has started
    to arrive must be complete after ``pdu_grace + size / min_receive_rate`` seconds of waiting
    for it, else the association is aborted: a peer trickling a byte at a time cannot hold a
    connection by never being idle.
    ``max_remembered_paths``: as the client's store for unexpected deliveries (a long-running
    storage SCP), a :class:`~aiodicom.DirectorySink` remembers the paths of only this many most
    recent instances (``paths``), so that its memory stays bounded.
    """

    max_associations: int = attrs.field(default=256, validator=_positive)
    max_associations_per_address: int = attrs.field(default=32, validator=_positive)
    max_associations_per_ae: int = attrs.field(default=32, validator=_positive)
    max_command_bytes: int = attrs.field(default=64 * _KIB, validator=_positive)
    max_data_set_memory: int = attrs.field(default=256 * _KIB, validator=_positive)
    spool_directory: str | None = None
    max_inflated_bytes: int = attrs.field(default=1 * _MIB, validator=_positive)
    idle_timeout: float = attrs.field(validator=_positive_seconds, default=60.0)
    min_receive_rate: float = attrs.field(validator=_positive_seconds, default=1024.0)
    pdu_grace: float = attrs.field(validator=_positive_seconds, default=10.0)
    max_remembered_paths: int = attrs.field(default=10_000, validator=_positive)

    def pdu_budget(self, size: int) -> float:
        """Seconds of waiting a PDU of ``size`` bytes (0: size not known yet) may take."""
        return self.pdu_grace + size / self.min_receive_rate


class AssociationGate:
    """Counts the connections an acceptor serves, by source address and by calling AE title,
    against :class:`Limits`. Plain counters: everything runs on one event loop."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self._by_address: dict[str, int] = {}
        self._by_ae: dict[str, int] = {}

    def enter_address(self, address: str) -> bool:
        """Count a new connection from ``address``; ``False`` (nothing counted) past a limit."""
        held = self._by_address.get(address, 0)
        if (
            self.total >= self.limits.max_associations
            or held >= self.limits.max_associations_per_address
        ):
            return False
        self.total += 1
        self._by_address[address] = held + 1
        return True

    def full_in_total(self, address: str) -> bool:
        """Only the total limit keeps out a connection from ``address``."""
        return (
            self.total >= self.limits.max_associations
            and self._by_address.get(address, 0) < self.limits.max_associations_per_address
        )

    def leave_address(self, address: str) -> None:
        self.total -= 1
        _decrement(self._by_address, address)

    def enter_ae(self, ae_title: str) -> bool:
        """Count an association of ``ae_title``; ``False`` (nothing counted) past its limit."""
        held = self._by_ae.get(ae_title, 0)
        if held >= self.limits.max_associations_per_ae:
            return False
        self._by_ae[ae_title] = held + 1
        return True

    def leave_ae(self, ae_title: str) -> None:
        _decrement(self._by_ae, ae_title)


def _decrement(counts: dict[str, int], key: str) -> None:
    # Entries at zero are removed: a table keyed by what peers send must not keep them all.
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
