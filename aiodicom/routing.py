"""Routes C-STORE deliveries arriving at our acceptor to the C-MOVE that caused them.

A PACS performing a C-MOVE opens its own association to us, so nothing on that association says
which of our moves it serves except, when the sender fills them in, Move Originator AE Title and
Move Originator Message ID. Our C-MOVE Message IDs are unique across the whole client, so the
Message ID alone identifies the move. Senders that leave them out are matched by the sending AE
and by the study/series/instance UIDs the move asked for.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiodicom.acceptor import IncomingStore
from aiodicom.dimse import DimseMessage
from aiodicom.errors import DicomError
from aiodicom.fileio import peek_elements
from aiodicom.instance import Instance
from aiodicom.services.retrieve import Retrieval, instance_from_request, store_response

log = logging.getLogger("aiodicom.routing")

STUDY_UID, SERIES_UID = 0x0020000D, 0x0020000E
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.8: the association is fine, this delivery is not wanted

UnexpectedHandler = Callable[[Instance], Awaitable[int]]
"""Takes a delivery no move expects; returns the C-STORE status to answer with."""


class DeliveryRouter:
    def __init__(self) -> None:
        self._moves: dict[int, Retrieval] = {}
        self._next_id = 0
        self.unexpected: UnexpectedHandler | None = None

    def allocate_message_id(self) -> int:
        """A C-MOVE Message ID no active move of this client uses."""
        for _ in range(0xFFFF):
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._moves:
                return self._next_id
        raise DicomError("65535 moves active: no Message ID left")

    @asynccontextmanager
    async def expecting(self, move: Retrieval) -> AsyncIterator[None]:
        assert move.message_id is not None
        self._moves[move.message_id] = move
        try:
            yield
        finally:
            self._moves.pop(move.message_id, None)

    def _route(self, incoming: IncomingStore, instance: Instance) -> Retrieval | None:
        command = incoming.message.command
        originator_id = command.get("MoveOriginatorMessageID")
        if isinstance(originator_id, int) and originator_id in self._moves:
            return self._moves[originator_id]
        candidates = [
            move for move in self._moves.values()
            if move.peer_ae_title in (None, incoming.calling_ae_title)
        ] or list(self._moves.values())
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        return self._by_uids(candidates, instance)

    @staticmethod
    def _by_uids(candidates: list[Retrieval], instance: Instance) -> Retrieval | None:
        try:
            uids = peek_elements(instance.data, instance.transfer_syntax_uid, (STUDY_UID, SERIES_UID))
        except DicomError:
            return None
        wanted = {
            "SOPInstanceUID": {instance.sop_instance_uid},
            "SeriesInstanceUID": {uids.get(SERIES_UID)},
            "StudyInstanceUID": {uids.get(STUDY_UID)},
        }
        matching = []
        for move in candidates:
            identifier = move.identifier
            ok = True
            for keyword, values in wanted.items():
                asked = identifier.get(keyword)
                if asked in (None, ""):
                    continue
                asked_set = {asked} if isinstance(asked, str) else {str(v) for v in asked}
                if not values & asked_set:
                    ok = False
                    break
            if ok:
                matching.append(move)
        return matching[0] if len(matching) == 1 else None

    async def handle(self, incoming: IncomingStore) -> DimseMessage:
        request = incoming.message
        transfer_syntax = incoming.context.transfer_syntax or ""
        try:
            instance = instance_from_request(request, transfer_syntax, incoming.calling_ae_title)
        except DicomError as exc:
            log.warning("malformed C-STORE from %s: %s", incoming.calling_ae_title, exc)
            return store_response(request, 0xC000)
        move = self._route(incoming, instance)
        if move is not None:
            return store_response(request, await move.accept_instance(instance))
        if self.unexpected is not None:
            return store_response(request, await self.unexpected(instance))
        log.warning(
            "refused %s from %s: no active C-MOVE expects it",
            instance.sop_instance_uid, incoming.calling_ae_title,
        )
        return store_response(request, NOT_AUTHORIZED)


__all__ = ["DeliveryRouter", "UnexpectedHandler"]
