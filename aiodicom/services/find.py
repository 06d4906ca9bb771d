"""C-FIND SCU (PS3.4 C.4.1 and K): matches stream as an async iterator.

``Find`` is both an async iterator and an async context manager. Its iterator is an async
generator, so leaving an ``async for`` early (the generator is then closed), leaving ``async
with``, a cancelled task or a timeout all run the same ``finally``: C-CANCEL-RQ for our Message ID,
then a bounded wait for the final response (the association stays usable), or A-ABORT when the
peer does not answer in time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import attrs
from pydicom import Dataset

from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.dimse import C_CANCEL_RQ, C_FIND_RQ, DATASET_PRESENT, NO_DATASET, DimseMessage
from aiodicom.errors import StatusError
from aiodicom.matching import contradictions, missing_matching_keys
from aiodicom.query import Query
from aiodicom.status import StatusCategory, status_category, status_meaning

if TYPE_CHECKING:
    from aiodicom.session import Session

log = logging.getLogger("aiodicom.find")

CANCEL_TIMEOUT = 10.0
"""How long a cancelled operation waits for the peer's final response before aborting."""


@attrs.frozen
class FindResult:
    """How a C-FIND ended."""

    status: int
    status_text: str
    error_comment: str | None = None
    matches: int = 0
    optional_keys_unsupported: bool = False
    """A pending response said 0xFF01: the peer does not support some optional keys."""
    cancelled: bool = False
    """We sent C-CANCEL (early exit, cancellation or timeout)."""
    truncated: bool = False
    """The peer ended with 0xFE00 though we never cancelled (its result limits were hit)."""
    ignored_keys: tuple[str, ...] = ()
    """Matching keys that came back in no response: the peer most likely ignored them."""
    contradicting: int = 0
    """Responses whose values contradict a matching key (dropped when ``strict=True``)."""

    @property
    def warnings(self) -> tuple[str, ...]:
        notes = []
        if self.truncated:
            notes.append("results truncated by the peer (final status FE00 without a cancel)")
        if self.ignored_keys:
            notes.append(
                "the peer ignored matching key(s) " + ", ".join(self.ignored_keys)
                + ": they were neither matched nor returned"
            )
        if self.optional_keys_unsupported:
            notes.append("the peer does not support some optional keys (status FF01)")
        if self.contradicting:
            notes.append(f"{self.contradicting} response(s) contradict the query")
        return tuple(notes)


class FindError(StatusError):
    """C-FIND ended with a failure status; ``result`` says what had arrived."""

    def __init__(self, result: FindResult) -> None:
        super().__init__(result.status, result.status_text, result.error_comment)
        self.result = result


class Find:
    """A C-FIND in progress: ``async for match in find`` yields each match as a ``Dataset``."""

    def __init__(
        self,
        query: Query,
        *,
        session: Session | None = None,
        open_session: Callable[[], AbstractAsyncContextManager[Session]] | None = None,
        strict: bool = False,
        relational: bool = False,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
    ) -> None:
        if (session is None) == (open_session is None):
            raise TypeError("give exactly one of session and open_session")
        query.validate(relational=relational)
        self.query = query
        self._session = session
        self._open_session = open_session
        self.strict = strict
        self.priority = priority
        self.cancel_timeout = cancel_timeout
        self.result: FindResult | None = None
        self._generator: AsyncGenerator[Dataset, None] | None = None

    def __aiter__(self) -> AsyncIterator[Dataset]:
        if self._generator is None:
            self._generator = self._matches()
        return self._generator

    async def __aenter__(self) -> Find:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop early: C-CANCEL if the peer is still sending, then release what we opened."""
        if self._generator is not None:
            await self._generator.aclose()

    async def all(self) -> list[Dataset]:
        """Every match, as a list (for small results)."""
        return [match async for match in self]

    async def _matches(self) -> AsyncGenerator[Dataset, None]:
        async with AsyncExitStack() as stack:
            session = self._session
            if session is None:
                assert self._open_session is not None
                session = await stack.enter_async_context(self._open_session())
            # Closed explicitly so that its C-CANCEL runs before the association is released.
            async with aclosing(self._run(session)) as matches:
                async for match in matches:
                    yield match

    async def _run(self, session: Session) -> AsyncGenerator[Dataset, None]:
        dispatcher = session.dispatcher
        sop_class = self.query.sop_class_uid("find")
        context = session.association.context(sop_class)
        transfer_syntax = context.transfer_syntax
        assert transfer_syntax is not None
        identifier = self.query.to_dataset()
        state = _Progress(identifier)
        async with dispatcher.operation() as message_id:
            await dispatcher.send(DimseMessage(
                context.context_id,
                {
                    "CommandField": C_FIND_RQ,
                    "MessageID": message_id,
                    "AffectedSOPClassUID": sop_class,
                    "Priority": self.priority,
                    "CommandDataSetType": DATASET_PRESENT,
                },
                encode_dataset(identifier, transfer_syntax),
            ))
            final: DimseMessage | None = None
            try:
                while final is None:
                    response = await dispatcher.next_response(message_id)
                    status = response.status if response.status is not None else 0xC000
                    if status_category(status) is not StatusCategory.PENDING:
                        final = response
                        break
                    if response.data is None:
                        continue  # a pending response without identifier carries nothing
                    match = decode_dataset(response.data, transfer_syntax)
                    if state.accept(match, status, strict=self.strict):
                        yield match
            finally:
                if final is None:
                    state.cancelled = True
                    with anyio.CancelScope(shield=True):
                        final = await self._cancel(session, context.context_id, message_id)
                self.result = state.result(final)
        assert self.result is not None
        if status_category(self.result.status) is StatusCategory.FAILURE:
            raise FindError(self.result)
        for warning in self.result.warnings:
            log.warning("C-FIND: %s", warning)

    async def _cancel(
        self, session: Session, context_id: int, message_id: int
    ) -> DimseMessage | None:
        dispatcher = session.dispatcher
        if dispatcher.ended:
            return None
        try:
            await dispatcher.send(DimseMessage(
                context_id,
                {
                    "CommandField": C_CANCEL_RQ,
                    "MessageIDBeingRespondedTo": message_id,
                    "CommandDataSetType": NO_DATASET,
                },
                None,
            ))
            with anyio.move_on_after(self.cancel_timeout):
                while True:
                    response = await dispatcher.next_response(message_id, timeout=None)
                    status = response.status if response.status is not None else 0xC000
                    if status_category(status) is not StatusCategory.PENDING:
                        return response
        except Exception as exc:  # noqa: BLE001 - any failure here means: give up the association
            log.info("C-CANCEL did not complete: %s", exc)
        await session.association.abort()
        return None


@attrs.define
class _Progress:
    """What the responses of one C-FIND have shown so far."""

    identifier: Dataset
    matches: int = 0
    optional_keys_unsupported: bool = False
    cancelled: bool = False
    contradicting: int = 0
    never_returned: set[str] | None = None

    def accept(self, match: Dataset, status: int, *, strict: bool) -> bool:
        if status == 0xFF01:
            self.optional_keys_unsupported = True
        missing = set(missing_matching_keys(self.identifier, match))
        self.never_returned = missing if self.never_returned is None \
            else self.never_returned & missing
        if contradictions(self.identifier, match):
            self.contradicting += 1
            if strict:
                return False
        self.matches += 1
        return True

    def result(self, final: DimseMessage | None) -> FindResult:
        if final is None:
            status, comment = 0xFE00, "the peer did not confirm the cancel; association aborted"
        else:
            status = final.status if final.status is not None else 0xC000
            raw_comment = final.command.get("ErrorComment")
            comment = str(raw_comment) if raw_comment else None
        return FindResult(
            status=status,
            status_text=status_meaning(status, "find"),
            error_comment=comment,
            matches=self.matches,
            optional_keys_unsupported=self.optional_keys_unsupported,
            cancelled=self.cancelled,
            truncated=status == 0xFE00 and not self.cancelled,
            ignored_keys=tuple(sorted(self.never_returned or ())),
            contradicting=self.contradicting,
        )


__all__ = ["CANCEL_TIMEOUT", "Find", "FindError", "FindResult"]
