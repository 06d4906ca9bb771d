"""An sqlite index of stored instances: what the embedded Q/R SCP searches and sends from.

One row per instance holds the attributes Patient Root and Study Root C-FIND need at every
level (decoded to Unicode), where the instance's data set lives (file, offset, length, or
memory) and its transfer syntax. Attributes without a column of their own are kept as DICOM
JSON (bulk data left out) so that any other return key or sequence key can still be answered.

Two modes:

* directory mode (``InstanceIndex(directory)``): files stay where they are. :meth:`scan` adds
  new and changed files (by modification time and size) and drops vanished ones, a few files
  per step; :meth:`store` writes a received instance as a Part 10 file, atomically.
* memory mode (``InstanceIndex()``): an ``:memory:`` database, the data set bytes kept as
  they were stored; for tests and demos.

A SOP Instance UID is indexed once: storing or scanning an instance whose UID is already
indexed replaces the earlier entry (the later one wins, as a PACS receiving a corrected
object does). In directory mode the earlier file is left on disk, only no longer served; a
file whose instance another file replaced is remembered as seen, so later scans do not swap
the two back and forth.

Everything is synchronous and bounded per call: one file parsed, one instance stored, one
step of a scan. sqlite3 is the standard library's; there are no threads.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import attrs
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from aiodicom.errors import DicomError
from aiodicom.fileio import FileMetaError, encoding_of, split_part10, write_part10_atomic
from aiodicom.instance import Instance
from aiodicom.peek import MalformedDataSetError, inflate
from aiodicom.sinks import default_layout

__all__ = [
    "COLUMN_KEYWORDS",
    "IndexedFileChanged",
    "InstanceIndex",
    "ScanProgress",
    "StoredInstance",
]

#: Attributes with a column of their own: the C-FIND keys of every level that are searched
#: or returned often enough to be worth one (PS3.4 C.6.1.1 and C.6.2.1, R, U and common O).
COLUMN_KEYWORDS: tuple[str, ...] = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
)
_COLUMN_SET = frozenset(COLUMN_KEYWORDS)
# Never kept in the JSON attributes: bulk data (the SCP sends the file, it never answers with
# pixels) and private elements, meaningless to a query without their creator's dictionary.
_BULK_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
_PIXEL_DATA_GROUP = 0x7FE0
# Unchanged files cost a stat and two indexed statements each (tens of microseconds).
_STATS_PER_STEP = 128
_FIRST_PIXEL_TAG = 0x7FE00000

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS instances (
    {", ".join(f'"{k}" TEXT NOT NULL DEFAULT ' + "''" for k in COLUMN_KEYWORDS)},
    SpecificCharacterSet TEXT NOT NULL DEFAULT '',
    TransferSyntaxUID TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{{}}',
    path TEXT,
    data_offset INTEGER NOT NULL DEFAULT 0,
    data_length INTEGER NOT NULL DEFAULT 0,
    file_mtime_ns INTEGER NOT NULL DEFAULT 0,
    file_size INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS instances_sop ON instances (SOPInstanceUID);
-- One index per level of the hierarchy, each ending in the keys below it: an entity walk
-- (SELECT MIN(key) ... WHERE parent = ? AND key > ?) is one seek, and so is each next batch
-- of a retrieval.
CREATE INDEX IF NOT EXISTS instances_patient
    ON instances (PatientID, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID);
CREATE INDEX IF NOT EXISTS instances_study
    ON instances (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID);
CREATE INDEX IF NOT EXISTS instances_series ON instances (SeriesInstanceUID, SOPInstanceUID);
CREATE INDEX IF NOT EXISTS instances_path ON instances (path);
-- Every file a scan has looked at, DICOM or not, so that an unchanged file is not parsed
-- again; "generation" marks the files seen by the latest scan, the others have vanished.
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class IndexedFileChanged(DicomError):
    """An indexed file no longer has the size it had when indexed: scan again before sending."""


@attrs.frozen
class StoredInstance:
    """Where an indexed instance's data set is: what a C-MOVE/C-GET sub-operation sends.

    In directory mode the data set is ``length`` bytes at ``offset`` in the Part 10 file at
    ``path``, in ``transfer_syntax_uid``, exactly as on disk; in memory mode ``path`` is
    ``None`` and :meth:`InstanceIndex.read_data` returns the bytes stored.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: Path | None
    offset: int
    length: int


@attrs.define
class _ScanCounts:
    seen: int = 0
    indexed: int = 0
    skipped: int = 0
    removed: int = 0

    def progress(self, *, done: bool) -> ScanProgress:
        return ScanProgress(self.seen, self.indexed, self.skipped, self.removed, done=done)


@attrs.frozen
class ScanProgress:
    """What one step of :meth:`InstanceIndex.scan` did, and the totals so far."""

    files_seen: int
    files_indexed: int
    files_skipped: int
    instances_removed: int
    done: bool


def _column_value(value: object) -> str:
    """A column's text: Unicode, multiple values joined by backslashes, no padding."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_column_value_one(v) for v in value)
    return _column_value_one(value)


def _column_value_one(value: object) -> str:
    if isinstance(value, PersonName):
        # All groups (alphabetic=ideographic=phonetic), as the value was written.
        return "=".join(g for g in (value.alphabetic, value.ideographic, value.phonetic)).rstrip(
            "="
        )
    original = getattr(value, "original_string", None)
    text = original if isinstance(original, str) else str(value)
    return text.strip().rstrip("\0")


def _stop_at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag >= _FIRST_PIXEL_TAG


MAX_INFLATED_ATTRIBUTES = 64 << 20
"""The most a deflated data set is inflated to index it: a bomb sent by C-STORE is refused."""


def decode_attributes(data: bytes | memoryview, transfer_syntax_uid: str) -> Dataset:
    """The data set up to the pixel data, decoded by pydicom (values read in its charset)."""
    encoding = encoding_of(transfer_syntax_uid)
    raw: bytes | memoryview = data
    if encoding.deflated:
        raw = inflate(raw, MAX_INFLATED_ATTRIBUTES)
    return read_dataset(
        io.BytesIO(raw),
        is_implicit_VR=encoding.implicit_vr,
        is_little_endian=encoding.little_endian,
        stop_when=_stop_at_pixels,
    )


def _attributes_json(ds: Dataset) -> str:
    kept: dict[str, object] = {}
    for elem in ds:
        tag = elem.tag
        if (
            elem.keyword in _COLUMN_SET
            or tag.is_private
            or tag.group in (0x0002, _PIXEL_DATA_GROUP)
            or elem.VR in _BULK_VRS
            or tag == 0x00080005
        ):
            continue
        try:
            kept[f"{tag:08X}"] = elem.to_json_dict(None, 1024)
        except Exception:
            # A value pydicom cannot convert is no reason to refuse the instance: only this
            # attribute is not searchable.
            continue
    return json.dumps(kept, separators=(",", ":"))


def _row(ds: Dataset) -> dict[str, object]:
    row: dict[str, object] = {k: _column_value(ds.get(k)) for k in COLUMN_KEYWORDS}
    charset = ds.get("SpecificCharacterSet")
    row["SpecificCharacterSet"] = _column_value(charset)
    row["attributes"] = _attributes_json(ds)
    return row


class InstanceIndex:
    """The index of the instances an embedded Q/R SCP serves.

    ``InstanceIndex()`` keeps everything in memory. ``InstanceIndex(directory)`` serves the
    Part 10 files under ``directory`` (run :meth:`scan` to find them) and writes received
    instances there; its database is the sqlite file ``database`` (default
    ``<directory>/.aiodicom-index.sqlite3``; ``":memory:"`` to rebuild it by scanning each
    time).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        database: str | os.PathLike[str] | None = None,
        fsync: bool = False,
    ) -> None:
        self.directory = Path(directory).resolve() if directory is not None else None
        self.fsync = fsync
        if database is None:
            database = (
                ":memory:"
                if self.directory is None
                else self.directory / ".aiodicom-index.sqlite3"
            )
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: each statement commits on its own unless a transaction is
        # opened explicitly, so no step leaves a transaction open across an await.
        self.connection = sqlite3.connect(str(database), isolation_level=None)
        self.connection.row_factory = sqlite3.Row
        if str(database) != ":memory:":
            # Readers do not block the writer; a crash may lose the last steps, not the file.
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.executescript(_SCHEMA)
        # Memory mode: SOP Instance UID -> data set bytes, as stored (the store itself).
        self._memory: dict[str, bytes | memoryview] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> InstanceIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        (count,) = self.connection.execute("SELECT COUNT(*) FROM instances").fetchone()
        return int(count)

    # -- adding -----------------------------------------------------------------------------

    def store(self, instance: Instance) -> StoredInstance:
        """Index a received instance; in directory mode also write it as a Part 10 file.

        The file goes to ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``
        under the directory (UIDs validated, as :class:`~aiodicom.sinks.DirectorySink`
        does), written atomically; its data set bytes are ``instance.data`` untouched.
        """
        try:
            ds = decode_attributes(instance.data, instance.transfer_syntax_uid)
            row = _row(ds)
        except Exception as exc:  # pydicom raises many kinds of error for malformed data
            raise MalformedDataSetError(
                f"cannot index {instance.sop_instance_uid}: its data set does not decode ({exc})"
            ) from exc
        # The command's UIDs are what the SCU said it stores; the data set's may differ.
        row["SOPInstanceUID"] = instance.sop_instance_uid
        row["SOPClassUID"] = instance.sop_class_uid
        row["TransferSyntaxUID"] = instance.transfer_syntax_uid
        length = instance.size
        if self.directory is None:
            row.update(path=None, data_offset=0, data_length=length)
            # A copy when the bytes are a view: a receiver's spool file (mapped memory) goes
            # away after the C-STORE, what is stored here must not.
            data = instance.data
            self._memory[instance.sop_instance_uid] = (
                data if isinstance(data, bytes) else bytes(data)
            )
        else:
            path = self.directory / default_layout(instance)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_part10_atomic(path, instance, fsync=self.fsync)
            stat = path.stat()
            row.update(
                path=str(path),
                data_offset=stat.st_size - length,
                data_length=length,
                file_mtime_ns=stat.st_mtime_ns,
                file_size=stat.st_size,
            )
            self._remember_file(str(path), stat.st_mtime_ns, stat.st_size)
        self._upsert(row)
        return _stored(row)

    def add_file(self, path: str | os.PathLike[str]) -> StoredInstance | None:
        """Index the Part 10 file at ``path`` where it is; ``None`` if it is not one.

        A file without the Part 10 preamble and "DICM" prefix is not indexed: without its File
        Meta Information its transfer syntax, and so the bytes to send, would be a guess.
        """
        file = Path(path).resolve()
        stat = file.stat()
        self._remember_file(str(file), stat.st_mtime_ns, stat.st_size)
        return self._index_file(file, stat)

    def _index_file(self, file: Path, stat: os.stat_result) -> StoredInstance | None:
        try:
            content = file.read_bytes()
            meta, data = split_part10(content)
            ds = decode_attributes(data, meta["transfer_syntax_uid"])
        except (FileMetaError, MalformedDataSetError, OSError):
            return None  # not a Part 10 file, or not readable
        except Exception:  # pydicom raises many kinds of error for garbage; a scan goes on
            return None
        row = _row(ds)
        if not row["SOPInstanceUID"]:
            row["SOPInstanceUID"] = meta.get("sop_instance_uid", "")
        if not row["SOPClassUID"]:
            row["SOPClassUID"] = meta.get("sop_class_uid", "")
        if not row["SOPInstanceUID"]:
            return None
        row.update(
            TransferSyntaxUID=meta["transfer_syntax_uid"],
            path=str(file),
            data_offset=len(content) - data.nbytes,
            data_length=data.nbytes,
            file_mtime_ns=stat.st_mtime_ns,
            file_size=stat.st_size,
        )
        # What this path held before (another SOP Instance UID, if the file was rewritten)
        # is gone.
        self.connection.execute("DELETE FROM instances WHERE path = ?", (str(file),))
        self._upsert(row)
        return _stored(row)

    def _upsert(self, row: dict[str, object]) -> None:
        names = ", ".join(f'"{k}"' for k in row)
        marks = ", ".join(f":{k}" for k in row)
        # REPLACE deletes the row of the same SOP Instance UID: a duplicate replaces.
        self.connection.execute(f"INSERT OR REPLACE INTO instances ({names}) VALUES ({marks})", row)
        if row.get("path") is not None:
            self._memory.pop(str(row["SOPInstanceUID"]), None)

    def _remember_file(self, path: str, mtime_ns: int, size: int) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO files (path, mtime_ns, size, generation) VALUES (?, ?, ?, ?)",
            (path, mtime_ns, size, self._generation()),
        )

    def _generation(self) -> int:
        row = self.connection.execute(
            "SELECT value FROM state WHERE name = 'generation'"
        ).fetchone()
        return int(row[0]) if row else 0

    # -- removing ---------------------------------------------------------------------------

    def remove(self, sop_instance_uid: str) -> bool:
        """Drop an instance from the index (its file, if any, stays); whether it was there."""
        cursor = self.connection.execute(
            "DELETE FROM instances WHERE SOPInstanceUID = ?", (sop_instance_uid,)
        )
        self._memory.pop(sop_instance_uid, None)
        return cursor.rowcount > 0

    # -- scanning ---------------------------------------------------------------------------

    def scan(
        self, directory: str | os.PathLike[str] | None = None, *, files_per_step: int = 2
    ) -> Iterator[ScanProgress]:
        """Bring the index in line with the files under ``directory`` (default: the index's).

        A generator: each step parses at most ``files_per_step`` new or changed files (about
        2 ms each for a CT slice), looks at no more than 128 files, or drops at most
        ``files_per_step`` vanished ones, then yields its
        :class:`ScanProgress`; the last one has ``done=True``. Drive it from async code with a
        checkpoint between steps. Files are recognised by path, modification time and size.
        Hidden files and directories (a leading dot: the database, temporary files of atomic
        writes) are skipped.
        """
        root = Path(directory).resolve() if directory is not None else self.directory
        if root is None:
            raise ValueError("an index in memory mode has no directory to scan")
        generation = self._generation() + 1
        self.connection.execute(
            "INSERT OR REPLACE INTO state (name, value) VALUES ('generation', ?)", (generation,)
        )
        counts = _ScanCounts()
        files = _walk(root)
        more = True
        while more:
            # One transaction per step: one commit (and journal sync) per step, not per file,
            # and none left open while other tasks run between steps.
            with self._transaction():
                more = self._scan_step(files, files_per_step, counts)
            yield counts.progress(done=False)
        # Files under root not seen this time have vanished: drop them and their instances.
        prefix = str(root) + os.sep
        while True:
            with self._transaction():
                gone = self.connection.execute(
                    "SELECT path FROM files WHERE generation < ? AND substr(path, 1, ?) = ? "
                    "LIMIT ?",
                    (generation, len(prefix), prefix, files_per_step),
                ).fetchall()
                for (path,) in gone:
                    cursor = self.connection.execute(
                        "DELETE FROM instances WHERE path = ?", (path,)
                    )
                    counts.removed += cursor.rowcount
                    self.connection.execute("DELETE FROM files WHERE path = ?", (path,))
            if not gone:
                break
            yield counts.progress(done=False)
        yield counts.progress(done=True)

    def _scan_step(self, files: Iterator[Path], files_per_step: int, counts: _ScanCounts) -> bool:
        """Parse up to ``files_per_step`` new or changed files (and look at no more than
        ``_STATS_PER_STEP`` files in all); whether files remain."""
        parse_budget = files_per_step
        stat_budget = _STATS_PER_STEP
        while parse_budget > 0 and stat_budget > 0:
            file = next(files, None)
            if file is None:
                return False
            stat_budget -= 1
            counts.seen += 1
            try:
                stat = file.stat()
            except FileNotFoundError:
                continue
            known = self.connection.execute(
                "SELECT mtime_ns, size FROM files WHERE path = ?", (str(file),)
            ).fetchone()
            self._remember_file(str(file), stat.st_mtime_ns, stat.st_size)
            if known is not None and (known[0], known[1]) == (stat.st_mtime_ns, stat.st_size):
                counts.skipped += 1
                continue
            parse_budget -= 1
            if self._index_file(file, stat) is not None:
                counts.indexed += 1
            else:
                # Not (or no longer) an instance: whatever this path held goes.
                self.connection.execute("DELETE FROM instances WHERE path = ?", (str(file),))
        return True

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.connection.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def scan_all(self, directory: str | os.PathLike[str] | None = None) -> ScanProgress:
        """Run :meth:`scan` to the end at once (start-up, scripts; not on a busy loop)."""
        progress = ScanProgress(0, 0, 0, 0, done=True)
        for progress in self.scan(directory):  # noqa: B007 - the last one is the answer
            pass
        return progress

    # -- reading ----------------------------------------------------------------------------

    def get(self, sop_instance_uid: str) -> StoredInstance | None:
        row = self.connection.execute(
            "SELECT * FROM instances WHERE SOPInstanceUID = ?", (sop_instance_uid,)
        ).fetchone()
        return None if row is None else _stored(dict(row))

    def read_data(self, stored: StoredInstance) -> bytes | memoryview:
        """The data set bytes to send, exactly as stored (no File Meta Information).

        Raises :class:`IndexedFileChanged` when the file's size changed since it was indexed
        and ``FileNotFoundError`` when it is gone.
        """
        if stored.path is None:
            return self._memory[stored.sop_instance_uid]
        with open(stored.path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size != stored.offset + stored.length:
                raise IndexedFileChanged(
                    f"{stored.path} is {size} bytes, indexed as {stored.offset + stored.length}"
                )
            file.seek(stored.offset)
            return file.read(stored.length)

    def load(self, stored: StoredInstance) -> Instance:
        """The stored instance as an :class:`~aiodicom.instance.Instance` (data untouched)."""
        return Instance(
            sop_class_uid=stored.sop_class_uid,
            sop_instance_uid=stored.sop_instance_uid,
            transfer_syntax_uid=stored.transfer_syntax_uid,
            data=self.read_data(stored),
        )


def _stored(row: dict[str, object] | sqlite3.Row) -> StoredInstance:
    path = row["path"]
    return StoredInstance(
        sop_class_uid=str(row["SOPClassUID"]),
        sop_instance_uid=str(row["SOPInstanceUID"]),
        transfer_syntax_uid=str(row["TransferSyntaxUID"]),
        path=Path(str(path)) if path is not None else None,
        offset=int(str(row["data_offset"])),
        length=int(str(row["data_length"])),
    )


def stored_from_row(row: sqlite3.Row) -> StoredInstance:
    """A :class:`StoredInstance` from a row of the ``instances`` table (for the query engine)."""
    return _stored(row)


def _walk(root: Path) -> Iterator[Path]:
    """Regular files under ``root``, depth first, lazily (one directory listing at a time)."""
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file():
                    yield Path(entry.path)
