"""DICOM Part 10 files: File Meta Information, atomic writes, and cheap element peeking.

A received data set stays the bytes that arrived: writing a file puts a preamble and a File
Meta Information header (PS3.10 section 7.1) in front of those bytes and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import secrets
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, Protocol

from pydicom.datadict import dictionary_VR
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from aiodicom.errors import DicomError

# Encoding and encoding_of live in aiodicom.uids, with the transfer syntaxes they describe;
# they are exported here too, where file readers look for them.
from aiodicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    Encoding,
    encoding_of,
)
from aiodicom.unnamed import ProcUnavailable, link_unnamed, open_unnamed

__all__ = [
    "IDENTIFYING_TAGS",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "MAX_INFLATED_PEEK",
    "OPEN_FLAGS",
    "PREAMBLE",
    "Encoding",
    "FileMetaError",
    "MalformedDataSetError",
    "Part10Content",
    "encode_file_meta",
    "encoding_of",
    "fsync_directory",
    "inflate",
    "link_over",
    "open_temporary",
    "part10_header",
    "peek_elements",
    "peek_prefix",
    "split_part10",
    "temporary_name",
    "write_all",
    "write_atomic",
    "write_part10_atomic",
]


#: The 128-byte File Preamble (unused, so zero) and the "DICM" prefix.
PREAMBLE = bytes(128) + b"DICM"


class Part10Content(Protocol):
    """What a Part 10 file is written from: an :class:`~aiodicom.instance.Instance` is one.

    A protocol rather than the class, so that this module stays below the one defining it.
    """

    @property
    def sop_class_uid(self) -> str: ...
    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def transfer_syntax_uid(self) -> str: ...
    @property
    def source_ae_title(self) -> str | None: ...
    @property
    def data(self) -> bytes | memoryview: ...


class FileMetaError(DicomError, ValueError):
    """A value cannot be encoded in the File Meta Information (not ASCII, or too long)."""


class MalformedDataSetError(DicomError, ValueError):
    """Data set bytes could not be scanned: truncated, bad lengths, or a corrupt deflate stream."""


# --------------------------------------------------------------------------------------------
# File Meta Information


def _text_value(value: str, *, name: str, max_length: int, pad: bytes) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise FileMetaError(f"{name} {value!r} is not ASCII") from None
    if not raw or len(raw) > max_length:
        raise FileMetaError(f"{name} {value!r} must be 1 to {max_length} characters long")
    return raw + pad if len(raw) % 2 else raw


def _short_element(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _uid_element(element: int, name: str, value: str) -> bytes:
    # Peers sometimes leave their padding on; a UI value is padded with NUL by us.
    encoded = _text_value(value.rstrip("\0 "), name=name, max_length=64, pad=b"\0")
    return _short_element(element, b"UI", encoded)


_GROUP_LENGTH = struct.Struct("<HH2sHI")


# Every instance of a retrieval shares these values, and encoding them costs more than the
# rest of a small file's header: only the SOP Instance UID is encoded per file. Bounded, as
# the values come from peers.
@functools.lru_cache(maxsize=256)
def _constant_meta(
    sop_class_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str | None,
    source_ae_title: str | None,
) -> tuple[bytes, bytes]:
    """Return the encoded elements before and after (0002,0003)."""
    before = (
        # (0002,0001) is OB, so it takes the long explicit-VR header.
        _GROUP_LENGTH.pack(0x0002, 0x0001, b"OB", 0, 2)
        + b"\x00\x01"
        + _uid_element(0x0002, "Media Storage SOP Class UID", sop_class_uid)
    )
    after = [
        _uid_element(0x0010, "Transfer Syntax UID", transfer_syntax_uid),
        _uid_element(0x0012, "Implementation Class UID", implementation_class_uid),
    ]
    if implementation_version_name:
        name = _text_value(
            implementation_version_name, name="Implementation Version Name", max_length=16, pad=b" "
        )
        after.append(_short_element(0x0013, b"SH", name))
    if source_ae_title and source_ae_title.strip():
        title = _text_value(
            source_ae_title.strip(), name="Source Application Entity Title", max_length=16, pad=b" "
        )
        after.append(_short_element(0x0016, b"AE", title))
    return before, b"".join(after)


def _file_meta_parts(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str | None,
    source_ae_title: str | None,
) -> tuple[bytes, bytes, bytes, bytes]:
    """(group length element, elements before (0002,0003), (0002,0003), elements after)."""
    try:
        before, after = _constant_meta(
            sop_class_uid,
            transfer_syntax_uid,
            implementation_class_uid,
            implementation_version_name,
            source_ae_title,
        )
    except FileMetaError:
        # Report the first bad value in element order, as encoding them one by one would:
        # the SOP Instance UID comes second, before what the cached part raised for.
        _uid_element(0x0002, "Media Storage SOP Class UID", sop_class_uid)
        _uid_element(0x0003, "Media Storage SOP Instance UID", sop_instance_uid)
        raise
    instance = _uid_element(0x0003, "Media Storage SOP Instance UID", sop_instance_uid)
    length = len(before) + len(instance) + len(after)
    return _GROUP_LENGTH.pack(0x0002, 0x0000, b"UL", 4, length), before, instance, after


def encode_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
    source_ae_title: str | None = None,
) -> bytes:
    """Encode the File Meta Information group (0002), explicit VR little endian.

    Returns the elements from (0002,0000) on, without preamble and prefix. Optional values
    that are ``None`` or empty are left out.
    """
    return b"".join(
        _file_meta_parts(
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax_uid,
            implementation_class_uid,
            implementation_version_name,
            source_ae_title,
        )
    )


def part10_header(
    instance: Part10Content,
    *,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
) -> bytes:
    """Return everything a Part 10 file holds before the data set: preamble, prefix, meta."""
    group_length, before, sop_instance, after = _file_meta_parts(
        instance.sop_class_uid,
        instance.sop_instance_uid,
        instance.transfer_syntax_uid,
        implementation_class_uid,
        implementation_version_name,
        instance.source_ae_title,
    )
    return b"".join((PREAMBLE, group_length, before, sop_instance, after))


# --------------------------------------------------------------------------------------------
# Atomic writing

#: How temporary files are created: never following or reusing an existing name.
OPEN_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
)

_HAVE_WRITEV = hasattr(os, "writev")


def write_all(fd: int, chunks: list[memoryview]) -> None:
    # writev/write may write less than asked (signals, >2 GiB on Linux); go on from there.
    pending = [chunk for chunk in chunks if chunk.nbytes]
    while pending:
        # Windows has no writev.
        written = os.writev(fd, pending) if _HAVE_WRITEV else os.write(fd, pending[0])
        while pending and written >= pending[0].nbytes:
            written -= pending[0].nbytes
            pending.pop(0)
        if written:
            pending[0] = pending[0][written:]


def fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; Windows cannot open a directory, and needs no such step.
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_part10_atomic(
    path: str | os.PathLike[str], instance: Part10Content, fsync: bool = False
) -> None:
    """Write ``instance`` as a Part 10 file at ``path``, all or nothing.

    The file is written under a temporary name in the same directory (which must exist) and
    renamed over ``path`` only once complete, so readers never see a partial file and an
    existing file at ``path`` survives a failed write. With ``fsync`` the data and the rename
    are flushed to stable storage before returning. Plain blocking calls, on purpose: the
    writes land in the page cache, and the library uses no threads.
    """
    # Build everything that can fail on bad input before a temporary file exists.
    chunks = [memoryview(part10_header(instance)), memoryview(instance.data).cast("B")]
    write_atomic(path, chunks, fsync)


_temporary_numbers = itertools.count()
# getpid() is a system call each time (glibc no longer caches it): asked once, and again in a
# forked child, which must not reuse its parent's names.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_forked)


def temporary_name(directory: str, prefix: str) -> str:
    """A name for a temporary file in ``directory``, unique among this process's: the process
    ID and a counter (``O_EXCL`` catches a leftover of an earlier process with the same ID)."""
    # Not secrets.token_hex: that costs a getrandom call per file, and these names need to be
    # unique, not unguessable (the file is created with O_EXCL, never opened if it exists).
    return os.path.join(directory, f".{prefix}.{_pid}-{next(_temporary_numbers)}.tmp")


def open_temporary(directory: str, prefix: str, flags: int = OPEN_FLAGS) -> tuple[str, int]:
    """Create a new temporary file in ``directory``: (its path, a descriptor open on it)."""
    name = temporary_name(directory, prefix)
    try:
        return name, os.open(name, flags, 0o666)
    except FileExistsError:
        # Left behind by an earlier process that had our process ID: a random name instead.
        name = os.path.join(directory, f".{prefix}.{secrets.token_hex(8)}.tmp")
        return name, os.open(name, flags, 0o666)


def write_atomic(
    path: str | os.PathLike[str], chunks: list[memoryview], fsync: bool = False,
    unnamed: int | None = None,
) -> None:
    """Write ``chunks`` as the file at ``path``, all or nothing (see
    :func:`write_part10_atomic`): one temporary file, one ``writev``, one rename (on Linux an
    unnamed file and one link, see :mod:`aiodicom.unnamed`).

    ``unnamed``: an empty file from :func:`~aiodicom.unnamed.open_unnamed` made ahead for this
    write (by a :class:`~aiodicom.unnamed.SpareFile`); it is written and linked, or closed."""
    # Strings, not Path objects: pathlib's parsing cost more than writing a small file.
    final = os.fspath(path)
    if unnamed is None:
        unnamed = open_unnamed(os.path.dirname(final))
    if unnamed is not None:
        try:
            try:
                write_all(unnamed, chunks)
                if fsync:
                    os.fsync(unnamed)
                link_over(unnamed, final)
            finally:
                os.close(unnamed)
        except ProcUnavailable:
            pass  # written again below, as a named temporary file
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # A file made ahead on another file system than the target's: written below.
        else:
            if fsync:
                fsync_directory(Path(os.path.dirname(final) or os.curdir))
            return
    directory, name = os.path.split(final)
    temporary, fd = open_temporary(directory, name)
    try:
        try:
            write_all(fd, chunks)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
    except BaseException:
        # BaseException too: a KeyboardInterrupt must not leave the temporary file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if fsync:
        fsync_directory(Path(directory or os.curdir))


def link_over(fd: int, final: str) -> None:
    """Name the unnamed file on ``fd`` (:func:`~aiodicom.unnamed.open_unnamed`) ``final``,
    replacing a file (or symbolic link) there, atomically; raises
    :class:`~aiodicom.unnamed.ProcUnavailable` where it cannot be linked at all."""
    try:
        link_unnamed(fd, final)
    except FileExistsError:
        # An instance received again: linked under a temporary name, renamed over the old.
        directory, name = os.path.split(final)
        temporary = temporary_name(directory, name)
        link_unnamed(fd, temporary)
        try:
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


# --------------------------------------------------------------------------------------------
# Peeking at top-level elements without decoding the data set

_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
# Explicit VRs whose header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2), as the
# bytes a header carries; pydicom's set is the one datasets.py reads with too.
_LONG_VRS = frozenset(vr.value.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
# Element headers: implicit VR (also every item and delimiter), explicit VR with a 2-byte
# length, and the 4-byte length that follows the reserved bytes of the long explicit form.
_LE_IMPLICIT = struct.Struct("<HHI")
_BE_IMPLICIT = struct.Struct(">HHI")
_LE_EXPLICIT = struct.Struct("<HH2sH")
_BE_EXPLICIT = struct.Struct(">HH2sH")
_LE_LENGTH = struct.Struct("<I")
_BE_LENGTH = struct.Struct(">I")


_ExplicitHeader = Callable[[bytes | memoryview, int], tuple[int, int, int, int]]


def _vr_codes(
    byteorder: Literal["little", "big"],
) -> tuple[_ExplicitHeader, frozenset[int], int, int]:
    """For reading explicit VR element headers with the VR as a number (no bytes object to
    hash): the header reader, the VRs with a 4-byte length (_LONG_VRS), SQ and UN."""

    def code(vr: bytes) -> int:
        return int.from_bytes(vr, byteorder)

    header = struct.Struct(("<" if byteorder == "little" else ">") + "HHHH").unpack_from
    return header, frozenset(map(code, _LONG_VRS)), code(b"SQ"), code(b"UN")


_LE_VR_CODES = _vr_codes("little")
_BE_VR_CODES = _vr_codes("big")
# Deliberately nested data sets deeper than this are treated as hostile rather than recursed.
_MAX_DEPTH = 64
_INFLATE_CHUNK = 16384
MAX_INFLATED_PEEK = 1 << 20
"""The most a deflated data set is inflated to peek at its elements (see :func:`peek_elements`);
Study and Series Instance UIDs come within the first kilobytes of any real data set. Small, as
the inflating runs on the event loop: 1 MiB is about a millisecond."""


class _Source:
    """Random access to data set bytes, inflating a deflated stream only as far as needed.

    Reads go forward only (a scan): inflated bytes before the latest read are dropped, so that
    skipping a large element costs time, never memory; and no more than ``max_inflated`` bytes
    are ever inflated (a deflate stream can inflate a thousandfold).
    """

    def __init__(
        self, data: bytes | memoryview, deflated: bool, max_inflated: int = MAX_INFLATED_PEEK
    ) -> None:
        view = memoryview(data).cast("B")
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflated else None
        self._compressed = view
        self._fed = 0
        self._max_inflated = max_inflated
        self._produced = 0
        # The stream offset of self._buffer[0] (dropped bytes before it, when inflating).
        self._base = 0
        self._inflated = bytearray()
        self._buffer: memoryview | bytearray = self._inflated if deflated else view

    def _available(self, start: int, end: int) -> bool:
        inflater = self._inflater
        if inflater is None:
            return len(self._buffer) >= end
        inflated = self._inflated
        self._drop_before(start)
        while self._base + len(inflated) < end:
            if inflater.eof:
                return False
            pending: bytes | memoryview = inflater.unconsumed_tail
            if not pending:
                if self._fed >= self._compressed.nbytes:
                    return False
                pending = self._compressed[self._fed : self._fed + _INFLATE_CHUNK]
                self._fed += len(pending)
            room = self._max_inflated - self._produced
            if room <= 0:
                raise MalformedDataSetError(
                    f"the deflated data set inflates to more than {self._max_inflated} bytes "
                    "before the elements sought"
                )
            try:
                out = inflater.decompress(pending, min(room, _INFLATE_CHUNK * 4))
            except zlib.error as exc:
                raise MalformedDataSetError(f"corrupt deflated data set: {exc}") from None
            self._produced += len(out)
            inflated += out
            self._drop_before(start)  # a skipped value is never kept
        return True

    def _drop_before(self, start: int) -> None:
        if start > self._base:
            drop = min(start - self._base, len(self._inflated))
            del self._inflated[:drop]
            self._base += drop

    def at_end(self, position: int) -> bool:
        return not self._available(position, position + 1)

    def read(self, position: int, length: int) -> bytes:
        if not self._available(position, position + length):
            raise MalformedDataSetError(f"data set ends inside an element at offset {position}")
        start = position - self._base
        return bytes(self._buffer[start : start + length])


def inflate(data: bytes | memoryview, max_inflated: int) -> bytes:
    """A whole deflated data set (PS3.5 A.5) inflated, in bounded steps; past ``max_inflated``
    bytes :class:`MalformedDataSetError` (a deflate stream can inflate a thousandfold)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    pending: bytes | memoryview = memoryview(data).cast("B")
    try:
        while pending and not inflater.eof:
            room = max_inflated - len(out)
            if room <= 0:
                raise MalformedDataSetError(
                    f"the deflated data set inflates to more than {max_inflated} bytes"
                )
            out += inflater.decompress(pending, min(room, 1 << 20))
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise MalformedDataSetError(f"corrupt deflated data set: {exc}") from None
    return bytes(out)


class _Scanner:
    def __init__(self, source: _Source, little_endian: bool) -> None:
        self._source = source
        order = "<" if little_endian else ">"
        self._implicit_header = struct.Struct(order + "HHI")
        self._explicit_header = struct.Struct(order + "HH2sH")
        self._long_length = struct.Struct(order + "I")

    def header(self, position: int, implicit_vr: bool) -> tuple[int, bytes, int, int]:
        """Return (tag, VR or b"", value length, value position) of the element at position."""
        head = self._source.read(position, 8)
        group, element, vr, short_length = self._explicit_header.unpack(head)
        # Item and delimiter tags never carry a VR, whatever the transfer syntax.
        if implicit_vr or group == 0xFFFE:
            (_, _, length) = self._implicit_header.unpack(head)
            return group << 16 | element, b"", length, position + 8
        if vr in _LONG_VRS:
            (length,) = self._long_length.unpack(self._source.read(position + 8, 4))
            return group << 16 | element, vr, length, position + 12
        return group << 16 | element, vr, short_length, position + 8

    def skip_undefined(self, position: int, implicit_vr: bool, depth: int = 0) -> int:
        """Skip the items of an undefined-length value; return the position after its end."""
        if depth > _MAX_DEPTH:
            raise MalformedDataSetError(f"sequences nested deeper than {_MAX_DEPTH} levels")
        while True:
            tag, _, length, position = self.header(position, True)
            if tag == _SEQUENCE_DELIMITATION:
                return position
            if tag != _ITEM:
                raise MalformedDataSetError(f"expected an item tag, found {tag:08X}")
            if length != _UNDEFINED_LENGTH:
                position += length
                continue
            # An undefined-length item is a data set that runs to its Item Delimitation.
            while True:
                tag, vr, length, position = self.header(position, implicit_vr)
                if tag == _ITEM_DELIMITATION:
                    break
                if length == _UNDEFINED_LENGTH:
                    position = self.skip_undefined(position, implicit_vr or vr == b"UN", depth + 1)
                else:
                    position += length


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def peek_elements(
    data: bytes | memoryview, transfer_syntax_uid: str, tags: Iterable[int],
    max_inflated: int = MAX_INFLATED_PEEK,
) -> dict[int, str]:
    """Read the values of a few top-level elements without decoding the data set.

    Scans element headers from the start and stops past the highest requested tag (data sets
    are sorted by tag), so asking for (0020,000D) and (0020,000E) never touches pixel data.
    Handles implicit VR LE, explicit VR LE and BE, and deflated data sets (inflated only as
    far as the scan goes, and never more than ``max_inflated`` bytes: past them
    :class:`MalformedDataSetError`). Values are returned as text with trailing NUL/space padding
    removed, decoded as ISO 8859-1 so no byte is lost: meant for UIDs, codes and other
    default-repertoire values; read :attr:`Instance.dataset` where Specific Character Set
    matters. Tags absent from the data set, and sequences, are left out.

    Raises :class:`MalformedDataSetError` when the bytes cannot be scanned that far.
    """
    wanted = frozenset(tags)
    if not wanted:
        return {}
    encoding = encoding_of(transfer_syntax_uid)
    last, values = _peek_plan(wanted, encoding.implicit_vr)
    if encoding.deflated:
        return _peek_inflating(data, encoding, len(wanted), last, values, max_inflated)
    # unpack_from and slicing work on bytes as they are; anything else is viewed as bytes.
    view = data if type(data) is bytes else memoryview(data).cast("B")
    end = len(view)
    little_endian = encoding.little_endian
    found: dict[int, str] = {}
    position = 0
    # One loop per encoding, every header read with one unpack_from and no copy: this runs
    # for every instance a DirectorySink writes.
    if encoding.implicit_vr:
        implicit_header = (_LE_IMPLICIT if little_endian else _BE_IMPLICIT).unpack_from
        while position < end:
            if position + 8 > end:
                raise _truncated(position)
            group, element, length = implicit_header(view, position)
            position += 8
            tag = group << 16 | element
            if tag > last:
                break
            if length == _UNDEFINED_LENGTH:
                position = _skip_undefined(view, position, True, little_endian)
                continue
            if tag in values:
                if position + length > end:
                    raise _truncated(position)
                found[tag] = str(view[position : position + length], "latin-1").rstrip("\0 ")
                if len(found) == len(wanted):
                    break
            position += length
        return found
    explicit_header, long_vrs, sq, un = _LE_VR_CODES if little_endian else _BE_VR_CODES
    long_length = (_LE_LENGTH if little_endian else _BE_LENGTH).unpack_from
    # The header decoding below is also in _skip_undefined: inlined on purpose, a call per
    # element would cost a quarter of this loop, which runs for every instance received. The
    # VR is read as a number (no bytes object to hash), and a header running past the end is
    # caught by unpack_from rather than checked before each element.
    try:
        while position < end:
            group, element, vr, length = explicit_header(view, position)
            if group == 0xFFFE:
                # Item and delimiter tags never carry a VR, whatever the transfer syntax.
                (length,) = long_length(view, position + 4)
                vr = 0
                position += 8
            elif vr in long_vrs:
                position += 8  # a truncated length is reported where it starts
                (length,) = long_length(view, position)
                position += 4
            else:
                position += 8
            tag = group << 16 | element
            if tag > last:
                break
            if length == _UNDEFINED_LENGTH:
                # CP-246: an undefined-length UN holds implicit VR little endian items.
                position = _skip_undefined(view, position, vr == un, little_endian)
                continue
            if tag in values and vr != sq:
                if position + length > end:
                    raise _truncated(position)
                found[tag] = str(view[position : position + length], "latin-1").rstrip("\0 ")
                if len(found) == len(wanted):
                    break
            position += length
    except struct.error:  # a header running past the end of the data
        raise _truncated(position) from None
    return found


#: What a receiver reads from every data set it stores, in one scan: whether the data set is
#: what its command says (SOP Class and SOP Instance UID) and where a DirectorySink files it
#: (Study and Series Instance UID).
IDENTIFYING_TAGS = (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)


def peek_prefix(
    prefix: bytes | memoryview, transfer_syntax_uid: str, tags: Iterable[int]
) -> dict[int, str] | None:
    """:func:`peek_elements` over the first bytes of a data set still arriving: the values when
    every one of ``tags`` is within them, else ``None`` (the rest of the data set may hold
    them, or a tag is absent: only the whole data set can tell). Deflated data sets give
    ``None``: they are inflated only under the receiver's own limit, once whole."""
    wanted = frozenset(tags)
    if encoding_of(transfer_syntax_uid).deflated:
        return None
    try:
        found = peek_elements(prefix, transfer_syntax_uid, wanted)
    except MalformedDataSetError:
        return None
    return found if len(found) == len(wanted) else None


@functools.lru_cache(maxsize=64)
def _peek_plan(wanted: frozenset[int], implicit_vr: bool) -> tuple[int, frozenset[int]]:
    """Return the highest wanted tag and the wanted tags whose values are to be read."""
    if not implicit_vr:
        return max(wanted), wanted
    # Implicit VR gives no hint that a defined-length value is a sequence: ask the dictionary.
    return max(wanted), frozenset(tag for tag in wanted if _dictionary_vr(tag) != "SQ")


def _truncated(position: int) -> MalformedDataSetError:
    return MalformedDataSetError(f"data set ends inside an element at offset {position}")


def _skip_undefined(
    view: bytes | memoryview, position: int, implicit_vr: bool, little_endian: bool, depth: int = 0
) -> int:
    """Skip the items of an undefined-length value; return the position after its end."""
    if depth > _MAX_DEPTH:
        raise MalformedDataSetError(f"sequences nested deeper than {_MAX_DEPTH} levels")
    end = len(view)
    implicit_header = (_LE_IMPLICIT if little_endian else _BE_IMPLICIT).unpack_from
    explicit_header = (_LE_EXPLICIT if little_endian else _BE_EXPLICIT).unpack_from
    long_length = (_LE_LENGTH if little_endian else _BE_LENGTH).unpack_from
    while True:
        if position + 8 > end:
            raise _truncated(position)
        group, element, length = implicit_header(view, position)
        position += 8
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITATION:
            return position
        if tag != _ITEM:
            raise MalformedDataSetError(f"expected an item tag, found {tag:08X}")
        if length != _UNDEFINED_LENGTH:
            position += length
            continue
        # An undefined-length item is a data set that runs to its Item Delimitation.
        while True:
            if position + 8 > end:
                raise _truncated(position)
            vr = b""
            if implicit_vr:
                group, element, length = implicit_header(view, position)
                position += 8
            else:
                group, element, vr, length = explicit_header(view, position)
                if group == 0xFFFE:
                    (length,) = long_length(view, position + 4)
                    vr = b""
                    position += 8
                elif vr in _LONG_VRS:
                    if position + 12 > end:
                        raise _truncated(position + 8)
                    (length,) = long_length(view, position + 8)
                    position += 12
                else:
                    position += 8
            tag = group << 16 | element
            if tag == _ITEM_DELIMITATION:
                break
            if length == _UNDEFINED_LENGTH:
                position = _skip_undefined(
                    view, position, implicit_vr or vr == b"UN", little_endian, depth + 1
                )
            else:
                position += length


def _peek_inflating(
    data: bytes | memoryview, encoding: Encoding, count: int, last: int, values: frozenset[int],
    max_inflated: int,
) -> dict[int, str]:
    """:func:`peek_elements` for a deflated data set, inflating only as far as the scan goes."""
    source = _Source(data, deflated=True, max_inflated=max_inflated)
    scanner = _Scanner(source, encoding.little_endian)
    found: dict[int, str] = {}
    position = 0
    while len(found) < count and not source.at_end(position):
        tag, vr, length, position = scanner.header(position, encoding.implicit_vr)
        if tag > last:
            break
        if length == _UNDEFINED_LENGTH:
            # CP-246: an undefined-length UN holds implicit VR little endian items.
            position = scanner.skip_undefined(position, encoding.implicit_vr or vr == b"UN")
            continue
        if tag in values and vr != b"SQ":
            found[tag] = source.read(position, length).rstrip(b"\0 ").decode("latin-1")
        position += length
    return found


# --------------------------------------------------------------------------------------------
# Reading a Part 10 file back

_META_TAGS = {
    0x00020002: "sop_class_uid",
    0x00020003: "sop_instance_uid",
    0x00020010: "transfer_syntax_uid",
    0x00020016: "source_ae_title",
}


def split_part10(data: bytes | memoryview) -> tuple[dict[str, str], memoryview]:
    """Split Part 10 bytes into File Meta values and the data set bytes that follow.

    The values are keyed ``sop_class_uid``, ``sop_instance_uid``, ``transfer_syntax_uid`` and
    ``source_ae_title`` (those present). The data set is returned as a view of ``data``,
    untouched. Raises :class:`FileMetaError` when there is no preamble and "DICM" prefix or no
    Transfer Syntax UID, :class:`MalformedDataSetError` when the meta group is truncated.
    """
    view = memoryview(data).cast("B")
    if view.nbytes < len(PREAMBLE) or bytes(view[128:132]) != b"DICM":
        raise FileMetaError("not a DICOM Part 10 file: no 'DICM' after the 128-byte preamble")
    source = _Source(view, deflated=False)
    scanner = _Scanner(source, little_endian=True)
    position = len(PREAMBLE)
    found: dict[str, str] = {}
    # The meta group is always explicit VR little endian (PS3.10 7.1); it ends where group
    # 0002 does, which is more robust than trusting (0002,0000).
    while not source.at_end(position):
        tag, _, length, value_position = scanner.header(position, implicit_vr=False)
        if tag >> 16 != 0x0002:
            break
        if length == _UNDEFINED_LENGTH:
            raise MalformedDataSetError(f"undefined length in File Meta element {tag:08X}")
        name = _META_TAGS.get(tag)
        if name is not None:
            found[name] = source.read(value_position, length).rstrip(b"\0 ").decode("latin-1")
        position = value_position + length
    if not found.get("transfer_syntax_uid"):
        raise FileMetaError("the File Meta Information has no Transfer Syntax UID")
    return found, view[position:]
