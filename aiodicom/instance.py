"""The value type for a received composite instance: its data set bytes, exactly as they came."""

from __future__ import annotations

import functools
import io
import os
import zlib
from pathlib import Path

import attrs
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset

from aiodicom.errors import DicomError
from aiodicom.fileio import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    encode_file_meta,
    part10_header,
    split_part10,
)
from aiodicom.peek import IDENTIFYING_TAGS, MAX_INFLATED_PEEK, peek_elements
from aiodicom.spool import SpooledFile
from aiodicom.uids import encoding_of

__all__ = ["Instance", "read_part10"]

_SOP_CLASS_UID, _SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID = IDENTIFYING_TAGS


# slots=False so that functools.cached_property has an instance __dict__ to cache into; it
# writes there directly, so the class stays frozen for its fields.
# eq and repr written below: ``data`` may still be on disk, and is compared and sized as such.
@attrs.frozen(slots=False, eq=False, repr=False)
class Instance:
    """One composite instance received over C-STORE.

    ``data`` is the data set exactly as it arrived (no File Meta Information), in
    ``transfer_syntax_uid``; nothing here modifies it. Decoding happens only when asked for,
    through :attr:`dataset`.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    _data: bytes | memoryview = attrs.field(alias="data")
    source_ae_title: str | None = None
    #: Set when the receiver wrote the data set to a temporary file as it arrived (for a
    #: DirectorySink, which renames that file into place); ``data`` is then mapped from that
    #: file, the first time it is read.
    spool: SpooledFile | None = attrs.field(default=None, repr=False, kw_only=True)
    #: The most a deflated data set is inflated to peek at a few of its elements
    #: (:meth:`peek_uids`); the acceptor sets it from :attr:`Limits.max_inflated_bytes
    #: <aiodicom.Limits>`.
    max_inflated: int = attrs.field(
        default=MAX_INFLATED_PEEK, eq=False, repr=False, kw_only=True
    )

    @property
    def data(self) -> bytes | memoryview:
        """The data set bytes. For an instance a DirectorySink wrote to its file while it
        arrived, mapped from that file on first access (renaming the file is all the sink
        does; most retrievals to a directory never read the data back)."""
        spool = self.spool
        if spool is not None and spool.deferred:
            return spool.mapped()
        return self._data

    @property
    def size(self) -> int:
        """Bytes of the data set, known without reading one that is on disk."""
        spool = self.spool
        if spool is not None and spool.deferred:
            return spool.size
        return memoryview(self._data).nbytes

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Instance)
        return (
            self.sop_class_uid == other.sop_class_uid
            and self.sop_instance_uid == other.sop_instance_uid
            and self.transfer_syntax_uid == other.transfer_syntax_uid
            and self.source_ae_title == other.source_ae_title
            and self.size == other.size
            and self.data == other.data
        )

    def __hash__(self) -> int:
        return hash((self.sop_class_uid, self.sop_instance_uid, self.transfer_syntax_uid,
                     self.source_ae_title, self.size))

    def __repr__(self) -> str:
        # A repr of megabytes of pixel data helps nobody.
        return (
            f"Instance(sop_class_uid={self.sop_class_uid!r}, "
            f"sop_instance_uid={self.sop_instance_uid!r}, "
            f"transfer_syntax_uid={self.transfer_syntax_uid!r}, data=<{self.size} bytes>, "
            f"source_ae_title={self.source_ae_title!r})"
        )

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The data set decoded by pydicom, on first access only, then cached.

        It carries :meth:`file_meta` as ``file_meta`` so pydicom can decode its pixel data.
        The cached object is shared: changes made to it are seen by every later access.
        """
        encoding = encoding_of(self.transfer_syntax_uid)
        raw: bytes | memoryview = self.data
        if encoding.deflated:
            raw = zlib.decompress(raw, -zlib.MAX_WBITS)
        dataset = read_dataset(
            io.BytesIO(raw),
            is_implicit_VR=encoding.implicit_vr,
            is_little_endian=encoding.little_endian,
        )
        dataset.file_meta = self.file_meta()
        return dataset

    def file_meta(
        self,
        implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
        implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
    ) -> FileMetaDataset:
        """The File Meta Information a Part 10 file of this instance carries, as pydicom sees it.

        Parsed back from the bytes :mod:`aiodicom.fileio` writes, so it cannot differ from them.
        """
        encoded = encode_file_meta(
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_instance_uid,
            transfer_syntax_uid=self.transfer_syntax_uid,
            implementation_class_uid=implementation_class_uid,
            implementation_version_name=implementation_version_name,
            source_ae_title=self.source_ae_title,
        )
        return FileMetaDataset(read_dataset(io.BytesIO(encoded), False, True))

    def to_part10_bytes(self) -> bytes:
        """The instance as a Part 10 file: preamble, "DICM", File Meta Information, data set."""
        return part10_header(self) + self.data

    def peek_uids(self) -> tuple[str | None, str | None]:
        """Return (StudyInstanceUID, SeriesInstanceUID) without decoding the data set.

        ``None`` stands for an element the data set does not have.
        """
        found = self._peek((_STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID))
        return found.get(_STUDY_INSTANCE_UID), found.get(_SERIES_INSTANCE_UID)

    def peek_sop_uids(self) -> tuple[str | None, str | None]:
        """Return the data set's own (SOPClassUID, SOPInstanceUID) without decoding it (the
        attributes :attr:`sop_class_uid` and :attr:`sop_instance_uid` are the command's).

        ``None`` stands for an element the data set does not have.
        """
        found = self._peek((_SOP_CLASS_UID, _SOP_INSTANCE_UID))
        return found.get(_SOP_CLASS_UID), found.get(_SOP_INSTANCE_UID)

    def _peek(self, tags: tuple[int, ...]) -> dict[int, str]:
        # A receiver reads all of IDENTIFYING_TAGS (checks, then a file name): one scan, kept;
        # or none at all when the spool read them while the data set was arriving.
        cached: dict[int, str] | None = self.__dict__.get("_identifying")
        if cached is None:
            spool = self.spool
            cached = spool.identifying if spool is not None else None
            if cached is None:
                try:
                    cached = peek_elements(
                        self.data, self.transfer_syntax_uid, IDENTIFYING_TAGS, self.max_inflated
                    )
                except DicomError:
                    # Unreadable before all four: scan only as far as the asked tags need.
                    return peek_elements(
                        self.data, self.transfer_syntax_uid, tags, self.max_inflated
                    )
            # Frozen fields, but the instance __dict__ is free (as for cached_property).
            self.__dict__["_identifying"] = cached
        return cached


def read_part10(path: str | os.PathLike[str]) -> Instance:
    """Read a Part 10 file (as :func:`~aiodicom.fileio.write_part10_atomic` writes them) back
    into an :class:`Instance` whose ``data`` are the data set bytes of the file."""
    meta, data = split_part10(Path(path).read_bytes())
    return Instance(
        sop_class_uid=meta.get("sop_class_uid", ""),
        sop_instance_uid=meta.get("sop_instance_uid", ""),
        transfer_syntax_uid=meta["transfer_syntax_uid"],
        data=data,
        source_ae_title=meta.get("source_ae_title") or None,
    )
