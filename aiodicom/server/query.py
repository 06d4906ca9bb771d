"""C-FIND matching and C-MOVE/C-GET selection over an :class:`InstanceIndex`.

:func:`find` answers a C-FIND identifier with response identifiers, :func:`instances_for_retrieve`
lists what a C-MOVE or C-GET sends and :func:`count_for_retrieve` how many. All three work in
bounded batches: each ``next()`` of their iterators runs a few indexed sqlite queries over at
most ``batch_size`` entities and returns a list (possibly empty: yield to the event loop between
batches even then, as a query that matches nothing still walks the index).

Matching (PS3.4 C.2.2.2) happens in two stages. SQL drops entities where that is safe (unique
keys, exact values and wildcards of case-sensitive text keys, date ranges); every survivor is
then checked in Python by :class:`aiodicom.matching.MatchingKeys`, the library's one
implementation of the matching rules, with the SCP's reading of them:

* an entity whose attribute is empty or absent does not match a non-universal matching key
  (only Empty Value Matching, ``""``, matches empty values);
* person names match case-insensitively and accent-insensitively (PS3.4 leaves this to the
  SCP; Orthanc does the same, dcmqrscp compares bytes);
* several values in a non-UID key match an entity that has any of them;
* a date or time that cannot be parsed is not held against the entity.

Hierarchical rules (baseline, PS3.4 C.4.1.2.1): the identifier names a level of the model; the
unique key of every level above is present with one value; no key of a level below the query
level. Keys of the levels above other than the unique ones are matched against the ancestor
(lenient). Violations raise :class:`IdentifierError` (status A900) or :class:`HierarchyError`
(C000), before any response.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence

import attrs
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from aiodicom.errors import DicomError
from aiodicom.matching import MatchingKeys, is_temporal_key
from aiodicom.query import Level, QueryModel, key_level
from aiodicom.server.index import COLUMN_KEYWORDS, InstanceIndex, StoredInstance, stored_from_row

__all__ = [
    "HierarchyError",
    "IdentifierError",
    "QueryRefused",
    "count_for_retrieve",
    "find",
    "instances_for_retrieve",
    "syntaxes_for_retrieve",
]

_COLUMNS = frozenset(COLUMN_KEYWORDS)
_LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
# Elements of an identifier that are no entity's attributes: the SCP sets or ignores them.
_NOT_ENTITY_TAGS = frozenset(
    {
        0x00080005,  # Specific Character Set: how values are encoded
        0x00080052,  # Query/Retrieve Level
        0x00080053,  # Query/Retrieve View
        0x00080054,  # Retrieve AE Title: the network layer's to fill
        0x00080056,  # Instance Availability
        0x00080201,  # Timezone Offset From UTC
    }
)
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})  # a backslash is text, not a delimiter
_DATE_COLUMNS = frozenset({"StudyDate", "SeriesDate", "PatientBirthDate"})
_EIGHT_DIGITS = "[0-9]" * 8
_EMPTY_VALUE = '""'
_MAX_SQL_LIST = 32


class QueryRefused(DicomError, ValueError):
    """An identifier the SCP refuses; ``status`` is the C-FIND/C-MOVE/C-GET status to send."""

    status: int = 0xC000


class IdentifierError(QueryRefused):
    """No Query/Retrieve Level, or one the information model does not have (A900)."""

    status = 0xA900


class HierarchyError(QueryRefused):
    """The identifier breaks the hierarchical rules: a unique key above the level missing or
    not one value, or a key below the level (C000, unable to process)."""

    status = 0xC000


# -- validation ----------------------------------------------------------------------------


def _values(elem: DataElement | None) -> list[str]:
    if elem is None or elem.value is None or elem.VR == "SQ":
        return []
    value = elem.value
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [text for text in (str(v).strip().rstrip("\0") for v in items) if text]


def _element(ds: Dataset, keyword: str) -> DataElement | None:
    tag = tag_for_keyword(keyword)
    return None if tag is None else ds.get(tag)


def _level_of(identifier: Dataset, model: QueryModel) -> Level:
    if not model.levels:
        raise IdentifierError(f"the {model.value} model has no Query/Retrieve levels")
    raw = _values(_element(identifier, "QueryRetrieveLevel"))
    if len(raw) != 1:
        raise IdentifierError("the identifier has no (single) Query/Retrieve Level")
    try:
        level = Level(raw[0].upper())
    except ValueError:
        raise IdentifierError(f"unknown Query/Retrieve Level {raw[0]!r}") from None
    if level not in model.levels:
        raise IdentifierError(f"the {model.value} model has no {level.value} level")
    return level


def _parents(identifier: Dataset, level: Level, model: QueryModel) -> list[tuple[str, str]]:
    """(unique key, its one value) for every level above ``level``; raises when one is not."""
    found = []
    for above in model.levels[: model.levels.index(level)]:
        keyword = above.unique_key
        values = _values(_element(identifier, keyword))
        if len(values) != 1 or any(c in values[0] for c in "*?"):
            raise HierarchyError(
                f"a {level.value} query needs one value of {keyword} (the unique key of the "
                f"{above.value} level), got {values or 'none'}"
            )
        found.append((keyword, values[0]))
    return found


def _check_no_lower_keys(identifier: Dataset, level: Level, model: QueryModel) -> None:
    allowed = set(model.levels[: model.levels.index(level) + 1])
    if level is Level.STUDY and Level.PATIENT not in model.levels:
        allowed.add(Level.PATIENT)  # Study Root: patient attributes are study level keys
    for elem in identifier:
        if elem.tag in _NOT_ENTITY_TAGS or elem.tag.group in (0x0000, 0x0002):
            continue
        key = key_level(elem.keyword)
        if key is not None and key not in allowed and key in _LEVEL_ORDER:
            raise HierarchyError(
                f"{elem.keyword} is a {key.value} level key, below the query level {level.value}"
            )


def _check_temporal_keys(identifier: Dataset) -> None:
    for elem in identifier:
        if elem.VR in ("DA", "TM", "DT") and elem.tag not in _NOT_ENTITY_TAGS:
            for value in _values(elem):
                if value != _EMPTY_VALUE and not is_temporal_key(elem.VR, value):
                    raise IdentifierError(
                        f"{elem.keyword} {value!r} is neither a {elem.VR} value nor a range"
                    )


def _own_values(identifier: Dataset, keyword: str) -> list[str] | None:
    """The level's unique key values when they name entities (single value or UID list, no
    wildcard); ``None`` to walk every entity."""
    values = _values(_element(identifier, keyword))
    if not values or values == [_EMPTY_VALUE] or any("*" in v or "?" in v for v in values):
        return None
    return sorted(set(values))


# -- SQL prefilter -------------------------------------------------------------------------


def _glob(pattern: str) -> str:
    # GLOB's only other special character is "[": make it literal.
    return pattern.replace("[", "[[]")


def _prefilter(identifier: Dataset) -> tuple[str, list[str]]:
    """SQL conditions on columns that drop only entities Python matching would drop too."""
    clauses: list[str] = []
    args: list[str] = []
    for elem in identifier:
        keyword = elem.keyword
        if keyword not in _COLUMNS or elem.tag in _NOT_ENTITY_TAGS:
            continue
        values = _values(elem)
        if not values or values == [_EMPTY_VALUE]:
            continue
        column = f'"{keyword}"'
        if elem.VR == "UI":
            # A long list (its length is the peer's choice) is left to Python: one statement
            # must stay small, and the level's own UIDs are walked in batches anyway.
            if len(values) <= _MAX_SQL_LIST:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                args += values
        elif len(values) != 1:
            continue
        elif keyword in _DATE_COLUMNS:
            clause = _date_clause(column, values[0], args)
            if clause:
                clauses.append(clause)
        elif elem.VR in _WILDCARD_VRS and elem.VR != "PN" and values[0] != "*":
            # Case-sensitive both here and in matching.py; PN folds case, so it stays in Python.
            if "*" in values[0] or "?" in values[0]:
                clauses.append(f"{column} GLOB ?")
                args.append(_glob(values[0]))
            else:
                clauses.append(f"{column} = ?")
                args.append(values[0])
    return " AND ".join(clauses), args


def _date_clause(column: str, value: str, args: list[str]) -> str | None:
    low, dash, high = value.partition("-")
    if not dash:
        low = high = value
    if not all(len(v) == 8 and v.isdigit() for v in (low, high) if v):
        return None
    bounds = []
    if low:
        bounds.append(f"{column} >= ?")
        args.append(low)
    if high:
        bounds.append(f"{column} <= ?")
        args.append(high)
    # A value that is not YYYYMMDD is left for Python to judge (old "YYYY.MM.DD" forms).
    return f"({column} <> '' AND (NOT {column} GLOB '{_EIGHT_DIGITS}' OR ({' AND '.join(bounds)})))"


# -- entities ------------------------------------------------------------------------------


@attrs.frozen
class _Plan:
    index: InstanceIndex
    level: Level
    parents: list[tuple[str, str]]
    own_values: list[str] | None
    prefilter: tuple[str, list[str]]


def _parent_sql(parents: list[tuple[str, str]]) -> tuple[str, list[str]]:
    return " AND ".join(f'"{k}" = ?' for k, _ in parents), [v for _, v in parents]


def _join(*clauses: str) -> str:
    kept = [c for c in clauses if c]
    return " AND ".join(kept) if kept else "1"


def _entity_batches(plan: _Plan, batch_size: int) -> Iterator[list[sqlite3.Row]]:
    """Representative rows (the first instance passing the prefilter) of each next batch of
    entities at the plan's level, in unique key order."""
    db = plan.index.connection
    key = plan.level.unique_key
    parent_sql, parent_args = _parent_sql(plan.parents)
    filter_sql, filter_args = plan.prefilter
    if plan.own_values is not None:
        chunks: Iterator[list[str]] = (
            plan.own_values[i : i + batch_size]
            for i in range(0, len(plan.own_values), batch_size)
        )
    else:
        chunks = _walk_keys(db, key, parent_sql, parent_args, batch_size)
    for chunk in chunks:
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(
            f'SELECT MIN(rowid) FROM instances WHERE "{key}" IN ({marks}) AND '
            f'{_join(parent_sql, filter_sql)} GROUP BY "{key}" ORDER BY "{key}"',
            [*chunk, *parent_args, *filter_args],
        ).fetchall()
        rowids = [r[0] for r in rows]
        found = db.execute(
            f"SELECT rowid, * FROM instances WHERE rowid IN ({', '.join('?' * len(rowids))})",
            rowids,
        ).fetchall()
        by_rowid = {r["rowid"]: r for r in found}
        yield [by_rowid[r] for r in rowids if r in by_rowid]


def _walk_keys(
    db: sqlite3.Connection, key: str, parent_sql: str, parent_args: list[str], batch_size: int
) -> Iterator[list[str]]:
    """The distinct values of ``key`` under the parents, ``batch_size`` at a time: each one
    an index seek (MIN over an index whose prefix is the parents), never a scan."""
    first = f'SELECT MIN("{key}") FROM instances WHERE {_join(parent_sql)}'
    after = f'"{key}" > ?'
    following = f'SELECT MIN("{key}") FROM instances WHERE {_join(parent_sql, after)}'
    last: str | None = None
    while True:
        chunk: list[str] = []
        while len(chunk) < batch_size:
            if last is None:
                row = db.execute(first, parent_args).fetchone()
            else:
                row = db.execute(following, [*parent_args, last]).fetchone()
            if row is None or row[0] is None:
                if chunk:
                    yield chunk
                return
            last = str(row[0])
            chunk.append(last)
        yield chunk


# -- responses -----------------------------------------------------------------------------


def _split(vr: str, text: str) -> str | list[str]:
    if vr in _SINGLE_TEXT_VRS or "\\" not in text:
        return text
    return text.split("\\")


class _Entity:
    """One entity's attributes, read from its representative row when a key asks for them."""

    def __init__(self, db: sqlite3.Connection, row: sqlite3.Row) -> None:
        self._db = db
        self._row = row
        self._attributes: dict[str, object] | None = None
        self._aggregates: dict[str, dict[str, object]] = {}

    def element(self, query: DataElement) -> DataElement:
        """The entity's value of the identifier's element ``query`` (empty when unknown)."""
        keyword = query.keyword
        vr = query.VR
        if keyword in _COLUMNS:
            return DataElement(query.tag, vr, _split(vr, str(self._row[keyword])))
        derived = self._derived(keyword)
        if derived is not None:
            return DataElement(query.tag, vr, derived)
        stored = self._stored_element(query.tag)
        if stored is None:
            return DataElement(query.tag, vr, DicomSequence() if vr == "SQ" else None)
        if vr == "SQ":
            return DataElement(query.tag, "SQ", _sequence_answer(query, stored))
        return DataElement(query.tag, vr, stored.value)

    def _stored_element(self, tag: int) -> DataElement | None:
        # json.loads is cheap; pydicom's conversion is not: convert only what is asked for.
        if self._attributes is None:
            self._attributes = json.loads(self._row["attributes"])
        key = f"{tag:08X}"
        entry = self._attributes.get(key)
        if entry is None:
            return None
        element: DataElement = Dataset.from_json({key: entry})[tag]
        return element

    def _derived(self, keyword: str) -> object | None:
        if keyword.startswith("NumberOfPatientRelated"):
            counts = self._aggregate("PatientID")
        elif keyword.startswith("NumberOfStudyRelated") or keyword in (
            "ModalitiesInStudy",
            "SOPClassesInStudy",
        ):
            counts = self._aggregate("StudyInstanceUID")
        elif keyword == "NumberOfSeriesRelatedInstances":
            counts = self._aggregate("SeriesInstanceUID")
        else:
            return None
        return counts[keyword.rsplit("Related", 1)[-1] if "Related" in keyword else keyword]

    def _aggregate(self, key: str) -> dict[str, object]:
        # One indexed query over the entity's own instances, only when asked for.
        if key not in self._aggregates:
            counts = self._db.execute(
                "SELECT COUNT(DISTINCT StudyInstanceUID), COUNT(DISTINCT SeriesInstanceUID), "
                "COUNT(*), GROUP_CONCAT(DISTINCT Modality), GROUP_CONCAT(DISTINCT SOPClassUID) "
                f'FROM instances WHERE "{key}" = ?',
                (self._row[key],),
            ).fetchone()
            modalities = sorted(
                {m for m in (counts[3] or "").replace("\\", ",").split(",") if m}
            )
            self._aggregates[key] = {
                "Studies": str(counts[0]),
                "Series": str(counts[1]),
                "Instances": str(counts[2]),
                "ModalitiesInStudy": modalities,
                "SOPClassesInStudy": sorted(set((counts[4] or "").split(",")) - {""}),
            }
        return self._aggregates[key]


def _sequence_answer(query: DataElement, stored: DataElement) -> DicomSequence:
    """The entity's items, each reduced to the keys of the query's item (all if it has none)."""
    wanted = query.value[0] if query.value else None
    answer = DicomSequence()
    for item in stored.value or ():
        if wanted is None or len(wanted) == 0:
            answer.append(item)
            continue
        reduced = Dataset()
        for sub in wanted:
            have = item.get(sub.tag)
            reduced.add(have if have is not None else DataElement(sub.tag, sub.VR, None))
        answer.append(reduced)
    return answer


def _non_ascii(ds: Dataset) -> bool:
    for elem in ds:
        if elem.VR == "SQ":
            if any(_non_ascii(item) for item in elem.value or ()):
                return True
        elif elem.VR in _WILDCARD_VRS and elem.value is not None:
            values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
            if any(not str(v).isascii() for v in values):
                return True
    return False


# -- public API ----------------------------------------------------------------------------


def find(
    index: InstanceIndex,
    identifier: Dataset,
    model: QueryModel,
    *,
    batch_size: int = 8,
    retrieve_ae_title: str | None = None,
) -> Iterator[list[Dataset]]:
    """Match a C-FIND identifier; an iterator of batches of response identifiers.

    Validates at once (raising :class:`QueryRefused` subclasses, before any response), then
    each ``next()`` examines at most ``batch_size`` entities. Each response has the
    identifier's keys (values from the index, empty when the entity has none), the
    Query/Retrieve Level, Retrieve AE Title when the identifier asks (``retrieve_ae_title``,
    empty if not given), Instance Availability "ONLINE" when asked, and Specific Character
    Set "ISO_IR 192" when a value is not ASCII (absent otherwise: the default repertoire).
    """
    level = _level_of(identifier, model)
    parents = _parents(identifier, level, model)
    _check_no_lower_keys(identifier, level, model)
    _check_temporal_keys(identifier)
    plan = _Plan(
        index=index,
        level=level,
        parents=parents,
        own_values=_own_values(identifier, level.unique_key),
        prefilter=_prefilter(identifier),
    )
    keys = [e for e in identifier if e.tag not in _NOT_ENTITY_TAGS and e.tag.group > 0x0002]
    matching = Dataset()
    for elem in keys:
        matching.add(elem)
    return _find_batches(
        plan,
        keys,
        MatchingKeys(matching),
        batch_size,
        retrieve_ae_title,
        wants_retrieve_ae_title="RetrieveAETitle" in identifier,
        wants_availability="InstanceAvailability" in identifier,
    )


def _find_batches(
    plan: _Plan,
    keys: list[DataElement],
    matching: MatchingKeys,
    batch_size: int,
    retrieve_ae_title: str | None,
    *,
    wants_retrieve_ae_title: bool,
    wants_availability: bool,
) -> Iterator[list[Dataset]]:
    db = plan.index.connection
    for rows in _entity_batches(plan, batch_size):
        batch = []
        for row in rows:
            entity = _Entity(db, row)
            candidate = Dataset()
            for query in keys:
                candidate.add(entity.element(query))
            if matching and (matching.missing(candidate) or matching.contradictions(candidate)):
                continue
            response = Dataset()
            if _non_ascii(candidate):
                response.SpecificCharacterSet = "ISO_IR 192"
            response.QueryRetrieveLevel = plan.level.value
            if wants_retrieve_ae_title:
                response.RetrieveAETitle = retrieve_ae_title or ""
            if wants_availability:
                response.InstanceAvailability = "ONLINE"  # every indexed instance can be sent
            for elem in candidate:
                response.add(elem)
            batch.append(response)
        yield batch


def _retrieve_plan(
    identifier: Dataset, model: QueryModel
) -> tuple[Level, list[str], list[tuple[str, str]]]:
    level = _level_of(identifier, model)
    own = _values(_element(identifier, level.unique_key))
    if not own or any("*" in v or "?" in v for v in own):
        raise HierarchyError(
            f"a {level.value} retrieval needs {level.unique_key} values (no wildcards)"
        )
    # Lenient: the unique keys above, when present, must be one value each and restrict the
    # selection; when absent the UIDs of the level suffice (they are unique on their own).
    parents = []
    for above in model.levels[: model.levels.index(level)]:
        values = _values(_element(identifier, above.unique_key))
        if len(values) > 1 or any("*" in v or "?" in v for v in values):
            raise HierarchyError(f"{above.unique_key} must be a single value in a retrieval")
        if values:
            parents.append((above.unique_key, values[0]))
    return level, sorted(set(own)), parents


# Index order below each level: what a retrieval walks, resuming after the last row seen.
_BELOW = {
    Level.PATIENT: ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
    Level.STUDY: ("SeriesInstanceUID", "SOPInstanceUID"),
    Level.SERIES: ("SOPInstanceUID",),
    Level.IMAGE: (),
}


def instances_for_retrieve(
    index: InstanceIndex, identifier: Dataset, model: QueryModel, *, batch_size: int = 64
) -> Iterator[list[StoredInstance]]:
    """What a C-MOVE or C-GET with ``identifier`` sends, in batches of at most ``batch_size``.

    The identifier holds the Query/Retrieve Level and the unique key of that level (one value
    or a UID list); unique keys of the levels above are optional, one value each, and restrict
    the selection when given. Validation raises at once, as :func:`find`'s does.
    """
    level, own, parents = _retrieve_plan(identifier, model)
    return _retrieve_batches(index, level, own, parents, batch_size)


def _retrieve_batches(
    index: InstanceIndex,
    level: Level,
    own: Sequence[str],
    parents: list[tuple[str, str]],
    batch_size: int,
) -> Iterator[list[StoredInstance]]:
    db = index.connection
    parent_sql, parent_args = _parent_sql(parents)
    key = level.unique_key
    below = _BELOW[level]
    if not below:
        for i in range(0, len(own), batch_size):
            chunk = own[i : i + batch_size]
            rows = db.execute(
                f"SELECT * FROM instances WHERE SOPInstanceUID IN ({', '.join('?' * len(chunk))})"
                f" AND {_join(parent_sql)} ORDER BY SOPInstanceUID",
                [*chunk, *parent_args],
            ).fetchall()
            yield [stored_from_row(r) for r in rows]
        return
    order = ", ".join(f'"{c}"' for c in below)
    for value in own:
        after: tuple[str, ...] | None = None
        while True:
            resume = ""
            args: list[str] = [value, *parent_args]
            if after is not None:
                resume = f"({order}) > ({', '.join('?' * len(below))})"
                args += after
            rows = db.execute(
                f'SELECT * FROM instances WHERE "{key}" = ? AND {_join(parent_sql, resume)} '
                f"ORDER BY {order} LIMIT ?",
                [*args, batch_size],
            ).fetchall()
            if rows:
                yield [stored_from_row(r) for r in rows]
            if len(rows) < batch_size:
                break
            after = tuple(str(rows[-1][c]) for c in below)


def count_for_retrieve(index: InstanceIndex, identifier: Dataset, model: QueryModel) -> int:
    """How many instances :func:`instances_for_retrieve` yields (the sub-operation count).

    One indexed COUNT per UID of the identifier.
    """
    level, own, parents = _retrieve_plan(identifier, model)
    parent_sql, parent_args = _parent_sql(parents)
    total = 0
    for value in own:
        (count,) = index.connection.execute(
            f'SELECT COUNT(*) FROM instances WHERE "{level.unique_key}" = ? AND '
            f"{_join(parent_sql)}",
            [value, *parent_args],
        ).fetchone()
        total += int(count)
    return total


def syntaxes_for_retrieve(
    index: InstanceIndex, identifier: Dataset, model: QueryModel
) -> list[tuple[str, str]]:
    """The distinct (SOP Class UID, Transfer Syntax UID) pairs :func:`instances_for_retrieve`
    yields, in the order first met: what a C-MOVE proposes to its destination.

    One indexed SELECT DISTINCT per UID of the identifier (the instances are not walked).
    """
    level, own, parents = _retrieve_plan(identifier, model)
    parent_sql, parent_args = _parent_sql(parents)
    pairs: dict[tuple[str, str], None] = {}
    for value in own:
        rows = index.connection.execute(
            f'SELECT DISTINCT SOPClassUID, TransferSyntaxUID FROM instances WHERE '
            f'"{level.unique_key}" = ? AND {_join(parent_sql)}',
            [value, *parent_args],
        ).fetchall()
        pairs.update(dict.fromkeys((str(row[0]), str(row[1])) for row in rows))
    return list(pairs)
