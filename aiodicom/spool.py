"""A received data set written to a temporary Part 10 file while its fragments arrive.

When the destination of a C-STORE is known from its command alone (a C-GET into a
:class:`~aiodicom.sinks.DirectorySink`, or a C-MOVE delivery routed by its Move Originator
Message ID), the data set never needs to exist in memory: each fragment goes from the receive
buffer to the file (one copy, by the kernel), and the sink renames the finished file into place.
Memory then stays flat whatever the size of a single object, and no fresh memory is faulted in.

A data set a retrieval keeps in memory (:func:`memory_spool`) goes, once past
:data:`MEMORY_LIMIT`, into a file that lives in memory only (Linux's ``memfd_create``), mapped
once whole. Written to with a system call per fragment, the file gets its pages from the kernel
inside those calls; a buffer of the process's own takes a page fault for each 4 KiB page it
first writes, about 130 per 525 kB slice (500 buffers of 655 kB filled in 176-193 ms of CPU,
grown or allocated whole alike; the same into memory files in 125-128 ms; for a 263 MB C-GET
into memory, a tenth of its CPU).
"""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
from pathlib import Path

from aiodicom.errors import DicomError
from aiodicom.fileio import (
    OPEN_FLAGS,
    fsync_directory,
    link_over,
    open_temporary,
    write_all,
    write_atomic,
)
from aiodicom.peek import IDENTIFYING_TAGS, peek_prefix
from aiodicom.reassembly import MemoryWriter
from aiodicom.unnamed import ProcUnavailable, SpareFile, open_unnamed

__all__ = ["MEMORY_LIMIT", "MemoryFileWriter", "SpooledFile", "memory_spool", "temporary_spool"]

# Read as well as write: the finished file is mapped to give the data set without a copy.
_OPEN_FLAGS = (OPEN_FLAGS & ~os.O_WRONLY) | os.O_RDWR

# Linux (and FreeBSD 13+) only; elsewhere a data set kept in memory grows in a buffer.
_memfd_create = getattr(os, "memfd_create", None)
_MFD_CLOEXEC: int = getattr(os, "MFD_CLOEXEC", 0)


#: Data sets up to this size stay in memory: for them, a file of their own while they arrive
#: costs more system calls than one write at the end (a DirectorySink's 40 kB C-STOREs: 8 %
#: more CPU, and no faster, benchmarks/RESULTS.md run 17). Larger ones go to disk as they
#: arrive, so memory stays bounded. 64 KiB, under the C library's threshold for giving large
#: blocks their own fresh pages (128 KiB): a 256 KiB stage cost each 525 kB CT slice a fresh
#: mapping, faulted in and copied, about 70 us of user time, more than the two extra writes it
#: saved (benchmarks/RESULTS.md).
MEMORY_LIMIT = 1 << 16


class SpooledFile:
    """A :class:`~aiodicom.dimse.DataSetWriter` for a data set bound for a Part 10 file.

    Up to ``memory_limit`` bytes the data set is kept in memory; past it, what arrived so far
    and everything after is written to a file in ``directory`` (with its File Meta Information
    in front): on Linux a file without a name (:mod:`aiodicom.unnamed`), elsewhere one under a
    temporary name (:attr:`path`). Nothing is ever visible under a final name before
    :meth:`commit`; :meth:`discard` (or a failed write) removes the file. A write
    error is kept in :attr:`error` rather than raised, so that the association goes on and the
    C-STORE is answered with a failure.
    """

    def __init__(
        self, directory: Path, header: bytes, fsync: bool = False,
        memory_limit: int = MEMORY_LIMIT, anonymous: bool = False,
        transfer_syntax_uid: str | None = None, spare: SpareFile | None = None,
    ) -> None:
        self.directory = directory
        # Where a file made ahead for it may wait (the sink's): only for a file of this very
        # directory that is to be named.
        self._spare = (
            spare if spare is not None and not anonymous and spare.directory == str(directory)
            else None
        )
        # Anonymous: the file is only where the data set waits (never committed), removed
        # from the directory as soon as it is made, so that nothing can be left behind.
        self._anonymous = anonymous
        #: The temporary file, once there is one and it has a name (``None`` for a file
        #: without a name, which only :meth:`commit` gives one).
        self.path: Path | None = None
        # A file without a name stays open from close() to commit() or discard(): until then
        # its descriptor is the only way to it.
        self._unnamed = False
        self._kept_fd: int | None = None
        self.error: OSError | None = None
        self.committed = False
        self._fsync = fsync
        self._header = header
        self._memory_limit = memory_limit
        self._buffer: bytearray | None = bytearray()
        self._fd: int | None = None
        # What write() was given since the last flush(), to go to the file in one writev: a
        # write costs the kernel less per byte the larger it is (ext4 here: a 524 kB slice
        # written as four 128 KiB writes 202 us, as one 165 us), and it is one call, not four.
        self._unwritten: list[memoryview] = []
        # Bytes allocated to the file made ahead for it (its size until truncated).
        self._allocated = 0
        self._transfer_syntax_uid = transfer_syntax_uid
        #: Bytes of the data set written so far (its File Meta header not counted).
        self.size = 0
        #: Closed without mapping its file (a named one): :meth:`mapped` gives the data set.
        self.deferred = False
        self._view: memoryview | None = None
        self._target: str | Path | None = None
        #: The values of :data:`~aiodicom.fileio.IDENTIFYING_TAGS`, read from the first bytes
        #: while the rest was still arriving (``None``: not known yet). A received data set is
        #: checked and filed by them; read here, that work is off the path between its last
        #: fragment and the C-STORE-RSP the peer waits for.
        self.identifying: dict[int, str] | None = None

    @property
    def header(self) -> bytes:
        """What the file holds before the data set: preamble, prefix, File Meta Information."""
        return self._header

    @property
    def on_disk(self) -> bool:
        """The data set is in a file (else it is held in memory and given by close())."""
        return self.path is not None or self._unnamed

    def write(self, fragment: memoryview) -> None:
        """Keeps ``fragment`` (a view of the receive buffer) until :meth:`flush`, which the
        assembler calls before that buffer is read into again; in memory, it is copied now."""
        self.size += fragment.nbytes
        buffer = self._buffer
        if buffer is not None:
            if len(buffer) + fragment.nbytes <= self._memory_limit:
                buffer += fragment
            else:
                # Checked before copying: the fragment that crosses the limit goes to the
                # file with what came before, in one writev, and is never copied to memory.
                self._spill(buffer, fragment)
            return
        if self._fd is None:
            return  # failed earlier: the rest of the data set is read and dropped
        self._unwritten.append(fragment)

    def flush(self) -> None:
        """Write out the fragments kept since the last call, in one system call."""
        unwritten = self._unwritten
        if not unwritten:
            return
        self._unwritten = []
        if self._fd is None:
            return
        try:
            write_all(self._fd, unwritten)
        except OSError as exc:
            self._fail(exc)

    def _spill(self, buffer: bytearray, fragment: memoryview) -> None:
        self._buffer = None
        if self._transfer_syntax_uid is not None:
            self.identifying = peek_prefix(
                memoryview(buffer) if buffer else fragment, self._transfer_syntax_uid,
                IDENTIFYING_TAGS,
            )
        try:
            self._fd = self._open()
        except OSError as exc:
            self._fail(exc)
            return
        self._unwritten = [memoryview(self._header), memoryview(buffer), fragment]

    def _open(self) -> int:
        directory = os.fspath(self.directory)
        fd, self._allocated = (
            self._spare.take_allocated() if self._spare is not None else (None, 0)
        )
        if fd is None:
            fd = open_unnamed(directory)
        if fd is not None:
            self._unnamed = True
            return fd
        name, fd = open_temporary(directory, "spool", _OPEN_FLAGS)
        if self._anonymous:
            os.unlink(name)
        else:
            self.path = Path(name)
        return fd

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self.discard()

    def close(self) -> bytes | memoryview:
        """The data set: from memory, or mapped from an anonymous file (no copy); ``b""``
        after a failure, and for a named file, which is :attr:`deferred`: its data set is
        mapped only when :meth:`mapped` is asked (a DirectorySink just renames the file, and
        mapping it cost five system calls per instance received, unmapping one more)."""
        buffer = self._buffer
        if buffer is not None:
            self._buffer = None
            return memoryview(buffer).toreadonly()
        self.flush()
        fd = self._fd
        if fd is None:
            return b""
        self._fd = None
        keep = self._unnamed and not self._anonymous  # nothing else leads to it
        try:
            written = len(self._header) + self.size
            if self._allocated > written:  # the guess was larger than this data set
                os.ftruncate(fd, written)
            if self._fsync:
                os.fsync(fd)
            if self._anonymous:  # no name to map it by later
                mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                return memoryview(mapped)[len(self._header) :]
        except OSError as exc:
            keep = False
            self._fail(exc)
            return b""
        finally:
            if keep:
                self._kept_fd = fd
            else:
                os.close(fd)
        self.deferred = True
        return b""

    def mapped(self) -> memoryview:
        """The data set of a :attr:`deferred` file, mapped (once) from where it is: the file
        still open without a name, its temporary name, or the target it was committed to."""
        view = self._view
        if view is None:
            path = self._target if self.committed else self.path
            try:
                if self._kept_fd is not None:
                    mapped = mmap.mmap(self._kept_fd, 0, access=mmap.ACCESS_READ)
                else:
                    if path is None:  # a file without a name, discarded
                        raise FileNotFoundError(errno.ENOENT, "discarded")
                    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                    try:
                        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                    finally:
                        os.close(fd)
            except (OSError, ValueError) as exc:
                where = path if path is not None else "a temporary file"
                raise DicomError(
                    f"the data set was written to {where} as it arrived and cannot be read back "
                    f"from there ({exc}); read the file the sink wrote, if it is still there"
                ) from exc
            view = self._view = memoryview(mapped)[len(self._header) :]
        return view

    def discard(self) -> None:
        self._buffer = None
        self._unwritten = []
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._kept_fd is not None:
            fd, self._kept_fd = self._kept_fd, None
            os.close(fd)  # a file without a name is gone with its last descriptor
        if self.path is not None and not self.committed:
            self.path.unlink(missing_ok=True)

    def commit(self, target: str | Path) -> None:
        """Move the finished file to ``target`` (replacing what is there), atomically.

        A failure leaves the spool as it was: its data set can still be read (:meth:`mapped`)
        and written elsewhere, or discarded."""
        fd = self._kept_fd
        if fd is not None:
            try:
                link_over(fd, os.fspath(target))
            except ProcUnavailable:
                # No /proc to link it by (known only now, once per process): copied instead.
                with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as whole:
                    write_atomic(target, [memoryview(whole)], fsync=self._fsync)
            self._kept_fd = None
            os.close(fd)
        else:
            assert self.path is not None, "only a data set on disk can be committed"
            os.replace(self.path, target)
        self._target = target
        self.committed = True
        if self._fsync:
            fsync_directory(Path(target).parent)


class MemoryFileWriter(MemoryWriter):
    """A :class:`~aiodicom.reassembly.MemoryWriter` whose data set, once past
    :data:`MEMORY_LIMIT` bytes, goes on in a file that lives in memory only (``memfd_create``)
    and is given back as a read-only mapping of it; smaller ones stay in the buffer (a single
    fragment as ``bytes``), as with a MemoryWriter. Where the file cannot be made or written
    (out of memory), the data set goes on in the buffer."""

    __slots__ = ("_fd", "_in_buffer", "_size")

    def __init__(self) -> None:
        super().__init__()
        self._fd: int | None = None
        self._size = 0
        # A memory file failed for this data set: the rest goes on in the buffer, not into a
        # new file that would take all the buffer holds again at every fragment.
        self._in_buffer = False

    def write(self, fragment: memoryview) -> None:
        if self._fd is None and not self._in_buffer:
            held = len(self._buffer) if self._buffer is not None else 0
            if held + fragment.nbytes > MEMORY_LIMIT:
                self._spill()
        if self._fd is None:
            super().write(fragment)
        else:
            self._append(fragment)

    def write_last(self, fragment: memoryview) -> None:
        if self._fd is None and self._buffer is None and fragment.nbytes <= MEMORY_LIMIT:
            super().write_last(fragment)  # the usual small data set, as bytes
        else:
            self.write(fragment)

    def close(self) -> bytes | memoryview:
        fd, self._fd = self._fd, None
        if fd is None:
            return super().close()
        try:
            return memoryview(mmap.mmap(fd, self._size, access=mmap.ACCESS_READ))
        except OSError:
            # No mapping to be had (vm.max_map_count reached): the bytes, read back.
            return _read_back(fd, self._size)
        finally:
            os.close(fd)

    def discard(self) -> None:
        super().discard()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _spill(self) -> None:
        assert _memfd_create is not None, "memory_spool() makes none without memfd_create"
        try:
            self._fd = int(_memfd_create("aiodicom-data-set", _MFD_CLOEXEC))
        except OSError:
            self._in_buffer = True  # out of descriptors or memory: on in the buffer
            return
        self._size = 0
        buffer, self._buffer = self._buffer, None
        if buffer:
            self._append(memoryview(buffer))

    def _append(self, fragment: memoryview) -> None:
        fd = self._fd
        assert fd is not None
        try:
            write_all(fd, [fragment])
        except OSError:
            # Out of memory for the file: what it holds goes back to a buffer, and on there.
            self._fd = None
            self._in_buffer = True
            try:
                self._buffer = bytearray(_read_back(fd, self._size)) + fragment
            finally:
                os.close(fd)
            return
        self._size += fragment.nbytes


def _read_back(fd: int, size: int) -> bytes:
    chunks = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def memory_spool() -> MemoryWriter:
    """A writer for a data set to be kept in memory: a :class:`MemoryFileWriter` where the
    system has memory files (Linux), else a plain :class:`~aiodicom.reassembly.MemoryWriter`."""
    return MemoryWriter() if _memfd_create is None else MemoryFileWriter()


def temporary_spool(directory: str | None, memory_limit: int) -> SpooledFile:
    """A writer for a data set with no file of its own to go to: in memory up to
    ``memory_limit`` bytes, then in an anonymous temporary file of ``directory`` (default: the
    system's temporary directory), mapped when the data set is whole."""
    return SpooledFile(
        Path(directory if directory is not None else tempfile.gettempdir()), b"",
        memory_limit=memory_limit, anonymous=True,
    )
