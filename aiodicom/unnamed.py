"""Files created without a name and given one once complete (Linux's ``O_TMPFILE``).

Writing a received instance atomically takes a temporary file that becomes the final one only
once whole. Created with ``O_TMPFILE``, that file has no name until :func:`link_unnamed` gives it
its final one, which is cheaper at both ends than a named temporary file renamed into place:
creating it adds no directory entry, linking it adds one where a rename removes one and adds
one (a 40 kB file on ext4: 82 us instead of 105). And nothing can be left behind: a failed
write, a cancelled task or a killed process leaves no temporary file, since the kernel frees
an unnamed file with its last descriptor.

Where the system, the file system or a missing ``/proc`` does not allow it, :func:`open_unnamed`
returns ``None`` and the caller writes a named temporary file instead.

A :class:`SpareFile` makes the next such file ahead of need: after a storage SCP has answered
one C-STORE, while the peer prepares the next, so that creating the file is not on the path
between the next data set's last byte and its response (on ext4, 17 us of that path). Given a
size, it also allocates that much disk space to it then: writing into space allocated
beforehand costs the kernel less than allocating as it goes (ext4: a 524 kB slice written in
127 us instead of 166). A DirectorySink asks for the whole blocks of the file the previous
instance became, when the last two were alike in size (a series; ``_next_allocation``).

For a file that will be written whole, in one write (a small data set held in memory), the
space is given by writing zeros into it rather than by ``posix_fallocate``: the write then
only overwrites pages the page cache already holds, where otherwise it allocates each one
(ext4, 40 kB: 2-3 us instead of 9-10, on the path to the response; the zeros cost some 7 us
more than the allocation, after the response).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable

__all__ = [
    "MAX_FILLED", "MAX_PREALLOCATED", "ProcUnavailable", "SpareFile", "link_unnamed",
    "open_unnamed",
]

_O_TMPFILE: int = getattr(os, "O_TMPFILE", 0)  # Linux only
# Readable too: a spool file is mapped to read the data set back.
_FLAGS = os.O_RDWR | _O_TMPFILE | getattr(os, "O_CLOEXEC", 0)

# Errors of a file system (or a kernel before 3.11) without O_TMPFILE: then a named file.
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})

_usable = _O_TMPFILE != 0

#: The most disk space a spare file is given ahead of its data set: an instance larger than
#: this is written without it (the saving is a few percent of its writing), so that a wrong
#: guess never holds much space or costs a long truncation.
MAX_PREALLOCATED = 1 << 28

#: The most space a spare file is given by writing zeros into it (see :meth:`SpareFile.prepare`);
#: more is allocated as for a file written as it arrives. Zeros cost about 0.3 us per kB, after
#: the response but on the event loop.
MAX_FILLED = 1 << 18

_fallocate: Callable[[int, int, int], None] | None = getattr(os, "posix_fallocate", None)

_zeros = b""


def _fill(fd: int, size: int) -> None:
    """Write ``size`` zero bytes at the start of the empty file on ``fd`` (its offset stays 0)."""
    global _zeros
    if len(_zeros) < size:
        _zeros = bytes(size)  # grows to the largest size asked, never past MAX_FILLED
    if os.pwrite(fd, memoryview(_zeros)[:size], 0) != size:
        raise OSError(errno.ENOSPC, "short write filling a file made ahead")


class ProcUnavailable(OSError):
    """``/proc`` cannot name the unnamed file (not mounted here): it cannot be linked, and
    :func:`open_unnamed` gives ``None`` from now on."""


def open_unnamed(directory: str) -> int | None:
    """A descriptor on a new file in ``directory`` that has no name yet; ``None`` where that is
    not possible (the caller then creates a named temporary file)."""
    if not _usable:
        return None
    try:
        return os.open(directory or os.curdir, _FLAGS, 0o666)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return None
        raise


def link_unnamed(fd: int, target: str) -> None:
    """Give the file open on ``fd`` (from :func:`open_unnamed`) the name ``target``, which must
    be on the same file system. Raises :class:`FileExistsError` if ``target`` exists (the
    caller links elsewhere and renames over it), :class:`ProcUnavailable` without ``/proc``."""
    global _usable
    source = f"/proc/self/fd/{fd}"
    try:
        # A dir_fd makes os.link call linkat() with AT_SYMLINK_FOLLOW, which links the file
        # /proc names (plain link() would try to link the symbolic link itself, EXDEV); the
        # source path is absolute, so the descriptor given as its directory is never used.
        os.link(source, target, src_dir_fd=fd, follow_symlinks=True)
    except FileNotFoundError:
        # The target's directory held the file a moment ago: it is /proc that is missing.
        if os.path.exists(source):
            raise
        _usable = False
        raise ProcUnavailable(errno.ENOENT, "no /proc to link an unnamed file by") from None


class SpareFile:
    """At most one unnamed file of ``directory``, made ahead of the write that will use it.

    :meth:`prepare` has it made once the running task yields to the event loop (a receiver
    calls it while answering a C-STORE: the file is made after the response went out). Called
    with no event loop running, and before the first :meth:`prepare`, :meth:`take` has nothing
    and the writer makes its own. An unused spare
    costs one descriptor and nothing on disk: it has no name, and :meth:`release` (or losing
    the last reference) closes it.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fd: int | None = None
        self._making: asyncio.Handle | None = None
        # Bytes the next file is to be given when made (0: none), whether they are given as
        # zeros written (a file written whole), and the bytes the spare has.
        self._size = 0
        self._fill = False
        self._allocated = 0

    def take(self, size: int = 0) -> int | None:
        """The file made ahead, for a data set written whole in one write of ``size`` bytes
        (the caller links or closes it), if that write covers all the space allocated to it;
        ``None`` otherwise: the spare is kept for a data set its space fits, which then needs
        no truncation (freeing blocks past the end cost more than allocating them saved)."""
        if self._allocated > size:
            return None
        fd, self._fd = self._fd, None
        self._allocated = 0
        return fd

    def take_allocated(self) -> tuple[int | None, int]:
        """The file made ahead and the bytes allocated to it (its size: the caller truncates
        it if it writes less), or ``(None, 0)``: for a data set written as it arrives."""
        fd, self._fd = self._fd, None
        allocated, self._allocated = self._allocated, 0
        return fd, allocated

    def prepare(self, size: int = 0, fill: bool = False) -> None:
        """Have the next file made once the running task yields to the event loop, with
        ``size`` bytes of disk space allocated to it (0: none). ``fill``: the file will be
        written whole, in one write; up to :data:`MAX_FILLED` bytes, its space is then given as
        zeros written into it, which that write overwrites in the page cache."""
        self._size = size if size <= MAX_PREALLOCATED else 0
        self._fill = fill and size <= MAX_FILLED
        if self._fd is not None or self._making is not None or not _usable:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to make it later: the writer makes its own when it writes
        self._making = loop.call_soon(self._make)

    def _make(self) -> None:
        self._making = None
        if self._fd is not None:
            return
        try:
            fd = open_unnamed(self.directory)
        except OSError:
            return  # the writer makes its own, and meets the error where it is reported
        if fd is None:
            return
        size = self._size
        if size and (self._fill or _fallocate is not None):
            try:
                if self._fill:
                    _fill(fd, size)
                elif _fallocate is not None:
                    _fallocate(fd, 0, size)
            except OSError:
                # Full, or a file system without it: a fresh file, as without a guess (what
                # failed may have left blocks allocated past the end).
                os.close(fd)
                with contextlib.suppress(OSError):
                    self._fd = open_unnamed(self.directory)
                return
            self._allocated = size
        self._fd = fd

    def release(self) -> None:
        """Close the spare, and make no other until the next :meth:`prepare`."""
        if self._making is not None:
            self._making.cancel()
            self._making = None
        self._allocated = 0
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        # os.close bound at definition: at interpreter exit the module's globals may be gone.
        fd = self._fd
        if fd is not None:
            _close(fd)
