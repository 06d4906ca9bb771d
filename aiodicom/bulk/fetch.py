"""One attempt at one item: what the runner does inside a limiter slot.

A retrieve item is fetched whole by one C-GET or C-MOVE at its level when nothing of it is
stored yet. Otherwise (a retry after a partial transfer, a warning with failed sub-operations,
or a run resumed after a kill) its instances are listed by C-FIND at IMAGE level, those the
journal holds are left out, and the rest are retrieved by SOP Instance UID lists, series by
series: nothing is fetched twice, and a B000 warning retries only the failed instances.

A query item (``find``) is expanded by C-FIND into items of their own, written to the journal
as they come (bounded memory whatever the number of matches).

Every failure comes out as :class:`AttemptFailed`, classified transient (retried) or permanent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import anyio
import attrs
from pydicom import Dataset

from aiodicom.client import Peer
from aiodicom.errors import (
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    DicomError,
    DicomTimeoutError,
    NoAcceptedContext,
    QueryError,
    StatusError,
)
from aiodicom.instance import Instance
from aiodicom.model import Level, QueryModel
from aiodicom.query import Query
from aiodicom.services.find import Find, HierarchicalFind
from aiodicom.services.retrieve import (
    InstanceArrived,
    MoveDestinationUnknown,
    RetrieveError,
    RetrieveResult,
)
from aiodicom.sinks import DirectorySink, Sink

__all__ = ["AttemptFailed", "ItemFetcher", "classify"]

log = logging.getLogger("aiodicom.bulk")

UID_LIST_SIZE = 256
"""SOP Instance UIDs per C-GET/C-MOVE when fetching what remains of a series: the identifier
stays far below any PDU limit (64 bytes a UID)."""

_IMAGE_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class AttemptFailed(Exception):
    """An attempt failed; ``permanent`` ones are not retried."""

    def __init__(
        self, reason: str, *, permanent: bool, status: int | None = None,
        instances_failed: int = 0,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.status = status
        self.instances_failed = instances_failed


def _status_is_transient(status: int) -> bool:
    # A7xx: out of resources; FE00 the PACS cancelled though we did not; 0xA7xx also for
    # C-FIND. 0x0213 resource limitation (PS3.7 C.4) too.
    return (status & 0xFF00) == 0xA700 or status in (0xFE00, 0x0213)


def classify(exc: BaseException) -> AttemptFailed:
    """An error as a transient or permanent failure, with its reason."""
    if isinstance(exc, AttemptFailed):
        return exc
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MoveDestinationUnknown):
        return AttemptFailed(reason, permanent=True, status=exc.status)
    if isinstance(exc, RetrieveError):
        result = exc.result
        if result.interrupted is not None:
            # The association ended before the final response (abort, closed, timeout).
            return AttemptFailed(reason, permanent=False, status=None)
        return AttemptFailed(
            reason, permanent=not _status_is_transient(exc.status), status=exc.status,
            instances_failed=len(result.failed),
        )
    if isinstance(exc, AssociationRejected):
        # result 2: rejected-transient (busy, too many associations); 1: permanent.
        return AttemptFailed(reason, permanent=exc.result != 2)
    if isinstance(exc, (AssociationAborted, DicomTimeoutError)):
        return AttemptFailed(reason, permanent=False)
    if isinstance(exc, AssociationError):  # connection refused or reset, among others
        return AttemptFailed(reason, permanent=False)
    if isinstance(exc, StatusError):
        return AttemptFailed(reason, permanent=not _status_is_transient(exc.status),
                             status=exc.status)
    if isinstance(exc, (NoAcceptedContext, QueryError)):
        return AttemptFailed(reason, permanent=True)
    if isinstance(exc, (DicomError, OSError)):
        return AttemptFailed(reason, permanent=False)
    # Not an error of the network or the PACS: retrying would fail alike. Reported with the
    # item (and logged with its traceback) rather than ending every other item's retrieval.
    log.error("unexpected error (a bug?) during a bulk retrieval", exc_info=exc)
    return AttemptFailed(f"unexpected {reason}", permanent=True)


@attrs.frozen
class Stored:
    """An instance handed to the sink: what the journal records of it."""

    sop: str
    series: str | None
    study: str | None
    path: str | None
    size: int


class ItemFetcher:
    """Fetches items from one PACS through ``peer`` (a :class:`~aiodicom.Peer` of the run's
    client). ``sink_for`` gives a sink per retrieval (a fresh DirectorySink on the same
    directory, so that its map of paths does not grow with the run); ``on_stored`` is told of
    each instance as soon as the sink has it."""

    def __init__(
        self,
        peer: Peer,
        method: Literal["get", "move"],
        sink_for: Callable[[], Sink | DirectorySink],
        on_stored: Callable[[str, Stored], None],
        on_progress: Callable[[], Awaitable[None]] | None = None,
        uid_list_size: int = UID_LIST_SIZE,
        sop_classes: Sequence[str] | None = None,
        transfer_syntaxes: Sequence[str] | None = None,
    ) -> None:
        self.peer = peer
        self.method = method
        self._sink_for = sink_for
        self._on_stored = on_stored
        self._on_progress = on_progress
        self.uid_list_size = uid_list_size
        self.sop_classes = sop_classes
        self.transfer_syntaxes = transfer_syntaxes

    # --- retrieving ------------------------------------------------------------------------

    async def retrieve(self, key: str, level: Level, keys: Mapping[str, object], model: QueryModel,
                       done: set[str]) -> None:
        """Retrieve an item's instances except those in ``done`` (which grows as they come).
        Raises :class:`AttemptFailed`."""
        try:
            remaining: list[tuple[str, str, list[str]]] | None = None
            if done:
                remaining, listed = await self._remaining(level, keys, model, done)
                if not listed:
                    # The PACS lists none of the item's instances at IMAGE level (some do not
                    # answer there): fetch it whole again rather than call it complete.
                    remaining = None
            if remaining is None:
                query = Query.at_level(level, _unique(keys, level), model=model,
                                       required_keys=False)
                result = await self._one(key, query, done)
                if not done and not result.sub_operations.completed:
                    raise AttemptFailed(
                        f"the PACS sent nothing for {_describe(level, keys)} (status "
                        f"0x{result.status:04X}): it holds no such {level.value.lower()}",
                        permanent=True, status=result.status,
                    )
                return
            for study, series, uids in remaining:
                await self._rest_of_series(key, model, study, series, uids, done)
        except AttemptFailed:
            raise
        except Exception as exc:
            raise classify(exc) from exc

    async def _rest_of_series(
        self, key: str, model: QueryModel, study: str, series: str, uids: list[str],
        done: set[str],
    ) -> None:
        """The instances ``uids`` of one series, by SOP Instance UID lists; the whole series
        instead when the PACS refuses a list (a failure before anything arrived, or a
        success with nothing): some do not retrieve by UID list at IMAGE level."""
        for start in range(0, len(uids), self.uid_list_size):
            chunk = uids[start:start + self.uid_list_size]
            query = Query.at_level(Level.IMAGE, {
                "StudyInstanceUID": study, "SeriesInstanceUID": series,
                "SOPInstanceUID": chunk if len(chunk) > 1 else chunk[0],
            }, model=model, required_keys=False)
            before = len(done)
            try:
                result = await self._one(key, query, done)
            except AttemptFailed as failure:
                if not failure.permanent or len(done) > before:
                    raise
                refused = failure.reason
            else:
                if len(done) > before or result.sub_operations.completed:
                    continue
                refused = f"status 0x{result.status:04X} with nothing sent"
            log.info("%s: the PACS refused a SOP Instance UID list (%s); retrieving series %s "
                     "whole", key, refused, series)
            whole = Query.at_level(Level.SERIES, {
                "StudyInstanceUID": study, "SeriesInstanceUID": series,
            }, model=model, required_keys=False)
            await self._one(key, whole, done)
            return

    async def _one(self, key: str, query: Query, done: set[str]) -> RetrieveResult:
        sink = self._sink_for()
        retrieval = self.peer.get(
            query, sink=sink, sop_classes=self.sop_classes,
            transfer_syntaxes=self.transfer_syntaxes,
        ) if self.method == "get" else self.peer.move(query, sink=sink)
        try:
            async with retrieval:
                async for event in retrieval:
                    if isinstance(event, InstanceArrived):
                        stored = _stored(event.instance, sink)
                        done.add(stored.sop)
                        self._on_stored(key, stored)
                        if self._on_progress is not None:
                            await self._on_progress()
        except Exception as exc:
            raise classify(exc) from exc
        result = retrieval.result
        assert result is not None
        if result.failed or result.sub_operations.failed:
            count = len(result.failed) or (result.sub_operations.failed or 0)
            raise AttemptFailed(
                f"status 0x{result.status:04X} ({result.status_text}): {count} "
                "sub-operation(s) failed; retrying those instances",
                permanent=False, status=result.status, instances_failed=count,
            )
        return result

    async def _remaining(
        self, level: Level, keys: Mapping[str, object], model: QueryModel, done: set[str]
    ) -> tuple[list[tuple[str, str, list[str]]], int]:
        """(study, series, SOP Instance UIDs not in ``done``) per series, by C-FIND; and how
        many instances the PACS listed in all."""
        by_series: dict[tuple[str, str], list[str]] = {}
        listed = 0
        if level is Level.IMAGE:
            wanted = keys.get("SOPInstanceUID")
            uids = [wanted] if isinstance(wanted, str) else list(_as_list(wanted))
            study, series = keys.get("StudyInstanceUID"), keys.get("SeriesInstanceUID")
            if not study or not series:
                raise AttemptFailed(
                    "an IMAGE item needs StudyInstanceUID and SeriesInstanceUID to be "
                    "resumed by instance", permanent=True,
                )
            by_series[(str(study), str(series))] = [str(u) for u in uids if str(u) not in done]
            listed = len(uids)
        else:
            pinned: dict[str, Any] = dict(_unique(keys, level))
            pinned.update({k: None for k in _IMAGE_KEYS if k not in pinned})
            matches = self.peer.find_images(model=model, **pinned)
            async with matches:
                async for match in matches:
                    sop = str(match.get("SOPInstanceUID") or "")
                    study = str(match.get("StudyInstanceUID") or "")
                    series = str(match.get("SeriesInstanceUID") or "")
                    if sop and study and series:
                        listed += 1
                        if sop not in done:
                            by_series.setdefault((study, series), []).append(sop)
        remaining = [(study, series, uids) for (study, series), uids in by_series.items() if uids]
        return remaining, listed

    # --- expanding queries ----------------------------------------------------------------

    async def expand(
        self, level: Level, keys: Mapping[str, object], model: QueryModel,
        save: Callable[[Iterable[dict[str, object]]], None],
    ) -> int:
        """Run the query item's C-FIND; hand the unique keys of each match to ``save`` in
        batches; return the number of matches."""
        wanted: dict[str, Any] = dict(keys)
        for upper in model.levels[: model.levels.index(level) + 1]:
            wanted.setdefault(upper.unique_key, None)
        try:
            stream: Find | HierarchicalFind
            if level in (Level.PATIENT, Level.STUDY):
                stream = self.peer.find(Query.at_level(level, wanted, model=model))
            elif level is Level.SERIES:
                stream = self.peer.find_series(model=model, **wanted)
            else:
                stream = self.peer.find_images(model=model, **wanted)
            count = 0
            batch: list[dict[str, object]] = []
            async with stream:
                async for match in stream:
                    unique = _unique_of_match(match, level, model.levels)
                    if unique is None:
                        continue
                    batch.append(unique)
                    count += 1
                    if len(batch) >= 512:
                        save(batch)
                        batch = []
                        await anyio.lowlevel.checkpoint()
            save(batch)
            return count
        except AttemptFailed:
            raise
        except Exception as exc:
            raise classify(exc) from exc


def _as_list(value: object) -> Iterator[object]:
    if isinstance(value, (list, tuple)):
        yield from value
    elif isinstance(value, str):
        yield from value.split("\\")
    elif value is not None:
        yield value


def _unique(keys: Mapping[str, object], level: Level) -> dict[str, object]:
    """The unique keys of ``level`` and above, as an identifier takes them."""
    out: dict[str, object] = {}
    for keyword in ("PatientID", *_IMAGE_KEYS):
        if keyword in keys and keys[keyword] not in (None, ""):
            out[keyword] = keys[keyword]
        if keyword == level.unique_key:
            break
    return out


def _unique_of_match(
    match: Dataset, level: Level, levels: tuple[Level, ...]
) -> dict[str, object] | None:
    unique: dict[str, object] = {}
    for upper in levels[: levels.index(level) + 1]:
        value = match.get(upper.unique_key)
        if value in (None, ""):
            if upper is level:
                return None
            continue
        unique[upper.unique_key] = str(value)
    return unique


def _describe(level: Level, keys: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in _unique(keys, level).items())


def _stored(instance: Instance, sink: object) -> Stored:
    study, series = instance.peek_uids()
    uid = instance.sop_instance_uid
    path: str | None = None
    if isinstance(sink, DirectorySink):
        written = sink.paths.pop(uid, None)  # the journal keeps it; the sink need not
        path = str(written) if written is not None else None
    return Stored(uid, series, study, path, instance.size)
