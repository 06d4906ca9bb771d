"""Routes C-STORE deliveries arriving at our acceptor to the C-MOVE that caused them.

A PACS performing a C-MOVE opens its own association to us, so nothing on that association says
which of our moves it serves except, when the sender fills them in, Move Originator AE Title and
Move Originator Message ID. Our C-MOVE Message IDs are unique across the whole client, so the
Message ID alone identifies the move. Senders that leave them out are matched by the UIDs the
move asked for, among the moves from the sending AE first, then among all: only a single move
whose identifier the instance satisfies gets it. Anything else is refused (or handed to the
client's handler for unexpected deliveries): a wrong guess would put an instance into a result
that never asked for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

from pydicom import Dataset

from aiodicom.acceptor import IncomingStore
from aiodicom.dimse import DataSetOpener, DimseMessage
from aiodicom.errors import DicomError
from aiodicom.fileio import peek_elements
from aiodicom.instance import Instance
from aiodicom.negotiation import PresentationContext
from aiodicom.services.storage_scp import (
    Recipient,
    SinkHandler,
    data_opener,
    receive_store,
)
from aiodicom.status import Status

log = logging.getLogger("aiodicom.routing")

STUDY_UID, SERIES_UID = 0x0020000D, 0x0020000E

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
    def identifier(self) -> Dataset: ...

    async def accept_instance(self, instance: Instance) -> int:
        """Take a delivery; the C-STORE status to answer it with."""


class DeliveryRouter:
    """Which active C-MOVE a delivery reaching our acceptor belongs to (see the module
    docstring); a :class:`~aiodicom.services.storage_scp.StoreRouting` for the acceptor."""

    def __init__(self) -> None:
        self._moves: dict[int, ExpectedMove] = {}
        self._next_id = 0
        self.unexpected: UnexpectedHandler | None = None

    @property
    def active(self) -> int:
        """C-MOVEs currently expecting deliveries."""
        return len(self._moves)

    def allocate_message_id(self) -> int:
        """A C-MOVE Message ID no active move of this client uses."""
        for _ in range(0xFFFF):
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._moves:
                return self._next_id
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

    def route(self, command: Mapping[str, object], calling_ae_title: str,
              instance: Instance) -> ExpectedMove | None:
        """The active move a delivery belongs to, or ``None``."""
        move, decided = self._route_by_originator(command, calling_ae_title)
        if decided:
            return move
        moves = list(self._moves.values())
        from_sender = [move for move in moves if move.peer_ae_title == calling_ae_title]
        return self._by_uids(from_sender, instance) or self._by_uids(moves, instance)

    def _route_by_originator(
        self, command: Mapping[str, object], calling_ae_title: str
    ) -> tuple[ExpectedMove | None, bool]:
        """Route by the Move Originator fields alone: (move, True) when they decide it."""
        originator_id = command.get("MoveOriginatorMessageID")
        originator_ae = str(command.get("MoveOriginatorApplicationEntityTitle") or "").strip()
        if isinstance(originator_id, int):
            move = self._moves.get(originator_id)
            if move is not None and (
                originator_ae in ("", move.calling_ae_title)
                # pynetdicom (3.0.4) names itself, not the C-MOVE SCU, as the originator.
                or (originator_ae == calling_ae_title == move.peer_ae_title)
            ):
                return move, True
            if originator_ae not in ("", calling_ae_title, *self._our_titles()):
                return None, True  # a C-MOVE some other AE asked for, with us as destination
        return None, False

    def opener(
        self, contexts: Mapping[int, PresentationContext], calling_ae_title: str
    ) -> DataSetOpener:
        """For an incoming association: write deliveries straight to their move's directory,
        when the command alone tells which move they belong to."""
        return data_opener(self, contexts, calling_ae_title)

    async def handle(self, incoming: IncomingStore) -> DimseMessage:
        """The acceptor's store handler: receive one delivery, routed here."""
        return await receive_store(
            incoming.message, incoming.context, incoming.calling_ae_title, self, incoming.limits
        )

    def recipient_by_command(
        self, command: Mapping[str, object], source_ae_title: str
    ) -> Recipient | None:
        """The move the Move Originator fields name; with no move active, the handler of
        unexpected deliveries when it keeps them in a sink (nothing arriving can be a move's)."""
        move, _ = self._route_by_originator(command, source_ae_title)
        if move is not None:
            return move
        unexpected = self.unexpected
        if not self._moves and isinstance(unexpected, SinkHandler):
            return unexpected
        return None

    async def deliver(
        self, command: Mapping[str, object], source_ae_title: str, instance: Instance
    ) -> int:
        """Hand a delivery to its move, else to the handler of unexpected deliveries; refused
        (not authorized) when there is neither."""
        move = self.route(command, source_ae_title, instance)
        if move is not None:
            return await move.accept_instance(instance)
        if self.unexpected is not None:
            return await self.unexpected(instance)
        log.warning(
            "refused %s from %s: no active C-MOVE expects it",
            instance.sop_instance_uid, source_ae_title,
        )
        return Status.NOT_AUTHORIZED

    def _our_titles(self) -> set[str]:
        return {move.calling_ae_title for move in self._moves.values() if move.calling_ae_title}

    @staticmethod
    def _by_uids(candidates: list[ExpectedMove], instance: Instance) -> ExpectedMove | None:
        if not candidates:
            return None
        try:
            uids = peek_elements(
                instance.data, instance.transfer_syntax_uid, (STUDY_UID, SERIES_UID)
            )
        except DicomError:
            return None
        have = {
            "SOPInstanceUID": instance.sop_instance_uid,
            "SeriesInstanceUID": uids.get(SERIES_UID),
            "StudyInstanceUID": uids.get(STUDY_UID),
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


__all__ = ["DeliveryRouter", "ExpectedMove", "UnexpectedHandler"]
