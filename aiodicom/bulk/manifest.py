"""What a bulk run retrieves: :class:`ManifestItem` rows, read one at a time.

An item names a PACS (by its name in the :class:`~aiodicom.bulk.config.BulkConfig`) and either
the unique keys of what to retrieve (a study, a series, instances) or a C-FIND query whose
matches are retrieved (``find=True``: expanded first, each match becoming an item of its own).

Manifests are streamed, never loaded whole: :func:`read_csv` and :func:`read_json` return a
:class:`ManifestFile` that reads its file again each time it is iterated, and any Python
iterable (a generator included) of items is a manifest too.

CSV: a header row, then one item per row. Columns ``pacs`` (required), ``level`` (PATIENT,
STUDY, SERIES, IMAGE; default: the deepest unique key given), ``find`` (1/true/yes: the other
columns are C-FIND keys to expand), ``model`` (``study`` or ``patient`` root), and DICOM keywords
(``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID``, ``PatientID``, and for a
``find`` row any matching key). Empty cells are left out::

    pacs,StudyInstanceUID,SeriesInstanceUID
    orthanc,1.2.3,
    dcm4chee,1.2.4,1.2.4.1

JSON: an array of objects, or JSON Lines (one object per line), each ``{"pacs": ...,
"level": ..., "keys": {...}, "find": false}`` or with the keywords at the top level as in CSV.
"""

from __future__ import annotations

import csv
import hashlib
import json
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import attrs

from aiodicom.model import Level, QueryModel

__all__ = [
    "Manifest",
    "ManifestError",
    "ManifestFile",
    "ManifestItem",
    "aiter_items",
    "read_csv",
    "read_json",
    "read_manifest",
    "select",
    "shard",
]

_UNIQUE_CHAIN = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_LEVEL_OF_KEY = {
    "PatientID": Level.PATIENT,
    "StudyInstanceUID": Level.STUDY,
    "SeriesInstanceUID": Level.SERIES,
    "SOPInstanceUID": Level.IMAGE,
}
_RESERVED = {"pacs", "level", "find", "model", "keys"}


class ManifestError(ValueError):
    """A manifest row that cannot be an item: the message names the file and the row."""


def _level(value: Level | str) -> Level:
    if isinstance(value, Level):
        return value
    try:
        return Level(str(value).strip().upper())
    except ValueError:
        raise ManifestError(
            f"level {value!r} is none of PATIENT, STUDY, SERIES, IMAGE"
        ) from None


def _model(value: QueryModel | str) -> QueryModel:
    if isinstance(value, QueryModel):
        return value
    text = str(value).strip().lower().replace("_", " ")
    if text in ("study", "study root", ""):
        return QueryModel.STUDY_ROOT
    if text in ("patient", "patient root"):
        return QueryModel.PATIENT_ROOT
    raise ManifestError(f"model {value!r}: give 'study' (Study Root) or 'patient' (Patient Root)")


def _keys(value: Mapping[str, object]) -> Mapping[str, object]:
    return {str(k): v for k, v in value.items() if v not in (None, "")}


@attrs.frozen
class ManifestItem:
    """One thing to retrieve from one PACS.

    ``keys``: the unique keys down to ``level`` (a retrieve), or, with ``find=True``, the keys
    of a C-FIND at ``level`` whose matches are each retrieved. ``key`` identifies the item in
    the journal and the report: the same row gives the same key in every run.
    """

    pacs: str
    level: Level = attrs.field(converter=_level)
    keys: Mapping[str, object] = attrs.field(converter=_keys)
    find: bool = False
    model: QueryModel = attrs.field(default=QueryModel.STUDY_ROOT, converter=_model)
    parent: str | None = attrs.field(default=None, eq=False)
    """The key of the ``find`` item this one was expanded from."""

    def __attrs_post_init__(self) -> None:
        if not self.pacs:
            raise ManifestError("an item needs the name of its PACS")
        if self.find:
            return
        unique = self.level.unique_key
        value = self.keys.get(unique)
        if not value or (isinstance(value, str) and any(c in value for c in "*?")):
            raise ManifestError(
                f"a {self.level.value} item needs {unique} (one value or a UID list), or "
                "find=true to expand a query"
            )

    @classmethod
    def study(cls, pacs: str, study_uid: str, **extra: object) -> ManifestItem:
        return cls(pacs, Level.STUDY, {"StudyInstanceUID": study_uid, **extra})

    @classmethod
    def series(cls, pacs: str, study_uid: str, series_uid: str) -> ManifestItem:
        return cls(pacs, Level.SERIES,
                   {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid})

    @classmethod
    def query(
        cls, pacs: str, level: Level | str, model: QueryModel | str = QueryModel.STUDY_ROOT,
        **keys: object,
    ) -> ManifestItem:
        """A C-FIND at ``level`` whose matches are retrieved, each one an item."""
        return cls(pacs, _level(level), keys, find=True, model=_model(model))

    @property
    def key(self) -> str:
        """``pacs/LEVEL/uid[/uid...]`` for a retrieve; ``pacs/find/LEVEL/<digest>`` for a
        query (the digest of its keys, sorted)."""
        if self.find:
            canonical = json.dumps(
                {k: _plain(v) for k, v in sorted(self.keys.items())},
                sort_keys=True, separators=(",", ":"),
            )
            digest = hashlib.sha1(
                f"{self.model.value}|{canonical}".encode(), usedforsecurity=False
            ).hexdigest()[:20]
            return f"{self.pacs}/find/{self.level.value}/{digest}"
        parts = [self.pacs, self.level.value]
        for keyword in _UNIQUE_CHAIN:
            if keyword == "PatientID" and self.level is not Level.PATIENT:
                continue  # not a unique key of the levels below in Study Root; UIDs suffice
            value = self.keys.get(keyword)
            if value:
                parts.append("\\".join(_plain_list(value)))
            if _LEVEL_OF_KEY[keyword] is self.level:
                break
        return "/".join(parts)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "pacs": self.pacs, "level": self.level.value,
            "keys": {k: _plain(v) for k, v in self.keys.items()},
        }
        if self.find:
            data["find"] = True
        if self.model is not QueryModel.STUDY_ROOT:
            data["model"] = "patient"
        return data

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any], where: str = "") -> ManifestItem:
        """From a CSV row or a JSON object (see the module docstring)."""
        try:
            keys: dict[str, object] = dict(row.get("keys") or {})
            for name, value in row.items():
                if name not in _RESERVED and value not in (None, ""):
                    keys[name] = value
            find = _truthy(row.get("find"))
            level = row.get("level") or _deepest(keys)
            if level is None:
                raise ManifestError(
                    "no level and no unique key (StudyInstanceUID, SeriesInstanceUID, "
                    "SOPInstanceUID, PatientID)"
                )
            return cls(str(row.get("pacs") or ""), level, keys, find=find,
                       model=row.get("model") or QueryModel.STUDY_ROOT)
        except ManifestError as exc:
            raise ManifestError(f"{where}{exc}") from None


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in ("1", "true", "yes", "y")


def _deepest(keys: Mapping[str, object]) -> Level | None:
    level = None
    for keyword in _UNIQUE_CHAIN:
        if keys.get(keyword):
            level = _LEVEL_OF_KEY[keyword]
    return level


def _plain(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _plain_list(value: object) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


Manifest = Iterable[ManifestItem] | AsyncIterable[ManifestItem]
"""Anything a run takes: an iterable (a :class:`ManifestFile`, a list, a generator) or an async
iterable of items."""


async def aiter_items(manifest: Manifest) -> AsyncIterator[ManifestItem]:
    """The items of any manifest, one at a time."""
    if isinstance(manifest, AsyncIterable):
        async for item in manifest:
            yield item
    else:
        for item in manifest:
            yield item


def select(manifest: Iterable[ManifestItem], predicate: Callable[[ManifestItem], bool],
           ) -> Iterator[ManifestItem]:
    """The items for which ``predicate`` is true, streamed."""
    return (item for item in manifest if predicate(item))


def shard(manifest: Iterable[ManifestItem], count: int, index: int) -> Iterator[ManifestItem]:
    """Share ``index`` of ``count`` (0-based) of a manifest, by a stable hash of each item's
    key: every item lands in exactly one share, the same one in every run and process."""
    if not 0 <= index < count:
        raise ValueError(f"share index {index} is not in 0..{count - 1}")
    return select(manifest, lambda item: zlib.crc32(item.key.encode()) % count == index)


# --- files ------------------------------------------------------------------------------


@attrs.frozen
class ManifestFile:
    """A manifest file, read again (streamed) each time it is iterated."""

    path: Path
    format: str  # "csv" or "json"

    def __iter__(self) -> Iterator[ManifestItem]:
        with open(self.path, encoding="utf-8-sig", newline="") as stream:
            if self.format == "csv":
                yield from _csv_items(stream, str(self.path))
            else:
                yield from _json_items(stream, str(self.path))

    def count(self) -> dict[str, int]:
        """Items per PACS, by one pass over the file (for progress and ETA)."""
        counts: dict[str, int] = {}
        for item in self:
            counts[item.pacs] = counts.get(item.pacs, 0) + 1
        return counts


def read_csv(path: str | Path) -> ManifestFile:
    return ManifestFile(Path(path), "csv")


def read_json(path: str | Path) -> ManifestFile:
    return ManifestFile(Path(path), "json")


def read_manifest(path: str | Path) -> ManifestFile:
    """A CSV (``.csv``, ``.tsv``: tab-separated is not supported; any other suffix) or JSON
    (``.json``, ``.jsonl``, ``.ndjson``) manifest, by its suffix."""
    file = Path(path)
    if file.suffix.lower() in (".json", ".jsonl", ".ndjson"):
        return read_json(file)
    return read_csv(file)


def _csv_items(stream: TextIO, name: str) -> Iterator[ManifestItem]:
    reader = csv.DictReader(stream)
    if reader.fieldnames is None:
        return
    fields = [f.strip() for f in reader.fieldnames]
    if "pacs" not in fields:
        raise ManifestError(f"{name}: the header row has no 'pacs' column ({fields})")
    reader.fieldnames = fields
    for row in reader:
        if not any(v for v in row.values() if isinstance(v, str) and v.strip()):
            continue  # a blank line
        cleaned = {k: v.strip() for k, v in row.items() if isinstance(v, str)}
        yield ManifestItem.from_mapping(cleaned, f"{name} line {reader.line_num}: ")


def _json_items(stream: TextIO, name: str) -> Iterator[ManifestItem]:
    """An array of objects read one object at a time, or JSON Lines."""
    decoder = json.JSONDecoder()
    buffer = ""
    position = 0
    in_array: bool | None = None
    number = 0
    eof = False
    while True:
        # Skip separators; read more when the buffer runs out.
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n,":
                position += 1
            if position < len(buffer) or eof:
                break
            chunk = stream.read(1 << 16)
            buffer, position = buffer[position:] + chunk, 0
            eof = not chunk
        if position >= len(buffer):
            return
        if in_array is None:
            in_array = buffer[position] == "["
            if in_array:
                position += 1
                continue
        if in_array and buffer[position] == "]":
            return
        try:
            value, end = decoder.raw_decode(buffer, position)
        except json.JSONDecodeError as exc:
            if eof:
                raise ManifestError(f"{name}: invalid JSON after item {number}: {exc}") from None
            chunk = stream.read(1 << 16)
            buffer, position = buffer[position:] + chunk, 0
            eof = not chunk
            continue
        if end == len(buffer) and not eof:
            # A number or the like may continue in the next chunk: read on before trusting it.
            chunk = stream.read(1 << 16)
            if chunk:
                buffer, position = buffer[position:] + chunk, 0
                continue
            eof = True
        number += 1
        position = end
        if not isinstance(value, dict):
            raise ManifestError(f"{name}: item {number} is not an object")
        yield ManifestItem.from_mapping(value, f"{name} item {number}: ")
