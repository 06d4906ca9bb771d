"""C-FIND SCU (PS3.4 C.4.1 and K): matches stream as an async iterator.

``Find`` is both an async iterator and an async context manager. Its iterator is an async
generator, so leaving ``async with``, a cancelled task, a timeout, or closing the generator all run
the same ``finally``: C-CANCEL-RQ for our Message ID, then a bounded wait for the final response
(the association stays usable), or A-ABORT when the peer does not answer in time.

Leaving a plain ``async for`` early (``break``) does not close an async generator by itself
(PEP 533 was never accepted): it is closed when it is garbage collected, which CPython does as
soon as the loop drops it, and the event loop then runs its ``aclose()`` as a task of its own.
The C-CANCEL is therefore sent shortly after the ``break``, not during it; a later operation on
the same association waits for it (one operation at a time). ``async with`` (or ``aclose()``) is
the deterministic way, and the one to use when the ``Find`` object is kept in a variable: the
generator then lives as long as that variable.

The generators never refer back to the ``Find`` (their state lives in a separate object), so no
reference cycle keeps an abandoned one alive until the cycle collector runs.

Reading is pulled: a response is read from the socket only when the consumer asks for the next
match, so a slow consumer slows the peer down (TCP flow control) instead of growing a buffer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing, nullcontext
from types import TracebackType
from typing import TypeVar

import anyio
import attrs
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue

from aiodicom.association import Association
from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.dimse import C_FIND_RQ, DATASET_PRESENT, DimseMessage
from aiodicom.errors import QueryError, StatusError
from aiodicom.matching import MatchingKeys
from aiodicom.model import Level, QueryModel, key_level
from aiodicom.pdu import SOPClassExtendedNegotiation
from aiodicom.query import Query
from aiodicom.services.cancel import CANCEL_TIMEOUT, cancel_operation
from aiodicom.services.channel import ServiceChannel
from aiodicom.status import Status, StatusCategory, status_category, status_meaning
from aiodicom.vr import TEMPORAL_VRS

log = logging.getLogger("aiodicom.find")


SessionOpener = Callable[[], AbstractAsyncContextManager[ServiceChannel]]


@attrs.frozen
class FindOptions:
    """C-FIND SOP Class Extended Negotiation (PS3.4 C.5.1.1.1), one flag per byte."""

    relational: bool = False
    """Byte 1: relational queries (the hierarchical rules of C.4.1.2.1 do not apply)."""
    datetime_matching: bool = False
    """Byte 2: combined date and time range matching (a DA key and its TM key as one range)."""
    fuzzy_names: bool = False
    """Byte 3: fuzzy semantic matching of person names."""
    timezone_adjustment: bool = False
    """Byte 4: the peer adjusts date and time values to the Timezone Offset From UTC."""

    @property
    def any(self) -> bool:
        return self.relational or self.datetime_matching or self.fuzzy_names \
            or self.timezone_adjustment

    def application_information(self) -> bytes:
        """The bytes to propose: up to the last option asked for (missing bytes mean 0)."""
        flags = [self.relational, self.datetime_matching, self.fuzzy_names,
                 self.timezone_adjustment]
        while flags and not flags[-1]:
            flags.pop()
        return bytes(int(flag) for flag in flags)

    def negotiation_item(self, sop_class_uid: str) -> SOPClassExtendedNegotiation:
        """The A-ASSOCIATE-RQ sub-item proposing these options for a C-FIND SOP class."""
        return SOPClassExtendedNegotiation(sop_class_uid, self.application_information())

    @classmethod
    def from_application_information(cls, info: bytes) -> FindOptions:
        padded = bytes(info[:4]).ljust(4, b"\x00")
        return cls(*(byte == 1 for byte in padded))

    def __and__(self, other: FindOptions) -> FindOptions:
        return FindOptions(
            self.relational and other.relational,
            self.datetime_matching and other.datetime_matching,
            self.fuzzy_names and other.fuzzy_names,
            self.timezone_adjustment and other.timezone_adjustment,
        )

    def names(self) -> tuple[str, ...]:
        return tuple(
            name for name, on in (
                ("relational queries", self.relational),
                ("combined date-time matching", self.datetime_matching),
                ("fuzzy semantic matching of person names", self.fuzzy_names),
                ("timezone query adjustment", self.timezone_adjustment),
            ) if on
        )


NO_OPTIONS = FindOptions()
"""No extended negotiation option (one shared value: frozen)."""


def negotiated_options(association: Association, sop_class_uid: str) -> FindOptions:
    """The options both sides agreed on for ``sop_class_uid``: proposed in our A-ASSOCIATE-RQ
    and accepted in the peer's A-ASSOCIATE-AC (no item in the AC: none accepted)."""
    def item_for(items: tuple[SOPClassExtendedNegotiation, ...]) -> FindOptions | None:
        for item in items:
            if item.sop_class_uid == sop_class_uid:
                return FindOptions.from_application_information(item.application_information)
        return None

    if association.request is None or association.response is None:
        return NO_OPTIONS
    proposed = item_for(association.request.user_information.sop_class_extended)
    if proposed is None:  # the usual case: nothing proposed, so nothing to look for in the AC
        return NO_OPTIONS
    accepted = item_for(association.response.user_information.sop_class_extended)
    # An acceptor may only confirm what was proposed; anything else it says is ignored.
    return proposed & accepted if accepted is not None else NO_OPTIONS


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
    negotiated: FindOptions = FindOptions()
    """The extended negotiation options the peer accepted for this SOP class."""
    requested: FindOptions = FindOptions()
    """The options the caller asked for."""

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
        if not self.requested.any:
            return tuple(notes)
        # Relational is not listed: a query that needed it was refused before sending.
        unaccepted = FindOptions(
            False,
            self.requested.datetime_matching and not self.negotiated.datetime_matching,
            self.requested.fuzzy_names and not self.negotiated.fuzzy_names,
            self.requested.timezone_adjustment and not self.negotiated.timezone_adjustment,
        )
        if unaccepted.any:
            notes.append("the peer did not accept " + ", ".join(unaccepted.names())
                         + " (SOP Class Extended Negotiation): the query was matched without")
        return tuple(notes)


class FindError(StatusError):
    """C-FIND ended with a failure status; ``result`` says what had arrived."""

    def __init__(self, result: FindResult) -> None:
        super().__init__(result.status, result.status_text, result.error_comment)
        self.result = result


_Stream = TypeVar("_Stream", bound="_MatchStream")


class _MatchStream:
    """Both an async iterator of matches and an async context manager whose exit closes the
    iteration (C-CANCEL if the peer is still sending, release of what was opened)."""

    _generator: AsyncGenerator[Dataset, None] | None

    def _matches(self) -> AsyncGenerator[Dataset, None]:
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[Dataset]:
        if self._generator is None:
            self._generator = self._matches()
        return self._generator

    async def __aenter__(self: _Stream) -> _Stream:
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
        async with self:
            return [match async for match in self]


class Find(_MatchStream):
    """A C-FIND in progress: ``async for match in find`` yields each match as a ``Dataset``.

    ``relational``, ``datetime_matching``, ``fuzzy_names`` and ``timezone_adjustment`` are the
    options of SOP Class Extended Negotiation; :attr:`negotiated` says which the peer accepted
    (known once the association is up). A query that breaks the hierarchical rules is refused
    with :class:`~aiodicom.errors.QueryError` before anything is sent unless relational queries
    were asked for here and accepted by the peer.

    Each match has its values decoded (Specific Character Set applied), so its elements can be
    copied into other data sets.
    """

    def __init__(
        self,
        query: Query,
        *,
        session: ServiceChannel | None = None,
        open_session: SessionOpener | None = None,
        strict: bool = False,
        relational: bool = False,
        datetime_matching: bool = False,
        fuzzy_names: bool = False,
        timezone_adjustment: bool = False,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
        log_warnings: bool = True,
    ) -> None:
        if (session is None) == (open_session is None):
            raise TypeError("give exactly one of session and open_session")
        # Relational or not, keys below the query level are always wrong: refuse them now. The
        # rules relational queries lift are checked once the peer has answered the proposal.
        prepared = _prepare(query)
        prepared.validate(relational)
        self.query = query
        self._session = session
        self._open_session = open_session
        options = (
            FindOptions(relational, datetime_matching, fuzzy_names, timezone_adjustment)
            if relational or datetime_matching or fuzzy_names or timezone_adjustment
            else NO_OPTIONS
        )
        self._run = _FindRun(
            query, prepared, options, strict=strict, priority=priority,
            cancel_timeout=cancel_timeout, log_warnings=log_warnings,
        )
        self._generator: AsyncGenerator[Dataset, None] | None = None

    def _matches(self) -> AsyncGenerator[Dataset, None]:
        return self._run.matches(self._session, self._open_session)

    @property
    def strict(self) -> bool:
        return self._run.strict

    @property
    def requested(self) -> FindOptions:
        return self._run.options

    @property
    def result(self) -> FindResult | None:
        """How the C-FIND ended (``None`` before it has)."""
        return self._run.result

    @property
    def negotiated(self) -> FindOptions | None:
        """The extended negotiation options accepted (``None`` before the association is up)."""
        return self._run.negotiated



class _FindRun:
    """The state of one C-FIND, shared by :class:`Find` and its generator (which must not
    refer to the ``Find``: see the module docstring)."""

    def __init__(
        self, query: Query, prepared: _Prepared, options: FindOptions, *, strict: bool,
        priority: int, cancel_timeout: float, log_warnings: bool,
    ) -> None:
        self.query = query
        self.prepared = prepared
        self.options = options
        self.strict = strict
        self.priority = priority
        self.cancel_timeout = cancel_timeout
        self.log_warnings = log_warnings
        self.result: FindResult | None = None
        self.negotiated: FindOptions | None = None

    async def matches(
        self, session: ServiceChannel | None, open_session: SessionOpener | None
    ) -> AsyncGenerator[Dataset, None]:
        # One generator for the whole operation: the C-CANCEL in its inner ``finally`` runs
        # before the association is released. (Two nested generators would also be finalized
        # one by one, and race, should a reference cycle leave them to the garbage collector.)
        if session is None:
            assert open_session is not None
            using: AbstractAsyncContextManager[ServiceChannel] = open_session()
        else:
            using = nullcontext(session)  # cheaper than an AsyncExitStack, run for every find
        async with using as session:
            dispatcher = session.dispatcher
            sop_class = self.query.sop_class_uid("find")
            context = session.association.context(sop_class)
            negotiated = self._check_negotiation(session, sop_class)
            transfer_syntax = context.transfer_syntax
            assert transfer_syntax is not None
            prepared = self.prepared
            state = _Progress(prepared.matching_keys(negotiated))
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
                    prepared.encoded(transfer_syntax),
                ))
                final: DimseMessage | None = None
                strict = self.strict
                accept = state.accept
                try:
                    while final is None:
                        response = await dispatcher.next_response(message_id)
                        status = response.status_code
                        if status not in _PENDING:
                            final = response
                            break
                        data = response.data
                        if data is None:
                            continue  # a pending response without identifier carries nothing
                        # Values decode on first access, each with the match's own
                        # Specific Character Set (also when copied out as an element).
                        match = decode_dataset(data, transfer_syntax)
                        if accept(match, status, strict=strict):
                            yield match
                finally:
                    if final is None:
                        state.cancelled = True
                        with anyio.CancelScope(shield=True):
                            final = await cancel_operation(
                                session, context.context_id, message_id, self.cancel_timeout,
                                "C-FIND",
                            )
                    self.result = state.result(final, negotiated, self.options)
            if status_category(self.result.status) is StatusCategory.FAILURE:
                raise FindError(self.result)
        if self.log_warnings:
            for warning in self.result.warnings:
                log.warning("C-FIND: %s", warning)

    def _check_negotiation(self, session: ServiceChannel, sop_class: str) -> FindOptions:
        negotiated = negotiated_options(session.association, sop_class)
        self.negotiated = negotiated
        if self.options.relational and not negotiated.relational:
            try:
                self.prepared.validate(False)
            except QueryError as exc:
                raise QueryError(
                    f"the peer did not accept relational queries (SOP Class Extended "
                    f"Negotiation), and this query needs them: {exc}",
                    exc.key,
                ) from exc
        return negotiated


# The codes status_category() calls PENDING (PS3.7 C.1.3), as a set test for the per-match loop.
_PENDING = frozenset({Status.PENDING, Status.PENDING_OPTIONAL_KEYS_UNSUPPORTED})


PREPARED_QUERIES = 64
"""Queries whose identifier, encodings and matching keys are kept, least recently used dropped
first: a web server asking the same few queries again and again builds each once (building
and encoding the identifier with pydicom was a third of a small C-FIND's own work)."""


class _Prepared:
    """What one query's C-FINDs send and check responses with, each part built when first
    needed; read-only once built."""

    def __init__(self, query: Query) -> None:
        self._query = query
        self._identifier: Dataset | None = None
        self._encoded: dict[str, bytes] = {}
        self._matching_keys: dict[FindOptions, MatchingKeys] = {}
        self._valid: set[bool] = set()  # the values of ``relational`` it passed validate with

    @property
    def identifier(self) -> Dataset:
        if self._identifier is None:
            self._identifier = self._query.to_dataset()
        return self._identifier

    def validate(self, relational: bool) -> None:
        """``Query.validate(relational=...)``, run once per query value and ``relational``; a
        query that fails is checked again each time."""
        if relational not in self._valid:
            self._query.validate(relational=relational)
            self._valid.add(relational)

    def encoded(self, transfer_syntax: str) -> bytes:
        encoded = self._encoded.get(transfer_syntax)
        if encoded is None:
            encoded = self._encoded[transfer_syntax] = encode_dataset(
                self.identifier, transfer_syntax
            )
        return encoded

    def matching_keys(self, negotiated: FindOptions) -> MatchingKeys:
        keys = self._matching_keys.get(negotiated)
        if keys is None:
            unjudged = _unjudged(self.identifier, negotiated)
            keys = self._matching_keys[negotiated] = MatchingKeys(
                self.identifier, unjudged=unjudged
            )
        return keys


_prepared: OrderedDict[tuple[object, ...], _Prepared] = OrderedDict()


def _prepare(query: Query) -> _Prepared:
    # By value, types included (1 == True, but they are not encoded alike).
    key = (query.model, query.level, query.character_set,
           tuple((k, type(v), v) for k, v in query.keys.items()))
    try:
        prepared = _prepared.get(key)
    except TypeError:  # a value that is not hashable (a list of values): built each time
        return _Prepared(query)
    if prepared is None:
        prepared = _prepared[key] = _Prepared(query)
        if len(_prepared) > PREPARED_QUERIES:
            _prepared.popitem(last=False)
    else:
        _prepared.move_to_end(key)
    return prepared


def _unjudged(identifier: Dataset, negotiated: FindOptions) -> frozenset[str]:
    """Keys whose local check would be wrong under the negotiated matching semantics."""
    skip: set[str] = set()
    for elem in identifier:
        vr = elem.VR
        if negotiated.fuzzy_names and vr == "PN":
            skip.add(elem.keyword)
        # Combined date-time matching makes a TM key part of a range that spans days, and a
        # timezone adjustment shifts every date and time: neither can be checked value by value.
        if negotiated.datetime_matching and vr == "TM":
            skip.add(elem.keyword)
        if negotiated.timezone_adjustment and vr in TEMPORAL_VRS:
            skip.add(elem.keyword)
    return frozenset(skip)


class _Progress:
    """What the responses of one C-FIND have shown so far."""

    def __init__(self, keys: MatchingKeys) -> None:
        self.keys = keys
        self._has_keys = bool(self.keys)
        self.matches = 0
        self.optional_keys_unsupported = False
        self.cancelled = False
        self.contradicting = 0
        # Matching keys absent from every response so far (None before the first response).
        self.never_returned: set[str] | None = None if self.keys else set()

    def accept(self, match: Dataset, status: int, *, strict: bool) -> bool:
        if status == Status.PENDING_OPTIONAL_KEYS_UNSUPPORTED:
            self.optional_keys_unsupported = True
        if not self._has_keys:
            self.matches += 1
            return True
        try:
            if self.never_returned is None or self.never_returned:
                missing = set(self.keys.missing(match))
                self.never_returned = missing if self.never_returned is None \
                    else self.never_returned & missing
            contradicted = bool(self.keys.contradictions(match))
        except Exception as exc:  # a malformed value is not ours to judge
            log.debug("C-FIND: cannot check a match against the query: %s", exc)
            contradicted = False
        if contradicted:
            self.contradicting += 1
            if strict:
                return False
        self.matches += 1
        return True

    def result(
        self, final: DimseMessage | None, negotiated: FindOptions, requested: FindOptions
    ) -> FindResult:
        comment: str | None
        status: int
        if final is None:
            status = Status.CANCEL
            comment = "the peer did not confirm the cancel; association aborted"
        else:
            status = final.status_code
            raw_comment = final.command.get("ErrorComment")
            comment = str(raw_comment).strip() if raw_comment else None
        return FindResult(
            status=status,
            status_text=status_meaning(status, "find"),
            error_comment=comment,
            matches=self.matches,
            optional_keys_unsupported=self.optional_keys_unsupported,
            cancelled=self.cancelled,
            truncated=status == Status.CANCEL and not self.cancelled,
            ignored_keys=tuple(sorted(self.never_returned or ())),
            contradicting=self.contradicting,
            negotiated=negotiated,
            requested=requested,
        )


# --- the hierarchy helper ------------------------------------------------------------------------

# Attributes of the response itself, not of the entity: the child's own are the right ones.
_NOT_INHERITED = frozenset({0x00080005, 0x00080052, 0x00080054, 0x00080056})


@attrs.frozen
class HierarchyResult:
    """How a :class:`HierarchicalFind` ended: one :class:`FindResult` per C-FIND it ran."""

    results: tuple[FindResult, ...]
    matches: int
    """Matches yielded (at the target level)."""

    @property
    def queries(self) -> int:
        return len(self.results)

    @property
    def ignored_keys(self) -> tuple[str, ...]:
        return tuple(sorted({key for r in self.results for key in r.ignored_keys}))

    @property
    def cancelled(self) -> bool:
        return any(r.cancelled for r in self.results)

    @property
    def truncated(self) -> bool:
        return any(r.truncated for r in self.results)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w for r in self.results for w in r.warnings))


class HierarchicalFind(_MatchStream):
    """Matches at ``level`` found with hierarchical queries only, on one association.

    The keys are split by the level they belong to (:func:`~aiodicom.model.key_level`; patient
    keys go to the STUDY level in Study Root, keys of no known level to ``level``). The top
    level is queried with its keys, then the next level once per match above it, pinned by the
    unique keys found, down to ``level``; each match yielded carries the attributes of the
    entities above it (its own values win). Upper levels are collected before going down (one
    operation at a time on the association); the target level streams. Iteration, ``async
    with`` and cancellation behave as for :class:`Find`: the C-FIND running at that moment is
    cancelled.
    """

    def __init__(
        self,
        level: Level,
        keys: Mapping[str, object],
        *,
        model: QueryModel = QueryModel.STUDY_ROOT,
        session: ServiceChannel | None = None,
        open_session: SessionOpener | None = None,
        strict: bool = False,
        priority: int = 0,
        cancel_timeout: float = CANCEL_TIMEOUT,
        character_set: str | None = None,
    ) -> None:
        if (session is None) == (open_session is None):
            raise TypeError("give exactly one of session and open_session")
        if model not in (QueryModel.PATIENT_ROOT, QueryModel.STUDY_ROOT):
            raise QueryError(f"the hierarchy helper walks Patient Root or Study Root, not {model}")
        if level not in model.levels:
            raise QueryError(f"the {model.value} model has no {level.value} level")
        levels = model.levels[: model.levels.index(level) + 1]
        per_level: dict[Level, dict[str, object]] = {lvl: {} for lvl in levels}
        for keyword, value in keys.items():
            home = key_level(keyword, model)
            if home is None:
                home = level
            if home not in per_level:
                raise QueryError(
                    f"{keyword} is a {home.value}-level key, below the {level.value} matches "
                    "asked for; ask for that level instead",
                    keyword,
                )
            per_level[home][keyword] = value
        templates = [
            Query.at_level(lvl, per_level[lvl], model=model, character_set=character_set)
            for lvl in levels
        ]
        templates[0].validate()
        # Refuse now what would only fail after the first queries ran.
        for depth, template in enumerate(templates[1:], start=1):
            placeholders = {lvl.unique_key: "1" for lvl in levels[:depth]}
            template.with_keys(**placeholders).validate()
        self.level = level
        self.model = model
        self._session = session
        self._open_session = open_session
        self._run = _HierarchyRun(
            tuple(zip(levels, templates, strict=True)), strict=strict, priority=priority,
            cancel_timeout=cancel_timeout,
        )
        self._generator: AsyncGenerator[Dataset, None] | None = None

    def _matches(self) -> AsyncGenerator[Dataset, None]:
        return self._run.matches(self._session, self._open_session)

    @property
    def queries(self) -> tuple[Query, ...]:
        """The query of each level, without the unique keys pinned at run time."""
        return tuple(template for _, template in self._run.levels)

    @property
    def result(self) -> HierarchyResult | None:
        return self._run.result

    @property
    def log_warnings(self) -> bool:
        """Log the result's warnings (ignored keys...) when done; callers that act on them
        (retrieve_series checks ignored keys itself) turn this off."""
        return self._run.log_warnings

    @log_warnings.setter
    def log_warnings(self, value: bool) -> None:
        self._run.log_warnings = value


class _HierarchyRun:
    def __init__(
        self, levels: tuple[tuple[Level, Query], ...], *, strict: bool, priority: int,
        cancel_timeout: float,
    ) -> None:
        self.levels = levels
        self.strict = strict
        self.priority = priority
        self.cancel_timeout = cancel_timeout
        self.results: list[FindResult] = []
        self.matches_yielded = 0
        self.result: HierarchyResult | None = None
        self.log_warnings = True

    async def matches(
        self, session: ServiceChannel | None, open_session: SessionOpener | None
    ) -> AsyncGenerator[Dataset, None]:
        try:
            async with AsyncExitStack() as stack:
                if session is None:
                    assert open_session is not None
                    session = await stack.enter_async_context(open_session())
                async with aclosing(self._walk(session, 0, {}, ())) as matches:
                    async for match in matches:
                        self.matches_yielded += 1
                        yield match
        finally:
            self.result = HierarchyResult(tuple(self.results), self.matches_yielded)
        if self.log_warnings:
            for warning in self.result.warnings:
                log.warning("C-FIND (hierarchy): %s", warning)

    async def _walk(
        self,
        session: ServiceChannel,
        depth: int,
        pinned: dict[str, object],
        parents: tuple[Dataset, ...],
    ) -> AsyncGenerator[Dataset, None]:
        level, template = self.levels[depth]
        query = template.with_keys(**pinned) if pinned else template
        find = Find(
            query, session=session, strict=self.strict, priority=self.priority,
            cancel_timeout=self.cancel_timeout, log_warnings=False,
        )
        try:
            # Each level is read whole before anything is yielded: the association then holds
            # no operation while the caller works on a match (typically retrieving it), so the
            # next query may start, and a PACS that locks its index per operation (dcmqrscp)
            # is never left waiting on a consumer that is itself waiting on the PACS.
            found = await find.all()
        finally:
            if find.result is not None:
                self.results.append(find.result)
        if depth == len(self.levels) - 1:
            for match in found:
                yield _inherit(match, parents)
            return
        unique = level.unique_key
        for entity in found:
            value = entity.get(unique)
            if not value:
                log.warning("C-FIND: a %s match without %s cannot be followed down",
                            level.value, unique)
                continue
            below = {**pinned, unique: str(value)}
            async with aclosing(self._walk(session, depth + 1, below, (*parents, entity))) as sub:
                async for match in sub:
                    yield match


def _inherit(match: Dataset, parents: tuple[Dataset, ...]) -> Dataset:
    """``match`` with the attributes of its parents it lacks (closest parent first)."""
    charset = _charset(match)
    inherited: dict[int, DataElement] = {}
    needs_utf8 = False
    for parent in reversed(parents):
        # Iterating converts each element with the parent's own character set: the values
        # copied are text already, not bytes in a foreign encoding.
        for elem in parent:
            if elem.tag in _NOT_INHERITED or elem.tag.element == 0 or elem.tag in inherited:
                continue
            own = match.get(elem.tag)
            if own is not None and not own.is_empty:
                continue
            inherited[elem.tag] = elem
            if _charset(parent) != charset and _has_non_ascii(elem.value):
                needs_utf8 = True
    if needs_utf8:
        # UTF-8 can encode the mix whatever it came from. The match's own undecoded values are
        # unaffected: pydicom decodes them with the character set they were read in.
        match.SpecificCharacterSet = "ISO_IR 192"
    for elem in inherited.values():
        match.add(elem)
    return match


def _charset(ds: Dataset) -> tuple[str, ...]:
    value = ds.get("SpecificCharacterSet")
    if not value:
        return ()
    if isinstance(value, str):
        return (value.strip(),)
    return tuple(str(v).strip() for v in value)


def _has_non_ascii(value: object) -> bool:
    if isinstance(value, (list, tuple, MultiValue)):
        return any(_has_non_ascii(v) for v in value)
    return not str(value).isascii()


__all__ = [
    "Find",
    "FindError",
    "FindOptions",
    "FindResult",
    "HierarchicalFind",
    "HierarchyResult",
    "negotiated_options",
]
