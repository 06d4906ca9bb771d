"""Retrieve the series matching keys the peer may have ignored, checking them on our side first.

Peers match only the keys they index: DCMTK dcmqrscp neither matches nor returns
SeriesDescription, so a C-FIND for ``SeriesDescription="AX*"`` answers every series of the
study. Retrieving what it answered would pull a sagittal T2 into a request for an axial one.
:func:`retrieve_series` therefore checks every matching key of every candidate series before
any bulk transfer:

1. the STUDY and SERIES levels are queried hierarchically and read whole (dcmqrscp holds a
   shared index lock for a whole C-FIND: a retrieval started inside an unfinished C-FIND loop
   would wait for it);
2. a key the peer returned is checked on the value it returned, with the matching rules of
   :mod:`aiodicom.matching`; when no candidate contradicts it, the peer evidently matched it;
3. a key the peer returned for no candidate (no value) is checked on the header of ONE instance
   of the series: the IMAGE level of the series is read whole (its SOP Instance UIDs), the
   first instance is retrieved alone, and its data set is matched like a response;
4. only the series whose every key matched are retrieved whole. A probed series that matched
   keeps its probe instance (handed to the caller's sink) and the rest is retrieved at IMAGE
   level as a UID list, so no instance crosses the network twice. A peer that refuses the
   UID list (list matching on SOP Instance UID is optional, PS3.4 C.2.2.2.3) before sending
   anything gets the series asked for whole instead: the probe instance crosses twice.

The :class:`SeriesSelection` returned holds one :class:`~aiodicom.series.Series` per selected
series and says, per candidate and per key, how it was checked and with which value.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol

import attrs
from pydicom import Dataset

from aiodicom.errors import DicomError, QueryError
from aiodicom.instance import Instance
from aiodicom.matching import MatchingKeys
from aiodicom.model import Level, QueryModel
from aiodicom.query import Query
from aiodicom.series import Series
from aiodicom.services.find import Find, HierarchicalFind
from aiodicom.services.retrieve import (
    MoveDestinationUnknown,
    Retrieval,
    RetrieveError,
    RetrieveResult,
)
from aiodicom.sinks import DirectorySink, MemorySink, as_sink

log = logging.getLogger("aiodicom.series_selection")

__all__ = [
    "CandidateSeries",
    "CheckedBy",
    "KeyCheck",
    "SelectionOperations",
    "SeriesSelection",
    "retrieve_series",
]

Method = Literal["move", "get"]
KeepingSink = MemorySink | DirectorySink
"""Sinks that give the instances back, so that the selection can hand out Series."""


class SelectionOperations(Protocol):
    """The operations selection needs (those of :class:`~aiodicom.session.Operations`, which
    a Peer and a Session offer): named here so that this module imports nothing above it."""

    def find(self, query: Query) -> Find: ...

    def find_series(
        self, *, model: QueryModel = ..., strict: bool = ..., character_set: str | None = ...,
        **keys: object,
    ) -> HierarchicalFind: ...

    def move(self, query: Query | Dataset, destination: str | None = None, *,
             sink: KeepingSink | None = None) -> Retrieval: ...

    def get(self, query: Query | Dataset, *, sink: KeepingSink | None = None,
            sop_classes: Sequence[str] | None = None) -> Retrieval: ...


class CheckedBy(enum.Enum):
    """How a key was checked for one candidate series."""

    PEER = "matched by the peer"
    """The peer returned the key for every candidate and no value contradicted it: it matched
    the key itself (the value returned was checked all the same)."""
    RETURNED_VALUE = "checked on the value the peer returned"
    """The peer returned values that contradict the key for some candidates: it did not match
    it, and each returned value was checked here."""
    PROBE_HEADER = "checked on a probe instance's header"
    """The peer returned no value: one instance of the series was retrieved and its header
    checked."""


@attrs.frozen
class KeyCheck:
    """One matching key of one candidate series."""

    keyword: str
    wanted: object
    """The value asked for (as sent in the identifier)."""
    checked_by: CheckedBy
    matched: bool
    value: object
    """The value seen (returned by the peer, or in the probe's header); ``None`` if none."""

    def __str__(self) -> str:
        verdict = "matched" if self.matched else "REJECTED"
        return f"{self.keyword}={self.value!r} ({verdict}, {self.checked_by.value})"


@attrs.frozen
class CandidateSeries:
    """A series the peer answered, with what was checked and what was retrieved of it."""

    study_instance_uid: str
    series_instance_uid: str
    checks: tuple[KeyCheck, ...]
    match: Dataset = attrs.field(eq=False, repr=False)
    """The C-FIND match (with its study's attributes)."""
    probe_sop_instance_uid: str | None = None
    """The instance retrieved to read its header (``None``: no probe was needed)."""
    probe_bytes: int = 0
    retrieval: RetrieveResult | None = attrs.field(default=None, eq=False, repr=False)
    """The retrieval of the series (of the instances besides the probe, if one was kept)."""

    @property
    def selected(self) -> bool:
        return all(check.matched for check in self.checks)

    @property
    def rejected_by(self) -> tuple[KeyCheck, ...]:
        return tuple(check for check in self.checks if not check.matched)

    @property
    def bytes_received(self) -> int:
        """Data set bytes received for this series: probe and retrieval."""
        return self.probe_bytes + (self.retrieval.bytes_received if self.retrieval else 0)

    @property
    def description(self) -> str:
        """The Series Description the peer returned, or the one read in the probe's header."""
        for check in self.checks:
            if check.keyword == "SeriesDescription" and check.value is not None:
                return str(check.value)
        return str(self.match.get("SeriesDescription", "") or "")


@attrs.frozen
class SeriesSelection:
    """What :func:`retrieve_series` found, checked and retrieved.

    Iterating it gives the selected series as :class:`~aiodicom.series.Series` (e.g. for
    ``.to_sitk()``), in the order the peer answered them.
    """

    candidates: tuple[CandidateSeries, ...]
    series: tuple[Series, ...]
    """One per selected candidate, in the same order as :attr:`selected`."""
    method: Method
    ignored_keys: tuple[str, ...]
    """Matching keys the peer did not match (contradicted, or returned for no candidate)."""

    @property
    def selected(self) -> tuple[CandidateSeries, ...]:
        return tuple(c for c in self.candidates if c.selected)

    @property
    def rejected(self) -> tuple[CandidateSeries, ...]:
        return tuple(c for c in self.candidates if not c.selected)

    @property
    def bytes_received(self) -> int:
        """Every data set byte received: the selected series and the probes of rejected ones."""
        return sum(c.bytes_received for c in self.candidates)

    @property
    def probe_bytes(self) -> int:
        """Bytes spent on the probes of rejected candidates (the cost of the peer's neglect)."""
        return sum(c.probe_bytes for c in self.rejected)

    def __iter__(self) -> Iterator[Series]:
        return iter(self.series)

    def __len__(self) -> int:
        return len(self.series)

    def report(self) -> str:
        """The checks as text, one line per candidate and key."""
        lines = []
        for candidate in self.candidates:
            verdict = "selected" if candidate.selected else "rejected"
            lines.append(
                f"series {candidate.series_instance_uid} {candidate.description!r}: {verdict}"
            )
            lines.extend(f"  {check}" for check in candidate.checks)
        return "\n".join(lines)


async def retrieve_series(
    ops: SelectionOperations,
    keys: Mapping[str, object],
    *,
    method: Method,
    sink: KeepingSink | None = None,
    model: QueryModel = QueryModel.STUDY_ROOT,
    character_set: str | None = None,
) -> SeriesSelection:
    """The series matching ``keys`` (any level down to SERIES), checked and retrieved; see the
    module docstring. Instances go to ``sink`` (a new :class:`MemorySink` if ``None``)."""
    if sink is None:
        sink = MemorySink()
    elif not isinstance(sink, (MemorySink, DirectorySink)):
        raise TypeError(
            f"retrieve_series() hands out the series it retrieved, so it needs a sink that "
            f"keeps them: a MemorySink or a DirectorySink, not {sink!r}"
        )
    keys_query = Query.at_level(
        Level.SERIES, keys, model=model, required_keys=False, character_set=character_set
    )
    per_key = [_single_key(elem) for elem in _single_key_identifiers(keys_query.to_dataset())]
    if not per_key:
        raise QueryError(
            "retrieve_series() needs at least one matching key (PatientID, StudyDate, "
            "SeriesDescription...): without any it would retrieve every series the peer holds"
        )
    # Read both levels whole before retrieving anything (dcmqrscp's index lock, see above).
    level_keys: dict[str, Any] = dict(keys)
    finder = ops.find_series(model=model, character_set=character_set, **level_keys)
    finder.log_warnings = False  # ignored keys are this function's business: checked below
    matches = await finder.all()
    returned = _returned_checks(per_key, matches)
    ignored = sorted({
        check.keyword for checks in returned for check in checks.values()
        if check.checked_by is not CheckedBy.PEER
    } | {keyword for keyword, _, _ in per_key
         if all(keyword not in checks for checks in returned)})

    # Every candidate is checked (probes included) before any series is retrieved whole.
    order = {keyword: index for index, (keyword, _, _) in enumerate(per_key)}
    checked: list[tuple[CandidateSeries, list[Instance], list[str] | None]] = []
    for match, checks in zip(matches, returned, strict=True):
        candidate = CandidateSeries(
            study_instance_uid=str(match.get("StudyInstanceUID", "")),
            series_instance_uid=str(match.get("SeriesInstanceUID", "")),
            checks=tuple(checks[keyword] for keyword, _, _ in per_key if keyword in checks),
            match=match,
        )
        unchecked = [entry for entry in per_key if entry[0] not in checks]
        kept: list[Instance] = []
        remaining: list[str] | None = None  # None: retrieve the whole series
        if candidate.selected and unchecked:
            candidate, kept, remaining = await _probe(
                ops, candidate, unchecked, method=method, model=model, order=order
            )
        if not candidate.selected:
            log.info("series %s %r not retrieved: %s", candidate.series_instance_uid,
                     candidate.description, "; ".join(map(str, candidate.rejected_by)))
        checked.append((candidate, kept, remaining))

    candidates: list[CandidateSeries] = []
    series: list[Series] = []
    deliver = as_sink(sink)
    for candidate, kept, remaining in checked:
        if not candidate.selected:
            candidates.append(candidate)
            continue
        for instance in kept:
            await deliver(instance)
        result = None
        if remaining is None:
            result = await _retrieve(ops, candidate.match, method, sink)
        elif remaining:
            result = await _retrieve_rest(ops, candidate, remaining, kept, method, sink, model)
        candidates.append(attrs.evolve(candidate, retrieval=result))
        # dict.fromkeys: the probe arrives again when the rest had to be retrieved whole.
        uids = list(dict.fromkeys(
            [i.sop_instance_uid for i in kept] + list(result.completed if result else ())
        ))
        series.append(Series(_instances_of(sink, uids)))
    return SeriesSelection(tuple(candidates), tuple(series), method, tuple(ignored))


# --- checking keys ---------------------------------------------------------------------------

_KeyEntry = tuple[str, object, MatchingKeys]


def _single_key_identifiers(identifier: Dataset) -> list[Dataset]:
    """One single-key identifier per matching key of ``identifier``: checked one by one, each
    key's verdict can be reported on its own (matching.py judges a whole identifier)."""
    singles = []
    charset = identifier.get("SpecificCharacterSet")
    for elem in identifier:
        single = Dataset()
        if charset:
            single.SpecificCharacterSet = charset
        single.add(elem)
        if MatchingKeys(single):
            singles.append(single)
    return singles


def _single_key(identifier: Dataset) -> _KeyEntry:
    elem = next(e for e in identifier if e.keyword != "SpecificCharacterSet")
    return elem.keyword, elem.value, MatchingKeys(identifier)


def _returned_checks(
    per_key: list[_KeyEntry], matches: list[Dataset]
) -> list[dict[str, KeyCheck]]:
    """Per match, the checks of the keys it returned a value for."""
    contradicted = {
        keyword for keyword, _, keys in per_key
        if any(not keys.missing(m) and keys.contradictions(m) for m in matches)
    }
    everywhere = {
        keyword for keyword, _, keys in per_key if all(not keys.missing(m) for m in matches)
    }
    out = []
    for match in matches:
        checks = {}
        for keyword, wanted, keys in per_key:
            if keys.missing(match):
                continue
            by = CheckedBy.PEER if keyword in everywhere and keyword not in contradicted \
                else CheckedBy.RETURNED_VALUE
            checks[keyword] = KeyCheck(
                keyword, wanted, by, not keys.contradictions(match), _value(match, keyword)
            )
        out.append(checks)
    return out


def _header_check(entry: _KeyEntry, header: Dataset) -> KeyCheck:
    keyword, wanted, keys = entry
    # A value absent from the instance itself is a true absence, not a peer's omission: it
    # cannot match a key that asks for a value.
    matched = not keys.missing(header) and not keys.contradictions(header)
    return KeyCheck(keyword, wanted, CheckedBy.PROBE_HEADER, matched, _value(header, keyword))


def _value(ds: Dataset, keyword: str) -> object:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return value if isinstance(value, (str, int, float)) else str(value)


# --- probing and retrieving ------------------------------------------------------------------


async def _probe(
    ops: SelectionOperations,
    candidate: CandidateSeries,
    unchecked: list[_KeyEntry],
    *,
    method: Method,
    model: QueryModel,
    order: Mapping[str, int],
) -> tuple[CandidateSeries, list[Instance], list[str]]:
    """Retrieve one instance of the candidate and check ``unchecked`` keys on its header.

    Returns the candidate with those checks, the probe instance (kept only if it matched) and
    the SOP Instance UIDs of the rest of the series."""
    match = candidate.match
    pins = _pins(match, model)
    images = await ops.find(Query.at_level(
        Level.IMAGE, {**pins, "SOPInstanceUID": None, "SOPClassUID": None}, model=model
    )).all()
    uids = [str(image.SOPInstanceUID) for image in images if image.get("SOPInstanceUID")]
    if not uids:
        raise DicomError(
            f"series {candidate.series_instance_uid}: the peer lists no instance at IMAGE "
            "level, so its keys cannot be checked on a header; query it without "
            + ", ".join(keyword for keyword, _, _ in unchecked)
        )
    classes = sorted({str(image.SOPClassUID) for image in images if image.get("SOPClassUID")})
    probe_sink = MemorySink()
    result = await _retrieve(
        ops, _image_query(match, uids[:1], model), method, probe_sink, classes or None
    )
    probe = probe_sink.instances.get(uids[0])
    if probe is None:
        raise DicomError(
            f"series {candidate.series_instance_uid}: the probe instance {uids[0]} did not "
            f"arrive ({result.status_text}); cannot check "
            + ", ".join(keyword for keyword, _, _ in unchecked)
        )
    header = probe.dataset
    checks = [*candidate.checks, *(_header_check(entry, header) for entry in unchecked)]
    probed = attrs.evolve(
        candidate, checks=tuple(sorted(checks, key=lambda check: order[check.keyword])),
        probe_sop_instance_uid=uids[0],
        probe_bytes=result.bytes_received,
    )
    return probed, [probe] if probed.selected else [], uids[1:]


async def _retrieve(
    ops: SelectionOperations,
    what: Query | Dataset,
    method: Method,
    sink: KeepingSink,
    sop_classes: Sequence[str] | None = None,
) -> RetrieveResult:
    if method == "move":
        return await ops.move(what, sink=sink)
    return await ops.get(what, sink=sink, sop_classes=sop_classes)


async def _retrieve_rest(
    ops: SelectionOperations,
    candidate: CandidateSeries,
    remaining: list[str],
    kept: list[Instance],
    method: Method,
    sink: KeepingSink,
    model: QueryModel,
) -> RetrieveResult:
    """The rest of a probed series as a UID list; the whole series if the peer refuses it
    (a failure before any instance arrived) or silently matches nothing with it."""
    try:
        result = await _retrieve(
            ops, _image_query(candidate.match, remaining, model), method, sink,
            _sop_classes(kept),
        )
    except MoveDestinationUnknown:
        raise
    except RetrieveError as exc:
        if exc.result.completed or exc.result.cancelled:
            raise
        result = exc.result
    else:
        if result.completed or result.failed or result.cancelled:
            return result
    log.info(
        "series %s: the peer refused the rest of the series as a list of %d SOP Instance UIDs "
        "(0x%04X, %s, nothing arrived); retrieving the series whole (the probe instance again)",
        candidate.series_instance_uid, len(remaining), result.status, result.status_text,
    )
    return await _retrieve(ops, candidate.match, method, sink)


def _pins(match: Dataset, model: QueryModel) -> dict[str, object]:
    pins: dict[str, object] = {
        "StudyInstanceUID": str(match.StudyInstanceUID),
        "SeriesInstanceUID": str(match.SeriesInstanceUID),
    }
    if model is QueryModel.PATIENT_ROOT:
        pins["PatientID"] = str(match.get("PatientID", ""))
    return pins


def _image_query(match: Dataset, uids: list[str], model: QueryModel) -> Query:
    """IMAGE level, the given instances of the match's series (a UID list when several)."""
    return Query.at_level(
        Level.IMAGE, {**_pins(match, model), "SOPInstanceUID": uids if len(uids) > 1 else uids[0]},
        model=model, required_keys=False,
    )


def _sop_classes(instances: list[Instance]) -> list[str] | None:
    return sorted({i.sop_class_uid for i in instances}) or None


def _instances_of(sink: KeepingSink, uids: list[str]) -> list[Instance]:
    if isinstance(sink, MemorySink):
        return [sink.instances[uid] for uid in uids if uid in sink.instances]
    return [sink.instance(uid) for uid in uids if uid in sink.paths]
