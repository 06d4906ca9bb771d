"""The query model: build C-FIND identifiers from typed Python values, checked before sending.

A :class:`Query` holds the Query/Retrieve level, the information model and the keys, each key a
DICOM keyword mapped to a Python value. A key given empty (``None`` or ``""``) is a *return key*
(universal matching: "send me this attribute"); any other value makes it a *matching key*.

Values are typed where DICOM has types:

* ``datetime.date`` / ``datetime.time`` / ``datetime.datetime`` for DA / TM / DT keys;
* ``(start, end)`` tuples for range matching on DA / TM / DT keys, either end ``None`` for an
  open range; strings such as ``"20240101-20240131"`` are accepted too and checked for form;
* a list or tuple of UIDs for UI keys (List of UID Matching);
* ``*`` and ``?`` wildcards in string keys whose VR allows them;
* a ``dict`` (or a pydicom ``Dataset``) for SQ keys (Sequence Matching), built recursively.

Problems a key has on its own (unknown keyword, a value its VR cannot carry) raise
:class:`QueryError` when the query is built; the hierarchical rules of PS3.4 C.4.1.2, which depend
on what the association negotiated, are checked by :meth:`Query.validate`.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from aiodicom.errors import QueryError
from aiodicom.model import (
    LEVEL_ORDER,
    STEP_ONLY_KEYS,
    STEP_SEQUENCE,
    Level,
    QueryModel,
    key_level,
    with_required_keys,
)
from aiodicom.values import (
    Keys,
    charset_terms,
    dataset_to_keys,
    element,
    encodable,
    has_matching_value,
    is_single_value,
    iter_strings,
    normalize_keys,
    vr_of,
)
from aiodicom.vr import CHARSET_VRS

# Level, QueryModel, QueryError and key_level live in the modules that define them; they are
# exported here too because callers know them as part of the query API.
__all__ = ["Level", "Query", "QueryError", "QueryModel", "key_level", "retrieve_identifier"]


def _convert_keys(keys: Mapping[str, object] | Dataset) -> Keys:
    return normalize_keys(keys)



@attrs.frozen
class Query:
    """A C-FIND query: a level, an information model and keys, checked as it is built.

    Build one with :meth:`patient`, :meth:`study`, :meth:`series`, :meth:`image`,
    :meth:`worklist` or :meth:`from_dataset`; derive variants with :meth:`with_keys`.
    """

    level: Level | None
    model: QueryModel
    keys: Mapping[str, object] = attrs.field(factory=dict, converter=_convert_keys)
    character_set: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.model, QueryModel):
            raise QueryError(f"model must be a QueryModel, not {self.model!r}")
        if self.model is QueryModel.WORKLIST:
            if self.level is not None:
                raise QueryError("a worklist query has no level: use Query.worklist(...)")
        elif self.level is None:
            raise QueryError(f"a {self.model.value} query needs a level (PATIENT, STUDY, ...)")
        elif self.level not in self.model.levels:
            available = ", ".join(lvl.value for lvl in self.model.levels)
            hint = (
                "; use model=QueryModel.PATIENT_ROOT"
                if self.level is Level.PATIENT
                else "; use model=QueryModel.STUDY_ROOT or PATIENT_ROOT"
            )
            raise QueryError(
                f"the {self.model.value} model has no {self.level.value} level "
                f"(its levels: {available}){hint}"
            )
        if self.character_set is not None:
            self._check_character_set(self.character_set)

    def _check_character_set(self, character_set: str) -> None:
        terms = charset_terms(character_set)
        for path, vr, text in iter_strings(self.keys):
            if vr in CHARSET_VRS and not encodable(text, terms):
                raise QueryError(
                    f"{path}: {text!r} cannot be encoded in character set {character_set!r}; "
                    "leave character_set=None to send UTF-8 (ISO_IR 192)",
                    path,
                )

    # -- builders -----------------------------------------------------------------------------

    @classmethod
    def _build(
        cls,
        level: Level | None,
        model: QueryModel,
        keys: Mapping[str, object],
        required_keys: bool,
        character_set: str | None,
    ) -> Query:
        if model is QueryModel.WORKLIST and level is not None:
            raise QueryError(f"the worklist has no {level.value} level: use Query.worklist(...)")
        if model is not QueryModel.WORKLIST and level is None:
            raise QueryError("Query.worklist() takes model=QueryModel.WORKLIST only")
        merged = dict(normalize_keys(keys))
        if required_keys:
            merged = with_required_keys(level, model, merged)
        return cls(level=level, model=model, keys=merged, character_set=character_set)

    @classmethod
    def at_level(
        cls,
        level: Level,
        keys: Mapping[str, object],
        *,
        model: QueryModel = QueryModel.STUDY_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
    ) -> Query:
        """A query at ``level`` with ``keys`` given as a mapping (for code that builds them)."""
        return cls._build(level, model, keys, required_keys, character_set)

    @classmethod
    def patient(
        cls,
        *,
        model: QueryModel = QueryModel.PATIENT_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """A PATIENT-level query (Patient Root by default: Study Root has no PATIENT level)."""
        return cls._build(Level.PATIENT, model, keys, required_keys, character_set)

    @classmethod
    def study(
        cls,
        *,
        model: QueryModel = QueryModel.STUDY_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """A STUDY-level query."""
        return cls._build(Level.STUDY, model, keys, required_keys, character_set)

    @classmethod
    def series(
        cls,
        *,
        model: QueryModel = QueryModel.STUDY_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """A SERIES-level query; hierarchically it needs the StudyInstanceUID of one study."""
        return cls._build(Level.SERIES, model, keys, required_keys, character_set)

    @classmethod
    def image(
        cls,
        *,
        model: QueryModel = QueryModel.STUDY_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """An IMAGE-level query; hierarchically it needs StudyInstanceUID and SeriesInstanceUID."""
        return cls._build(Level.IMAGE, model, keys, required_keys, character_set)

    @classmethod
    def worklist(
        cls,
        *,
        model: QueryModel = QueryModel.WORKLIST,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """A Modality Worklist query; step keys go in ``ScheduledProcedureStepSequence={...}``."""
        if model is not QueryModel.WORKLIST:
            raise QueryError(f"Query.worklist() takes model=QueryModel.WORKLIST, not {model}")
        return cls._build(None, model, keys, required_keys, character_set)

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        model: QueryModel | None = None,
        *,
        required_keys: bool = False,
    ) -> Query:
        """The query an existing identifier expresses.

        The level comes from QueryRetrieveLevel; without ``model`` a PATIENT identifier is read
        as Patient Root and any other as Study Root. A worklist identifier (which has no
        QueryRetrieveLevel) needs ``model=QueryModel.WORKLIST``. Required keys are not added
        unless asked, so that the identifier is reproduced as it was.
        """
        raw_level = ds.get("QueryRetrieveLevel")
        if model is QueryModel.WORKLIST:
            if raw_level:
                raise QueryError(
                    "QueryRetrieveLevel has no place in a worklist identifier", "QueryRetrieveLevel"
                )
            level = None
        else:
            if not raw_level:
                raise QueryError(
                    "the identifier has no QueryRetrieveLevel; for a worklist identifier pass "
                    "model=QueryModel.WORKLIST",
                    "QueryRetrieveLevel",
                )
            try:
                level = Level(str(raw_level).strip())
            except ValueError:
                raise QueryError(
                    f"QueryRetrieveLevel {raw_level!r} is none of PATIENT, STUDY, SERIES, IMAGE",
                    "QueryRetrieveLevel",
                ) from None
            if model is None:
                model = QueryModel.PATIENT_ROOT if level is Level.PATIENT else QueryModel.STUDY_ROOT
        charset = ds.get("SpecificCharacterSet")
        character_set: str | None = None
        if isinstance(charset, MultiValue):
            character_set = "\\".join(str(v) for v in charset) or None
        elif charset:
            character_set = str(charset)
        body = Dataset()
        for elem in ds:
            if elem.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                body.add(elem)
        return cls._build(level, model, dataset_to_keys(body), required_keys, character_set)

    def with_keys(self, **keys: object) -> Query:
        """A new query with ``keys`` added, or replacing keys of the same name."""
        merged = dict(self.keys)
        merged.update(keys)
        return attrs.evolve(self, keys=merged)

    # -- views --------------------------------------------------------------------------------

    @property
    def matching_keys(self) -> dict[str, object]:
        """Keys with a value to match; a sequence counts when an item key has one."""
        return {k: v for k, v in self.keys.items() if has_matching_value(v)}

    @property
    def return_keys(self) -> list[str]:
        """Keys given empty: the peer fills them in (universal matching)."""
        return [k for k, v in self.keys.items() if not has_matching_value(v)]

    @property
    def effective_character_set(self) -> str | None:
        """The Specific Character Set :meth:`to_dataset` sends, or ``None`` for none."""
        if self.character_set is not None:
            return self.character_set
        if any(not text.isascii() for _, _, text in iter_strings(self.keys)):
            return "ISO_IR 192"
        return None

    def sop_class_uid(self, service: str) -> str:
        """The SOP Class UID of ``service`` ("find", "move" or "get") for the query's model."""
        # Branches, not a table: this runs twice for every C-FIND.
        model = self.model
        if service == "find":
            uid = model.find_sop_class
        elif service == "move":
            uid = model.move_sop_class
        elif service == "get":
            uid = model.get_sop_class
        else:
            raise QueryError(f"service must be 'find', 'move' or 'get', not {service!r}")
        if uid is None:
            raise QueryError(
                f"the {self.model.value} model defines no C-{service.upper()} SOP class"
            )
        return uid

    # -- checks -------------------------------------------------------------------------------

    def validate(self, relational: bool = False) -> None:
        """Check the rules an SCP applies to the identifier, raising :class:`QueryError`.

        Hierarchical (baseline) queries, PS3.4 C.4.1.2.1: every level above the query level is
        pinned by a single value of its unique key, carries no other matching key, and no key
        belongs to a level below. ``relational=True`` (when the peer accepted relational
        queries in extended negotiation) lifts the rules about the levels above.
        """
        problems: list[tuple[str, str]] = []
        if self.level is None:
            self._worklist_problems(problems)
        else:
            self._hierarchy_problems(self.level, relational, problems)
        if problems:
            message = "; ".join(text for _, text in problems)
            raise QueryError(message, problems[0][0])

    def _worklist_problems(self, problems: list[tuple[str, str]]) -> None:
        for keyword in self.keys:
            if keyword in STEP_ONLY_KEYS:
                problems.append(
                    (
                        keyword,
                        f"{keyword} belongs inside {STEP_SEQUENCE} in a worklist query (PS3.4 "
                        f"Table K.6-1), where the SCP looks for it: Query.worklist("
                        f"{STEP_SEQUENCE}={{{keyword!r}: ...}})",
                    )
                )

    def _hierarchy_problems(
        self, level: Level, relational: bool, problems: list[tuple[str, str]]
    ) -> None:
        levels = self.model.levels
        position = levels.index(level)
        above = levels[:position]
        if not relational:
            for upper in above:
                unique = upper.unique_key
                value = self.keys.get(unique)
                if value is None:
                    problems.append((unique, self._missing_unique_message(level, upper, unique)))
                elif not is_single_value(value):
                    problems.append(
                        (
                            unique,
                            f"{unique} must be a single value in a hierarchical {level.value} "
                            f"query: it identifies the one {upper.value.lower()} to look in "
                            "(PS3.4 C.4.1.2.1), so no wildcard, list or range; query the "
                            f"{upper.value} level first, or use relational queries",
                        )
                    )
        for keyword, value in self.keys.items():
            keyword_level = key_level(keyword, self.model)
            if keyword_level is None or keyword_level is level:
                continue
            if LEVEL_ORDER.index(keyword_level) > LEVEL_ORDER.index(level):
                where = (
                    f"the {self.model.value} model has no {keyword_level.value} level"
                    if keyword_level not in levels
                    else f"query at the {keyword_level.value} level to match or return it"
                )
                problems.append(
                    (
                        keyword,
                        f"{keyword} is a {keyword_level.value}-level key, below this "
                        f"{level.value} query, which cannot carry it (PS3.4 C.4.1.2.1); {where}",
                    )
                )
            elif (
                not relational
                and keyword_level in above
                and keyword != keyword_level.unique_key
                and has_matching_value(value)
            ):
                problems.append(
                    (
                        keyword,
                        f"{keyword} is a {keyword_level.value}-level key: a hierarchical "
                        f"{level.value} query matches the levels above only through their unique "
                        f"key ({keyword_level.unique_key}), so a peer would ignore or refuse "
                        f"{keyword}={value!r} (PS3.4 C.4.1.2.1); select the "
                        f"{keyword_level.value.lower()} first, or use relational queries",
                    )
                )

    def _missing_unique_message(self, level: Level, upper: Level, unique: str) -> str:
        text = (
            f"{unique} is missing: a hierarchical {level.value} query in the {self.model.value} "
            f"model needs the single {unique} of the {upper.value.lower()} above it "
            "(PS3.4 C.4.1.2.1)"
        )
        if level is Level.SERIES and upper is Level.STUDY:
            text += (
                "; find the study first, or let peer.find_series(...) walk the hierarchy "
                "(STUDY, then SERIES) for you"
            )
        elif level is Level.IMAGE and upper is Level.SERIES:
            text += "; find the series first (Query.series(...) or peer.find_series(...))"
        elif upper is Level.STUDY:
            text += "; find the study first (Query.study(...))"
        elif upper is Level.PATIENT:
            text += "; find the patient first (Query.patient(...)), or use model=STUDY_ROOT"
        return text + ", or, if the peer accepted relational queries, validate(relational=True)"

    # -- encoding -----------------------------------------------------------------------------

    def to_dataset(self) -> Dataset:
        """The C-FIND identifier: every key encoded for its VR, empty for return keys."""
        ds = Dataset()
        charset = self.effective_character_set
        if charset is not None:
            terms = charset.split("\\")
            ds.SpecificCharacterSet = terms if len(terms) > 1 else terms[0]
        if self.level is not None:
            ds.QueryRetrieveLevel = self.level.value
        for keyword, value in self.keys.items():
            vr = vr_of(keyword)
            ds.add(element(keyword, vr, value))
        return ds

    def retrieve_identifier(self) -> Dataset:
        """The C-MOVE / C-GET identifier: QueryRetrieveLevel and the unique keys down to it.

        See :func:`retrieve_identifier`, which builds it.
        """
        return retrieve_identifier(self)


def retrieve_identifier(source: Query | Dataset, model: QueryModel | None = None) -> Dataset:
    """The C-MOVE / C-GET identifier of a :class:`Query` or of a C-FIND match (PS3.4 C.4.2.2.1):
    QueryRetrieveLevel and the unique keys from the top of the model down to that level.

    A query brings its model. A match does not say, so ``model`` tells it: Study Root has no
    Patient ID among its unique keys, so a match's Patient ID is left out there; without
    ``model`` every level's unique key is kept. The unique key of the level must have a value
    (one UID, a UID list, or one Patient ID without wildcards); those of the levels above are
    included when they have one. Raises :class:`QueryError` otherwise.
    """
    kept: dict[str, DataElement] = {}
    if isinstance(source, Query):
        if source.level is None:
            raise QueryError("a worklist query cannot be retrieved (no C-MOVE / C-GET)")
        level, levels = source.level, source.model.levels
        for upper in levels:
            value = source.keys.get(upper.unique_key)
            if value is not None:
                kept[upper.unique_key] = element(upper.unique_key, vr_of(upper.unique_key), value)
        declared: object = source.character_set
    else:
        level = _identifier_level(source)
        levels = model.levels if model is not None else LEVEL_ORDER
        if level not in levels:
            assert model is not None
            raise QueryError(
                f"the {model.value} model has no {level.value} level", "QueryRetrieveLevel"
            )
        for upper in levels:
            if source.get(upper.unique_key) not in (None, ""):
                kept[upper.unique_key] = source[upper.unique_key]
        declared = source.get("SpecificCharacterSet")
    unique = level.unique_key
    found = kept.get(unique)
    if found is None or (isinstance(found.value, str) and not is_single_value(found.value)):
        raise QueryError(
            f"{unique}: a {level.value} retrieve needs the {unique} value(s) to fetch", unique
        )
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level.value
    for upper in levels[: levels.index(level) + 1]:
        if upper.unique_key in kept:
            identifier.add(kept[upper.unique_key])
    non_ascii = any(
        elem.VR in CHARSET_VRS and isinstance(elem.value, str) and not elem.value.isascii()
        for elem in identifier
    )
    if declared:
        identifier.SpecificCharacterSet = declared
    elif non_ascii:
        # Values are str by now; with no character set declared they go out as UTF-8.
        identifier.SpecificCharacterSet = "ISO_IR 192"
    return identifier


def _identifier_level(identifier: Dataset) -> Level:
    raw_level = identifier.get("QueryRetrieveLevel")
    try:
        return Level(str(raw_level or "").strip())
    except ValueError:
        raise QueryError(
            f"QueryRetrieveLevel {raw_level!r} is none of PATIENT, STUDY, SERIES, IMAGE",
            "QueryRetrieveLevel",
        ) from None
