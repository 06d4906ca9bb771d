"""DICOM Part 10 files: File Meta Information, atomic writes, and reading a file back.

A received data set stays the bytes that arrived: writing a file puts a preamble and a File
Meta Information header (PS3.10 section 7.1) in front of those bytes and nothing else. Cheap
element peeking lives in :mod:`aiodicom.peek` and is exported here too.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import secrets
import struct
from pathlib import Path
from typing import Protocol

from aiodicom.errors import DicomError
from aiodicom.peek import (
    IDENTIFYING_TAGS,
    MAX_INFLATED_PEEK,
    UNDEFINED_LENGTH,
    MalformedDataSetError,
    Scanner,
    Source,
    inflate,
    peek_elements,
    peek_prefix,
)

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
    source = Source(view, deflated=False)
    scanner = Scanner(source, little_endian=True)
    position = len(PREAMBLE)
    found: dict[str, str] = {}
    # The meta group is always explicit VR little endian (PS3.10 7.1); it ends where group
    # 0002 does, which is more robust than trusting (0002,0000).
    while not source.at_end(position):
        tag, _, length, value_position = scanner.header(position, implicit_vr=False)
        if tag >> 16 != 0x0002:
            break
        if length == UNDEFINED_LENGTH:
            raise MalformedDataSetError(f"undefined length in File Meta element {tag:08X}")
        name = _META_TAGS.get(tag)
        if name is not None:
            found[name] = source.read(value_position, length).rstrip(b"\0 ").decode("latin-1")
        position = value_position + length
    if not found.get("transfer_syntax_uid"):
        raise FileMetaError("the File Meta Information has no Transfer Syntax UID")
    return found, view[position:]
