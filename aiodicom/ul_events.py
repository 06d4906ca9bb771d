"""What the Upper Layer state machine (:mod:`aiodicom.statemachine`) reports: its states
(PS3.8 Tables 9-1 to 9-5) and the events it hands its user. Kept apart from the machine so
that the table and its actions have the room of a module of their own; the machine's module
exports all of these too.

The one list of these names is ``aiodicom.statemachine.__all__`` (as ``aiodicom.pdu``'s is for
:mod:`aiodicom.pdu_types`): mypy reads only a literal ``__all__``, so the module that re-exports
them has to spell them out, and this one keeps no second copy."""

from __future__ import annotations

import enum
from typing import Final

import attrs

from aiodicom.pdu_types import (
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    PDataTF,
    describe_abort,
)


class State(enum.Enum):
    """The states of PS3.8 Tables 9-1 to 9-5, named as there."""

    Sta1 = 1
    Sta2 = 2
    Sta3 = 3
    Sta4 = 4
    Sta5 = 5
    Sta6 = 6
    Sta7 = 7
    Sta8 = 8
    Sta9 = 9
    Sta10 = 10
    Sta11 = 11
    Sta12 = 12
    Sta13 = 13

    @property
    def description(self) -> str:
        return _STATE_DESCRIPTIONS[self]


_STATE_DESCRIPTIONS: Final = {
    State.Sta1: "idle",
    State.Sta2: "transport connection open, awaiting A-ASSOCIATE-RQ PDU",
    State.Sta3: "awaiting local A-ASSOCIATE response primitive",
    State.Sta4: "awaiting transport connection opening to complete",
    State.Sta5: "awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU",
    State.Sta6: "association established and ready for data transfer",
    State.Sta7: "awaiting A-RELEASE-RP PDU",
    State.Sta8: "awaiting local A-RELEASE response primitive",
    State.Sta9: "release collision requestor side, awaiting A-RELEASE response primitive",
    State.Sta10: "release collision acceptor side, awaiting A-RELEASE-RP PDU",
    State.Sta11: "release collision requestor side, awaiting A-RELEASE-RP PDU",
    State.Sta12: "release collision acceptor side, awaiting A-RELEASE response primitive",
    State.Sta13: "awaiting transport connection close (association no longer exists)",
}


# --- events for the user --------------------------------------------------------------------


@attrs.frozen
class Event:
    """Base class of everything :class:`AssociationStateMachine` reports."""


@attrs.frozen
class AssociateRequestReceived(Event):
    """A-ASSOCIATE indication (acceptor, AE-6): answer with ``accept()`` or ``reject()``."""

    request: AssociateRQ


@attrs.frozen
class AssociateAccepted(Event):
    """A-ASSOCIATE confirmation, accepted (requestor, AE-3)."""

    response: AssociateAC


@attrs.frozen
class AssociateRejected(Event):
    """A-ASSOCIATE confirmation, rejected (requestor, AE-4); the transport is to be closed."""

    response: AssociateRJ


@attrs.frozen
class DataReceived(Event):
    """P-DATA indication (DT-2, AR-6)."""

    pdu: PDataTF


@attrs.frozen
class ReleaseRequested(Event):
    """A-RELEASE indication: answer with ``release_response()``.

    ``collision`` is true when we had asked for the release ourselves too (AR-8).
    """

    collision: bool = False


@attrs.frozen
class ReleaseConfirmed(Event):
    """A-RELEASE confirmation (AR-3, AR-10)."""


@attrs.frozen
class Aborted(Event):
    """A-ABORT or A-P-ABORT indication: the association is gone.

    ``by_peer`` is true when the peer sent A-ABORT (``source`` and ``reason`` are then its
    values). Otherwise our provider gave up: ``source`` is 2 and ``reason`` what we sent in our
    A-ABORT, or ``connection_lost`` is true when the transport closed under the association.
    ``detail`` says what happened, for logs.
    """

    source: int
    reason: int
    by_peer: bool
    connection_lost: bool = False
    detail: str = attrs.field(default="", eq=False)

    @property
    def description(self) -> str:
        if self.connection_lost:
            return "the connection closed before the association ended"
        return describe_abort(self.source, self.reason)


@attrs.frozen
class ConnectionClosed(Event):
    """The transport closed where PS3.8 expects it (Sta13 by AR-5, Sta2 by AA-5).

    Not to be confused with :class:`aiodicom.errors.ConnectionClosed`, the exception.
    """
