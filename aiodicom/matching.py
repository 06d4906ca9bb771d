"""Local evaluation of C-FIND attribute matching (PS3.4 C.2.2.2) against a peer's responses.

Peers differ in which keys they honour: some ignore optional matching keys and send every
entity, some return a key empty. These functions let the find service notice that and, when
asked to be strict, drop responses that contradict the query.

Both functions err on the side of the response: a value that cannot be parsed, a key the
response lacks, a partial date or time that overlaps a range, all count as "no contradiction".
Dropping a true match is worse than keeping a false one, which the caller can still see.
"""

from __future__ import annotations

import calendar
import datetime
import math
import re
import unicodedata
from collections.abc import Iterator

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from aiodicom.datasets import shared_tag
from aiodicom.vr import EMPTY_VALUE, LEADING_SPACE_VRS, NUMERIC_VRS, TEMPORAL_VRS, WILDCARD_VRS

__all__ = ["MatchingKeys", "contradictions", "is_temporal_key", "missing_matching_keys"]

# Never matched: Specific Character Set says how values are encoded (PS3.4 C.2.2.2), the level
# and view say what is queried, the timezone offset qualifies the other values.
_NOT_KEYS = frozenset({0x00080005, 0x00080052, 0x00080053, 0x00080201})


def missing_matching_keys(identifier: Dataset, response: Dataset) -> list[str]:
    """Keywords of the identifier's matching keys that the response leaves out or empty.

    An SCP returns every matching key with its value, so a missing one suggests the peer did
    not match on it. A sequence key counts as missing when the response has no item, or when an
    item key with a value is absent from every item.
    """
    return MatchingKeys(identifier).missing(response)


def contradictions(
    identifier: Dataset, response: Dataset, *, case_sensitive_pn: bool = False
) -> list[str]:
    """Keywords whose response value contradicts the identifier's matching key.

    Single values, wildcards (``*``, ``?``), DA/TM/DT ranges with open ends, UID lists,
    multi-valued attributes (any value may match) and sequences (any item may match) are
    evaluated as PS3.4 C.2.2.2 says. PS3.4 leaves the case sensitivity of person names to the
    SCP; the default tolerates case and accents, as Orthanc and many archives do.
    """
    return MatchingKeys(identifier).contradictions(response, case_sensitive_pn=case_sensitive_pn)


class MatchingKeys:
    """The matching keys of one identifier, found once to check each of many responses.

    ``unjudged``: keywords :meth:`contradictions` leaves alone (their matching follows rules
    negotiated with the peer that a value-by-value check cannot follow).
    """

    def __init__(self, identifier: Dataset, *, unjudged: frozenset[str] = frozenset()) -> None:
        self._elements = list(_matching_elements(identifier))
        self._judged = [e for e in self._elements if e.keyword not in unjudged]
        # UID keys (the unique keys pinning a hierarchical query: in every response) are
        # compared as raw bytes, sparing pydicom's conversion and validation of each value.
        self._uids = {
            e.tag: frozenset(str(v).strip().rstrip("\0").encode("ascii", "replace")
                             for v in _values(e))
            for e in self._elements if e.VR == "UI"
        }
        # What contradictions() walks for every response, worked out once; shared_tag: the
        # key objects of decoded responses, found by identity.
        self._keys = tuple((e, shared_tag(e.tag), _name(e)) for e in self._elements)
        self._checks = tuple(
            (e, shared_tag(e.tag), _name(e), self._uids.get(e.tag)) for e in self._judged
        )

    def __bool__(self) -> bool:
        return bool(self._elements)

    def missing(self, response: Dataset) -> list[str]:
        """As :func:`missing_matching_keys`."""
        missing = []
        for qelem, tag, name in self._keys:
            raw = self._raw_uids(response, tag)
            if raw is not None:
                if not raw:
                    missing.append(name)
                continue
            relem = response.get(tag)
            if relem is None or _is_missing(qelem, relem):
                missing.append(name)
        return missing

    def contradictions(self, response: Dataset, *, case_sensitive_pn: bool = False) -> list[str]:
        """As :func:`contradictions`."""
        found = []
        get_item = response.get_item
        for qelem, tag, name, uids in self._checks:
            if uids is not None:
                elem = get_item(tag, keep_deferred=True)
                if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
                    value = elem.value
                    if b"\\" in value:
                        raw = _split_uids(value)
                        if raw and uids.isdisjoint(raw):
                            found.append(name)
                    else:
                        # One UID, the usual case: no list to build.
                        uid = value.strip(b" \0")
                        if uid and uid not in uids:
                            found.append(name)
                    continue
            relem = response.get(tag)
            if relem is not None and _contradicts(qelem, relem, case_sensitive_pn):
                found.append(name)
        return found

    def _raw_uids(self, response: Dataset, tag: int) -> list[bytes] | None:
        """The UIDs of a raw UI element as bytes; ``None`` to take the general path (not a UID
        key, absent, or already converted)."""
        if tag not in self._uids:
            return None
        elem = response.get_item(tag, keep_deferred=True)
        if not isinstance(elem, RawDataElement) or not isinstance(elem.value, bytes):
            return None
        return _split_uids(elem.value)


def _split_uids(value: bytes) -> list[bytes]:
    return [uid for uid in (v.strip(b" \0") for v in value.split(b"\\")) if uid]


def _name(elem: DataElement) -> str:
    return elem.keyword or str(elem.tag)


def _values(elem: DataElement) -> list[object]:
    value = elem.value
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, (MultiValue, Sequence, list, tuple)):
        return [v for v in value if not (v is None or v == "")]
    return [value]


def _matching_elements(ds: Dataset) -> Iterator[DataElement]:
    for elem in ds:
        tag = elem.tag
        if tag in _NOT_KEYS or tag.is_private or tag.group in (0x0000, 0x0002) or tag.element == 0:
            continue
        if _is_matching(elem):
            yield elem


def _is_matching(elem: DataElement) -> bool:
    if elem.VR == "SQ":
        items = _values(elem)
        return (
            bool(items)
            and isinstance(items[0], Dataset)
            and any(True for _ in _matching_elements(items[0]))
        )
    values = _values(elem)
    if not values:
        return False
    # A lone "*" is Universal Matching in disguise (PS3.4 C.2.2.2.4).
    return not (elem.VR in WILDCARD_VRS and all(str(v).strip() == "*" for v in values))


def _is_missing(qelem: DataElement, relem: DataElement) -> bool:
    rvalues = _values(relem)
    if qelem.VR != "SQ":
        # An empty response value is what Empty Value Matching asks for, not a sign of neglect.
        return not rvalues and [str(v) for v in _values(qelem)] != [EMPTY_VALUE]
    items = [item for item in rvalues if isinstance(item, Dataset)]
    if not items:
        return True
    qitem = _values(qelem)[0]
    assert isinstance(qitem, Dataset)
    for sub in _matching_elements(qitem):
        if all(item.get(sub.tag) is None or _is_missing(sub, item[sub.tag]) for item in items):
            return True
    return False


def _contradicts(qelem: DataElement, relem: DataElement, case_sensitive_pn: bool) -> bool:
    rvalues = _values(relem)
    if not rvalues:
        return False  # a missing value is reported by missing_matching_keys, not here
    if qelem.VR == "SQ":
        qitem = _values(qelem)[0]
        assert isinstance(qitem, Dataset)
        return not any(
            isinstance(item, Dataset) and not _item_contradicts(qitem, item, case_sensitive_pn)
            for item in rvalues
        )
    qvalues = _values(qelem)
    if [str(v) for v in qvalues] == [EMPTY_VALUE]:
        return True  # Empty Value Matching asked for no value, and there is one
    # Several query values are a UID list (any may match); for other VRs their meaning is
    # undefined without negotiation, and "any" is the reading that drops the fewest responses.
    return not any(
        _value_matches(qelem.VR, q, r, case_sensitive_pn) for q in qvalues for r in rvalues
    )


def _item_contradicts(qitem: Dataset, ritem: Dataset, case_sensitive_pn: bool) -> bool:
    for sub in _matching_elements(qitem):
        relem = ritem.get(sub.tag)
        if relem is not None and _contradicts(sub, relem, case_sensitive_pn):
            return True
    return False


def _value_matches(vr: str, query: object, value: object, case_sensitive_pn: bool) -> bool:
    if vr in TEMPORAL_VRS:
        return _temporal_matches(vr, str(query).strip(), _temporal_text(value))
    if vr == "UI":
        return str(query).strip().rstrip("\0") == str(value).strip().rstrip("\0")
    if vr in NUMERIC_VRS:
        return _numbers_equal(query, value)
    if vr == "PN":
        return _pn_matches(str(query), str(value), case_sensitive_pn)
    if vr in WILDCARD_VRS:
        return _text_matches(_strip(vr, str(query)), _strip(vr, str(value)), fold=False)
    return query == value


def _strip(vr: str, text: str) -> str:
    return text.rstrip() if vr in LEADING_SPACE_VRS else text.strip()


def _text_matches(pattern: str, text: str, *, fold: bool) -> bool:
    if fold:
        pattern, text = _fold(pattern), _fold(text)
    if "*" not in pattern and "?" not in pattern:
        return pattern == text
    return _wildcard_regex(pattern).fullmatch(text) is not None


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _pn_normal(name: str) -> str:
    # Trailing component and group delimiters carry nothing: "Doe^John^^" is "Doe^John".
    groups = [group.strip().rstrip("^") for group in name.strip().split("=")]
    return "=".join(groups).rstrip("=")


def _pn_matches(query: str, value: str, case_sensitive: bool) -> bool:
    fold = not case_sensitive
    q, v = _pn_normal(query), _pn_normal(value)
    if _text_matches(q, v, fold=fold):
        return True
    # A query on the alphabetic name alone matches a value that also has ideographic or
    # phonetic groups: compare group by group, ignoring groups the query leaves empty.
    qgroups, vgroups = q.split("="), v.split("=")
    compared = False
    for i, qgroup in enumerate(qgroups):
        if not qgroup:
            continue
        if i >= len(vgroups) or not _text_matches(qgroup, vgroups[i], fold=fold):
            return False
        compared = True
    return compared


def _numbers_equal(query: object, value: object) -> bool:
    try:
        a, b = float(str(query).strip()), float(str(value).strip())
    except ValueError:
        return str(query).strip() == str(value).strip()
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or a == b


# -- dates and times ------------------------------------------------------------------------
#
# Every DA, TM and DT value is read as the interval of moments it covers: "2024" is all of the
# year, "10" a whole hour. A response value matches a range when the two intervals overlap,
# which keeps partial values and ranges with open ends from producing false contradictions.

_Interval = tuple[datetime.datetime, datetime.datetime, datetime.timedelta | None]

_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?")
_TM_DAY = (1900, 1, 1)  # times share one arbitrary day so that they compare as datetimes


def _temporal_text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return original.strip()
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y%m%d%H%M%S.%f")
    if isinstance(value, datetime.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, datetime.time):
        return value.strftime("%H%M%S.%f")
    return str(value).strip()


def is_temporal_key(vr: str, value: str) -> bool:
    """Whether ``value`` is a DA, TM or DT matching key these rules can read: one value or a
    range, either end open. An SCP refuses the others, which matching would let through."""
    return _query_bounds(vr, value.strip()) is not None


def _temporal_matches(vr: str, query: str, value: str) -> bool:
    target = _interval(vr, value)
    if target is None:
        return True  # unparseable: not ours to judge
    bounds = _query_bounds(vr, query)
    if bounds is None:
        return True
    low, high = bounds
    if low is not None and _before(target[1], target[2], low[0], low[2]):
        return False
    return not (high is not None and _before(high[1], high[2], target[0], target[2]))


def _before(
    a: datetime.datetime,
    a_offset: datetime.timedelta | None,
    b: datetime.datetime,
    b_offset: datetime.timedelta | None,
) -> bool:
    """Whether moment ``a`` lies strictly before ``b``, in UTC when both carry an offset."""
    if a_offset is not None and b_offset is not None:
        return a - a_offset < b - b_offset
    return a < b


def _query_bounds(vr: str, query: str) -> tuple[_Interval | None, _Interval | None] | None:
    single = _interval(vr, query)
    if single is not None:
        return single, single
    # A hyphen may also be a negative UTC offset in DT, so try every one as the separator.
    for i, char in enumerate(query):
        if char != "-":
            continue
        start, end = query[:i].strip(), query[i + 1 :].strip()
        if not start and not end:
            continue
        low = _interval(vr, start) if start else None
        high = _interval(vr, end) if end else None
        if (start and low is None) or (end and high is None):
            continue
        return low, high
    return None


def _interval(vr: str, text: str) -> _Interval | None:
    text = text.strip()
    try:
        if vr == "DA":
            return _da_interval(text)
        if vr == "TM":
            return _tm_interval(text)
        return _dt_interval(text)
    except (ValueError, OverflowError):
        return None


def _da_interval(text: str) -> _Interval | None:
    # "YYYY.MM.DD" predates DICOM but still comes back from old archives.
    match = _DA.fullmatch(text.replace(".", "") if len(text) == 10 else text)
    if match is None:
        return None
    start = datetime.datetime(int(match[1]), int(match[2]), int(match[3]))
    return start, _end_of(start, "day"), None


def _tm_interval(text: str) -> _Interval | None:
    match = _TM.fullmatch(text.replace(":", ""))
    if match is None:
        return None
    hour, minute, second, fraction = match.groups()
    start = datetime.datetime(
        *_TM_DAY,
        int(hour),
        int(minute or 0),
        min(int(second or 0), 59),  # a leap second reads as the last second of the minute
        int((fraction or "0").ljust(6, "0")),
    )
    return start, _end_of(start, _precision(minute, second, fraction), fraction), None


def _dt_interval(text: str) -> _Interval | None:
    match = _DT.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    start = datetime.datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(hour or 0),
        int(minute or 0),
        min(int(second or 0), 59),
        int((fraction or "0").ljust(6, "0")),
    )
    if month is None:
        unit = "year"
    elif day is None:
        unit = "month"
    elif hour is None:
        unit = "day"
    else:
        unit = _precision(minute, second, fraction)
    utc_offset = None
    if offset:
        sign = -1 if offset[0] == "-" else 1
        utc_offset = sign * datetime.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    return start, _end_of(start, unit, fraction), utc_offset


def _precision(minute: str | None, second: str | None, fraction: str | None) -> str:
    if minute is None:
        return "hour"
    if second is None:
        return "minute"
    if fraction is None:
        return "second"
    return "fraction"


def _end_of(start: datetime.datetime, unit: str, fraction: str | None = None) -> datetime.datetime:
    """The last microsecond of the period of ``unit`` that begins at ``start``."""
    tick = datetime.timedelta(microseconds=1)
    if unit == "year":
        return start.replace(month=12, day=31, hour=23, minute=59, second=59, microsecond=999999)
    if unit == "month":
        last_day = calendar.monthrange(start.year, start.month)[1]
        return start.replace(day=last_day, hour=23, minute=59, second=59, microsecond=999999)
    if unit == "day":
        return start.replace(hour=23, minute=59, second=59, microsecond=999999)
    if unit == "hour":
        return start.replace(minute=59, second=59, microsecond=999999)
    if unit == "minute":
        return start.replace(second=59, microsecond=999999)
    if unit == "second":
        return start.replace(microsecond=999999)
    digits = len(fraction or "000000")
    try:
        return start + datetime.timedelta(microseconds=10 ** (6 - digits)) - tick
    except OverflowError:
        return start
