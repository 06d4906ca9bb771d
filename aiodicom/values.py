"""Query key values: checked against their VR, normalized to plain Python, encoded for pydicom.

A key's value is judged on its own here (its keyword exists, its VR can carry it, a range is
in order); the rules between keys and levels belong to :class:`aiodicom.query.Query`.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from pydicom import config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import DSfloat, PersonName

from aiodicom.errors import QueryError
from aiodicom.model import QUERY_KEYWORDS
from aiodicom.vr import (
    BULK_VRS,
    CHARSET_VRS,
    EMPTY_VALUE,
    FLOAT_VRS,
    INT_VRS,
    TEMPORAL_VRS,
    TEXT_VRS,
    WILDCARD_VRS,
)

__all__ = [
    "Keys",
    "charset_terms",
    "dataset_to_keys",
    "element",
    "encodable",
    "has_matching_value",
    "is_single_value",
    "iter_strings",
    "normalize_keys",
    "vr_of",
]

# Keys the builder sets itself: taking them as keys would let two sources disagree.
_RESERVED_KEYS = {
    "QueryRetrieveLevel": "it is set from the query level (Query.study(), Query.series(), ...)",
    "SpecificCharacterSet": "it is set from character_set= (or automatically for non-ASCII values)",
}

_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
_DA_RE = re.compile(r"[0-9]{8}")
_TM_RE = re.compile(r"[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?")
_DT_RE = re.compile(
    r"[0-9]{4}([0-9]{2}([0-9]{2}([0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?)?)?)?([+-][0-9]{4})?"
)
_IS_RE = re.compile(r"[+-]?[0-9]+")
_AS_RE = re.compile(r"[0-9]{3}[DWMY]")
_TEMPORAL_RE = {"DA": _DA_RE, "TM": _TM_RE, "DT": _DT_RE}
_TEMPORAL_EXAMPLE = {
    "DA": "YYYYMMDD",
    "TM": "HHMMSS[.FFFFFF]",
    "DT": "YYYYMMDDHHMMSS[.FFFFFF][&ZZXX]",
}
_TEMPORAL_TYPE = {"DA": "datetime.date", "TM": "datetime.time", "DT": "datetime.datetime"}


class Keys(Mapping[str, object]):
    """A read-only, hashable keyword -> value mapping, so that a Query can be a dict key."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, object]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._data)



def plain_datetime(value: datetime.datetime) -> datetime.datetime:
    """``value`` as a plain ``datetime`` (pydicom's DT and other subclasses dropped).

    The fold is kept: it tells which of a wall-clock time's two occurrences the end of DST made;
    without it the UTC offset would be that of the first.
    """
    return datetime.datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, value.tzinfo, fold=value.fold,
    )

def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword  # keywords are checked when the query is built
    return tag


def vr_of(keyword: str) -> str:
    """The VR of a keyword, as the data dictionary gives it."""
    vr = str(dictionary_VR(keyword))
    # "US or SS", "OB or OW": the first is what pydicom would pick without pixel context.
    return vr.split(" or ")[0]


def _check_keyword(keyword: str, path: str) -> None:
    if keyword in _RESERVED_KEYS:
        raise QueryError(f"{path}: do not give {keyword} as a key: {_RESERVED_KEYS[keyword]}", path)
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise QueryError(f"{path}: unknown DICOM keyword{_suggest(keyword)}", path)
    group = tag >> 16
    if group in (0x0000, 0x0002) or group == 0xFFFE:
        raise QueryError(
            f"{path}: {keyword} is a command, file meta or item element, not an attribute an "
            "identifier can carry",
            path,
        )


def _suggest(keyword: str) -> str:
    folded = {k.lower(): k for k in keyword_dict}
    exact = folded.get(keyword.lower())
    if exact is not None:
        return f"; did you mean {exact!r}? (keywords are case-sensitive)"
    # Keywords used in queries first: "StudyUID" should suggest StudyInstanceUID before the
    # closer but unrelated StudyStatusID.
    close = difflib.get_close_matches(keyword, QUERY_KEYWORDS, n=3, cutoff=0.6)
    for candidate in difflib.get_close_matches(keyword, keyword_dict.keys(), n=3, cutoff=0.75):
        if candidate not in close:
            close.append(candidate)
    if not close:
        lowered = difflib.get_close_matches(keyword.lower(), folded.keys(), n=3, cutoff=0.6)
        close = [folded[k] for k in lowered]
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(k) for k in close[:3]) + "?"


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def normalize_keys(keys: Mapping[str, object] | Dataset, prefix: str = "") -> Keys:
    """Keys checked and made plain Python (``prefix`` is the path of an enclosing sequence,
    for messages); raises :class:`QueryError` for the first key that cannot be sent."""
    if isinstance(keys, Dataset):
        keys = dataset_to_keys(keys, prefix)
    out: dict[str, object] = {}
    for keyword, value in keys.items():
        if not isinstance(keyword, str):
            raise QueryError(f"{prefix}{keyword!r}: keys are DICOM keywords (str)", str(keyword))
        path = prefix + keyword
        _check_keyword(keyword, path)
        out[keyword] = _normalize_value(vr_of(keyword), value, path)
    return Keys(out)


def _normalize_value(vr: str, value: object, path: str) -> object:
    if vr == "SQ":
        return _normalize_sequence(value, path)
    if _is_empty(value):
        return None
    if vr == "UI":
        return _normalize_uids(value, path)
    if vr in TEMPORAL_VRS:
        return _normalize_temporal(vr, value, path)
    if isinstance(value, (list, tuple, MultiValue)):
        raise QueryError(
            f"{path}: several values given, but only UID (UI) keys take a list (List of UID "
            "Matching); for other keys the meaning of several values is undefined unless Multiple "
            "Value Matching was negotiated, so send one query per value",
            path,
        )
    if vr in BULK_VRS:
        raise QueryError(f"{path}: {vr} values cannot be matched; give None to ask for it", path)
    if vr in INT_VRS or vr in FLOAT_VRS:
        return _normalize_number(vr, value, path)
    if vr in TEXT_VRS:
        return _normalize_text(vr, value, path)
    # AT and other rare VRs: passed through for pydicom to judge.
    return value


def _normalize_sequence(value: object, path: str) -> object:
    if value is None or (isinstance(value, (list, tuple, Sequence)) and len(value) == 0):
        return None
    if isinstance(value, (list, tuple, Sequence)):
        if len(value) != 1:
            raise QueryError(
                f"{path}: Sequence Matching takes a single item (PS3.4 C.2.2.2.6), "
                f"{len(value)} were given",
                path,
            )
        value = value[0]
    if isinstance(value, (Mapping, Dataset)):
        return normalize_keys(value, path + ".")
    raise QueryError(
        f"{path}: a sequence key takes a dict of item keys (or a Dataset), "
        f"not {type(value).__name__}",
        path,
    )


def _normalize_uids(value: object, path: str) -> object:
    if isinstance(value, str):
        uids = value.split("\\")
    elif isinstance(value, (list, tuple, MultiValue)):
        uids = list(value)
        if not uids:
            raise QueryError(
                f"{path}: an empty UID list matches nothing; give None for a return key", path
            )
    else:
        raise QueryError(
            f"{path}: a UID key takes a str or a list of str, not {type(value).__name__}", path
        )
    clean: list[str] = []
    for uid in uids:
        if not isinstance(uid, str):
            raise QueryError(f"{path}: UIDs are str, not {type(uid).__name__}", path)
        uid = uid.strip().rstrip("\0")
        if "*" in uid or "?" in uid:
            raise QueryError(
                f"{path}: wildcards are not allowed in UI keys (PS3.4 C.2.2.2.4); give None to "
                "match any UID, or a list of UIDs",
                path,
            )
        if len(uid) > 64 or not _UID_RE.fullmatch(uid):
            raise QueryError(f"{path}: {uid!r} is not a UID (digits and dots, 64 at most)", path)
        clean.append(uid)
    if isinstance(value, str) and len(clean) == 1:
        return clean[0]
    return tuple(clean)


def _normalize_temporal(vr: str, value: object, path: str) -> object:
    if isinstance(value, str):
        return _check_temporal_string(vr, value.strip(), path)
    if isinstance(value, (list, tuple)) and not isinstance(value, MultiValue):
        if len(value) != 2:
            raise QueryError(
                f"{path}: a range is a (start, end) pair, got {len(value)} values", path
            )
        start = None if _is_empty(value[0]) else _check_temporal_point(vr, value[0], path)
        end = None if _is_empty(value[1]) else _check_temporal_point(vr, value[1], path)
        if start is None and end is None:
            # Both ends open: no constraint at all, which is universal matching.
            return None
        if start is not None and end is not None and _starts_after(vr, start, end):
            raise QueryError(f"{path}: range start {start} is after its end {end}", path)
        return (start, end)
    return _check_temporal_point(vr, value, path)


def _check_temporal_point(vr: str, value: object, path: str) -> object:
    if isinstance(value, str):
        text = value.strip()
        if not _TEMPORAL_RE[vr].fullmatch(text):
            raise QueryError(
                f"{path}: {value!r} is not a {vr} value ({_TEMPORAL_EXAMPLE[vr]})", path
            )
        return text
    if vr == "DA":
        if isinstance(value, datetime.datetime):
            raise QueryError(
                f"{path}: a DA key takes a datetime.date; a datetime.datetime would silently drop "
                "its time (use the matching TM key for that)",
                path,
            )
        if isinstance(value, datetime.date):
            return datetime.date(value.year, value.month, value.day)
    elif vr == "TM":
        if isinstance(value, datetime.time):
            if value.tzinfo is not None:
                raise QueryError(f"{path}: TM values carry no UTC offset; give a naive time", path)
            return datetime.time(value.hour, value.minute, value.second, value.microsecond)
    elif isinstance(value, datetime.datetime):
        return plain_datetime(value)
    elif isinstance(value, datetime.date):
        return datetime.date(value.year, value.month, value.day)
    raise QueryError(
        f"{path}: a {vr} key takes a {_TEMPORAL_TYPE[vr]}, a (start, end) range or a "
        f"{_TEMPORAL_EXAMPLE[vr]} string, not {type(value).__name__}",
        path,
    )


def _check_temporal_string(vr: str, text: str, path: str) -> str:
    if text == EMPTY_VALUE:
        return text
    if "*" in text or "?" in text:
        raise QueryError(
            f"{path}: wildcards are not allowed in {vr} keys (PS3.4 C.2.2.2.4); "
            "use a (start, end) range instead",
            path,
        )
    pattern = _TEMPORAL_RE[vr]
    if pattern.fullmatch(text):
        return text
    if _split_range(pattern, text) is not None:
        return text
    raise QueryError(
        f"{path}: {text!r} is neither a {vr} value ({_TEMPORAL_EXAMPLE[vr]}) nor a range of them "
        f"('start-end', '-end' or 'start-')",
        path,
    )


_OFFSET_RE = re.compile(r"[+-][0-9]{4}$")


def _starts_after(vr: str, start: object, end: object) -> bool:
    if (
        isinstance(start, datetime.datetime)
        and isinstance(end, datetime.datetime)
        and (start.tzinfo is None) == (end.tzinfo is None)
    ):
        return start > end
    first, last = _point_text(vr, start), _point_text(vr, end)
    if vr == "DT":
        first, last = _OFFSET_RE.sub("", first), _OFFSET_RE.sub("", last)
    # A shorter value stands for a whole period ("2024" is all of 2024), so only the common
    # precision can say which comes first.
    n = min(len(first), len(last))
    return first[:n] > last[:n]


def _split_range(pattern: re.Pattern[str], text: str) -> tuple[str, str] | None:
    # Every hyphen is a candidate separator: in DT a hyphen may also be a negative UTC offset.
    for i, char in enumerate(text):
        if char != "-":
            continue
        start, end = text[:i], text[i + 1 :]
        if not start and not end:
            continue
        if (not start or pattern.fullmatch(start)) and (not end or pattern.fullmatch(end)):
            if start and end and _starts_after("DT", start, end):
                continue
            return start, end
    return None


def _normalize_number(vr: str, value: object, path: str) -> object:
    if isinstance(value, bool):
        raise QueryError(f"{path}: {vr} takes a number, not a bool", path)
    if isinstance(value, str):
        text = value.strip()
        if "*" in text or "?" in text:
            raise QueryError(
                f"{path}: wildcards are not allowed in {vr} keys (PS3.4 C.2.2.2.4)", path
            )
        if vr in INT_VRS:
            if not _IS_RE.fullmatch(text):
                raise QueryError(f"{path}: {value!r} is not an integer", path)
            return int(text)
        try:
            float(text)
        except ValueError:
            raise QueryError(f"{path}: {value!r} is not a number", path) from None
        # Kept as text: converting would change the digits the caller chose to send.
        return text
    if vr in INT_VRS:
        if isinstance(value, int):
            return int(value)
        raise QueryError(f"{path}: {vr} takes an int, not {type(value).__name__}", path)
    if isinstance(value, (int, float, Decimal)):
        return value
    raise QueryError(f"{path}: {vr} takes a number, not {type(value).__name__}", path)


def _normalize_text(vr: str, value: object, path: str) -> str:
    if isinstance(value, PersonName):
        value = str(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        # An ID typed as a number (PatientID=1234) is a common slip with an obvious meaning.
        value = str(value)
    if not isinstance(value, str):
        raise QueryError(f"{path}: a {vr} key takes a str, not {type(value).__name__}", path)
    if vr not in WILDCARD_VRS and ("*" in value or "?" in value):
        raise QueryError(f"{path}: wildcards are not allowed in {vr} keys (PS3.4 C.2.2.2.4)", path)
    if vr not in ("LT", "ST", "UT") and "\\" in value:
        raise QueryError(
            f"{path}: {value!r} contains a backslash, which DICOM reads as a value separator", path
        )
    if vr not in CHARSET_VRS and not value.isascii():
        raise QueryError(
            f"{path}: {vr} values are limited to the default (ASCII) repertoire whatever the "
            "character set",
            path,
        )
    if vr == "CS" and any("a" <= c <= "z" for c in value):
        raise QueryError(
            f"{path}: CS values are upper case; did you mean {value.upper()!r}? A peer matches CS "
            "case-sensitively",
            path,
        )
    if vr == "AS" and value != EMPTY_VALUE and not _AS_RE.fullmatch(value):
        raise QueryError(f"{path}: {value!r} is not an age string (nnnD, nnnW, nnnM or nnnY)", path)
    return value


def _point_text(vr: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime.datetime):
        text = (
            f"{value.year:04d}{value.month:02d}{value.day:02d}"
            f"{value.hour:02d}{value.minute:02d}{value.second:02d}"
        )
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        offset = value.utcoffset()
        if offset is not None:
            seconds = int(offset.total_seconds())
            sign = "-" if seconds < 0 else "+"
            # DT offsets have no seconds: historical zones (LMT) lose theirs, toward zero.
            minutes = abs(seconds) // 60
            text += f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
        return text
    if isinstance(value, datetime.date):
        return f"{value.year:04d}{value.month:02d}{value.day:02d}"
    if isinstance(value, datetime.time):
        text = f"{value.hour:02d}{value.minute:02d}{value.second:02d}"
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        return text
    raise TypeError(f"not a {vr} value: {value!r}")  # pragma: no cover - normalization guards it


def _encode(vr: str, value: object) -> Any:
    """The pydicom value of a normalized key."""
    if value is None:
        return Sequence([]) if vr == "SQ" else None
    if vr == "SQ":
        assert isinstance(value, Mapping)
        return Sequence([_build_item(value)])
    if vr in TEMPORAL_VRS:
        if isinstance(value, tuple):
            start, end = value
            start_text = "" if start is None else _point_text(vr, start)
            end_text = "" if end is None else _point_text(vr, end)
            return f"{start_text}-{end_text}"
        return _point_text(vr, value)
    if isinstance(value, tuple):
        return list(value)
    if vr == "DS" and isinstance(value, float):
        # A float's repr may exceed the 16 bytes DS allows; pydicom can shorten it for us.
        return DSfloat(value, auto_format=True)
    return value


def element(keyword: str, vr: str, value: object) -> DataElement:
    """The data element of a normalized key."""
    # Query values legitimately break the VR rules pydicom checks: wildcards in CS, "" for
    # Empty Value Matching, ranges longer than a DA (PS3.4 C.2.2.2). They were checked above.
    return DataElement(_tag(keyword), vr, _encode(vr, value), validation_mode=config.IGNORE)


def _build_item(keys: Mapping[str, object]) -> Dataset:
    item = Dataset()
    for keyword, value in keys.items():
        vr = vr_of(keyword)
        item.add(element(keyword, vr, value))
    return item


def dataset_to_keys(ds: Dataset, prefix: str = "") -> dict[str, object]:
    """The keyword -> value keys an identifier carries, sequence items as dicts."""
    keys: dict[str, object] = {}
    for elem in ds:
        if elem.tag.element == 0:
            continue  # group lengths carry no query meaning
        if elem.tag.is_private or not elem.keyword:
            raise QueryError(
                f"{prefix}{elem.tag}: private or unknown elements cannot be expressed as keyword "
                "keys",
                f"{prefix}{elem.tag}",
            )
        keys[elem.keyword] = _from_pydicom(elem, prefix + elem.keyword)
    return keys


def _from_pydicom(elem: DataElement, path: str) -> object:
    value = elem.value
    if elem.VR == "SQ":
        items = list(value or [])
        if len(items) > 1:
            raise QueryError(
                f"{path}: Sequence Matching takes a single item, found {len(items)}", path
            )
        return dataset_to_keys(items[0], path + ".") if items else None
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, MultiValue):
        values = [_plain(v) for v in value]
        if not values:
            return None
        if len(values) > 1 and elem.VR in TEMPORAL_VRS:
            raise QueryError(
                f"{path}: several {elem.VR} values; a range is written 'start-end'", path
            )
        return tuple(values) if len(values) > 1 else values[0]
    return _plain(value)


def _plain(value: object) -> object:
    """Strip pydicom's value subclasses, which carry state the query does not want."""
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, datetime.datetime):
        return plain_datetime(value)
    if isinstance(value, datetime.date):
        return datetime.date(value.year, value.month, value.day)
    if isinstance(value, datetime.time):
        return datetime.time(value.hour, value.minute, value.second, value.microsecond)
    if isinstance(value, float) and hasattr(value, "original_string"):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value


def iter_strings(keys: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, VR, text) of every string value, recursing into sequence items."""
    for keyword, value in keys.items():
        path = prefix + keyword
        if isinstance(value, Mapping):
            yield from iter_strings(value, path + ".")
        elif isinstance(value, str):
            yield path, vr_of(keyword), value
        elif isinstance(value, tuple):
            for part in value:
                if isinstance(part, str):
                    yield path, vr_of(keyword), part


_DEFAULT_REPERTOIRE = frozenset({"ISO_IR 6", "ISO 2022 IR 6"})


def charset_terms(character_set: str) -> list[str]:
    """The defined terms of a Specific Character Set value; :class:`QueryError` if one is not."""
    terms = [t.strip() for t in character_set.split("\\")]
    for i, term in enumerate(terms):
        # PS3.3 C.12.1.1.2: only the first value may be empty (meaning the default repertoire).
        if term == "" and i == 0 and len(terms) > 1:
            continue
        if term not in python_encoding or term == "":
            raise QueryError(
                f"character_set: {term!r} is not a Specific Character Set defined term "
                "(e.g. 'ISO_IR 192' for UTF-8, 'ISO_IR 100' for Latin-1)",
                "SpecificCharacterSet",
            )
    return terms


def encodable(text: str, terms: list[str]) -> bool:
    """Whether ``text`` can be written in the character set of ``terms``."""
    codecs = [
        "ascii" if (t in _DEFAULT_REPERTOIRE or t == "") else python_encoding[t] for t in terms
    ]
    if len(codecs) == 1:
        try:
            text.encode(codecs[0])
        except UnicodeError:
            return False
        return True
    # With code extensions each character may come from any of the listed repertoires.
    for char in text:
        for codec in codecs:
            try:
                char.encode(codec)
                break
            except UnicodeError:
                continue
        else:
            return False
    return True


def has_matching_value(value: object) -> bool:
    """Whether a normalized key matches (has a value somewhere) rather than only returns."""
    if isinstance(value, Mapping):
        return any(has_matching_value(v) for v in value.values())
    return value is not None


def is_single_value(value: object) -> bool:
    """Whether a normalized key selects by one value: no list, range, wildcard or empty value."""
    if isinstance(value, tuple):
        return len(value) == 1
    if isinstance(value, str):
        return "*" not in value and "?" not in value and value != EMPTY_VALUE
    return value is not None and not isinstance(value, Mapping)

