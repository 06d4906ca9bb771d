"""Routes C-STORE deliveries arriving at our acceptor to the C-MOVE that caused them.

A PACS performing a C-MOVE opens its own association to us, so nothing on that association says
which of our moves it serves except, when the sender fills them in, Move Originator AE Title and
Move Originator Message ID. A delivery goes to a move only when

* it comes from the PACS the move was sent to: its calling AE title is the AE title we called,
  and its source address the one we connected to (any loopback address counting as one; not
  checked when :attr:`AccessPolicy.check_delivery_address` is off);
* it carries the move's Message ID as Move Originator Message ID, with our AE title as Move
  Originator AE Title, or none, or the sender's own (pynetdicom 3.0.4 names itself there).

Our C-MOVE Message IDs are unique across the whole client and drawn at random, so that another
AE cannot guess them from 1. Deliveries without a Move Originator Message ID are matched by the
UIDs the move asked for only when :attr:`AccessPolicy.deliveries_by_uids` says so, among the
moves sent to that PACS: only a single move whose identifier the instance satisfies gets it.
Anything else is refused (0x0124, not authorized) or handed to the client's handler for
unexpected deliveries (a quarantine): a wrong guess would put an instance into a result that
never asked for it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

from pydicom import Dataset

from aiodicom.acceptor import IncomingStore
from aiodicom.access import AccessPolicy, same_host
from aiodicom.dimse import DimseMessage
from aiodicom.errors import DicomError
from aiodicom.instance import Instance
from aiodicom.negotiation import PresentationContext
from aiodicom.reassembly import DataSetOpener
from aiodicom.services.storage_scp import (
    Recipient,
    SinkHandler,
    data_opener,
    receive_store,
)
from aiodicom.status import Status

log = logging.getLogger("aiodicom.routing")


UnexpectedHandler = Callable[[Instance], Awaitable[int]]
"""Takes a delivery no move expects; returns the C-STORE status to answer with."""


class ExpectedMove(Recipient, Protocol):
    """A C-MOVE to us as the router sees it (a :class:`~aiodicom.services.retrieve.Retrieval`
    is one): what tells its deliveries apart, and what takes them."""

    @property
    def message_id(self) -> int | None: ...
    @property
    def peer_ae_title(self) -> str | None:
        """The AE title of the PACS performing the move."""
    @property
    def calling_ae_title(self) -> str | None:
        """Our own AE title on the move's association."""
    @property
    def peer_address(self) -> str | None:
        """The IP address of the PACS on the move's association (``None`` when unknown)."""
    @property
    def identifier(self) -> Dataset: ...

    async def accept_instance(self, instance: Instance) -> int:
        """Take a delivery; the C-STORE status to answer it with."""


class DeliveryRouter:
    """Which active C-MOVE a delivery reaching our acceptor belongs to (see the module
    docstring); a :class:`~aiodicom.services.storage_scp.StoreRouting` for the acceptor."""

    def __init__(self, access: AccessPolicy | None = None) -> None:
        self._moves: dict[int, ExpectedMove] = {}
        self.access = access if access is not None else AccessPolicy()
        self.unexpected: UnexpectedHandler | None = None

    @property
    def active(self) -> int:
        """C-MOVEs currently expecting deliveries."""
        return len(self._moves)

    def allocate_message_id(self) -> int:
        """A C-MOVE Message ID no active move of this client uses, drawn at random (1-65535):
        a delivery naming one must not be forgeable by counting from 1."""
        start = secrets.randbelow(0xFFFF)
        for offset in range(0xFFFF):
            candidate = (start + offset) % 0xFFFF + 1
            if candidate not in self._moves:
                return candidate
        raise DicomError("65535 moves active: no Message ID left")

    @asynccontextmanager
    async def expecting(self, move: ExpectedMove) -> AsyncIterator[None]:
        """Route deliveries to ``move`` (by its ``message_id``) for the life of the block."""
        message_id = move.message_id
        assert message_id is not None
        if self._moves.get(message_id, move) is not move:
            # Only when a shared association handed out another ID than the router's.
            raise DicomError(
                f"C-MOVE Message ID {message_id} is already used by another active move of this "
                "client: its deliveries could not be told apart"
            )
        self._moves[message_id] = move
        try:
            yield
        finally:
            if self._moves.get(message_id) is move:
                del self._moves[message_id]

    def route(
        self, command: Mapping[str, object], calling_ae_title: str, instance: Instance,
        peer_address: str | None = None,
    ) -> ExpectedMove | None:
        """The active move a delivery belongs to, or ``None``."""
        move = self._route_by_command(command, calling_ae_title, peer_address)
        if move is not None or not self.access.deliveries_by_uids:
            return move
        if isinstance(command.get("MoveOriginatorMessageID"), int):
            return None  # it names a move: the name decides, never the UIDs
        return self._by_uids(self._sent_to(calling_ae_title, peer_address), instance)

    def _sent_to(self, calling_ae_title: str, peer_address: str | None) -> list[ExpectedMove]:
        """The active moves sent to the PACS a delivery comes from."""
        check_address = self.access.check_delivery_address
        return [
            move for move in self._moves.values()
            if move.peer_ae_title == calling_ae_title and (
                not check_address or move.peer_address is None
                or same_host(move.peer_address, peer_address)
            )
        ]

    def _route_by_command(
        self, command: Mapping[str, object], calling_ae_title: str, peer_address: str | None,
        *, log_refusal: bool = True,
    ) -> ExpectedMove | None:
        """The move the Move Originator fields name, if the delivery comes from its PACS."""
        originator_id = command.get("MoveOriginatorMessageID")
        if not isinstance(originator_id, int):
            return None
        originator_ae = str(command.get("MoveOriginatorApplicationEntityTitle") or "").strip()
        named = self._moves.get(originator_id)
        if named is None:
            return None
        if named not in self._sent_to(calling_ae_title, peer_address):
            if log_refusal:
                log.warning(
                    "C-STORE from %s at %s names C-MOVE %d, which was sent to %s at %s: not "
                    "given to it", calling_ae_title, peer_address, originator_id,
                    named.peer_ae_title, named.peer_address,
                )
            return None
        # The originator is us; pynetdicom (3.0.4) names itself, the sender, instead.
        if originator_ae in ("", named.calling_ae_title, calling_ae_title):
            return named
        return None  # a C-MOVE some other AE asked for, with us as its destination

    def opener(
        self, contexts: Mapping[int, PresentationContext], calling_ae_title: str,
        peer_address: str | None = None,
    ) -> DataSetOpener:
        """For an incoming association: write deliveries straight to their move's directory,
        when the command alone tells which move they belong to."""
        return data_opener(_FromPeer(self, peer_address), contexts, calling_ae_title)

    async def handle(self, incoming: IncomingStore) -> DimseMessage:
        """The acceptor's store handler: receive one delivery, routed here."""
        return await receive_store(
            incoming.message, incoming.context, incoming.calling_ae_title,
            _FromPeer(self, incoming.peer_address), incoming.limits,
        )

    def recipient_by_command(
        self, command: Mapping[str, object], source_ae_title: str,
        peer_address: str | None = None,
    ) -> Recipient | None:
        """The move the Move Originator fields name; with no move active, the handler of
        unexpected deliveries when it keeps them in a sink (nothing arriving can be a move's)."""
        # Logged once, when the delivery is refused, not also here before its data set.
        move = self._route_by_command(command, source_ae_title, peer_address, log_refusal=False)
        if move is not None:
            return move
        unexpected = self.unexpected
        if not self._moves and isinstance(unexpected, SinkHandler):
            return unexpected
        return None

    async def deliver(
        self, command: Mapping[str, object], source_ae_title: str, instance: Instance,
        peer_address: str | None = None,
    ) -> int:
        """Hand a delivery to its move, else to the handler of unexpected deliveries; refused
        (not authorized) when there is neither."""
        move = self.route(command, source_ae_title, instance, peer_address)
        if move is not None:
            return await move.accept_instance(instance)
        if self.unexpected is not None:
            return await self.unexpected(instance)
        log.warning(
            "refused %s from %s: no active C-MOVE expects it",
            instance.sop_instance_uid, source_ae_title,
        )
        return Status.NOT_AUTHORIZED

    @staticmethod
    def _by_uids(candidates: list[ExpectedMove], instance: Instance) -> ExpectedMove | None:
        if not candidates:
            return None
        try:
            study_uid, series_uid = instance.peek_uids()
        except DicomError:
            return None
        have = {
            "SOPInstanceUID": instance.sop_instance_uid,
            "SeriesInstanceUID": series_uid,
            "StudyInstanceUID": study_uid,
        }
        matching = []
        for move in candidates:
            identifier = move.identifier
            ok = True
            for keyword, value in have.items():
                asked = identifier.get(keyword)
                if asked is None or asked == "":
                    continue
                asked_set = {asked} if isinstance(asked, str) else {str(v) for v in asked}
                if value not in asked_set:
                    ok = False
                    break
            if ok:
                matching.append(move)
        return matching[0] if len(matching) == 1 else None


class _FromPeer:
    """The router as the :class:`~aiodicom.services.storage_scp.StoreRouting` of one incoming
    association: every delivery on it comes from one source address."""

    def __init__(self, router: DeliveryRouter, peer_address: str | None) -> None:
        self._router = router
        self._peer_address = peer_address

    def recipient_by_command(
        self, command: Mapping[str, object], source_ae_title: str
    ) -> Recipient | None:
        return self._router.recipient_by_command(command, source_ae_title, self._peer_address)

    async def deliver(
        self, command: Mapping[str, object], source_ae_title: str, instance: Instance
    ) -> int:
        return await self._router.deliver(command, source_ae_title, instance, self._peer_address)


__all__ = ["DeliveryRouter", "ExpectedMove", "UnexpectedHandler"]
