"""A received data set written to a temporary Part 10 file while its fragments arrive.

When the destination of a C-STORE is known from its command alone (a C-GET into a
:class:`~aiodicom.sinks.DirectorySink`, or a C-MOVE delivery routed by its Move Originator
Message ID), the data set never needs to exist in memory: each fragment goes from the receive
buffer to the file (one copy, by the kernel), and the sink renames the finished file into place.
Memory then stays flat whatever the size of a single object, and no fresh memory is faulted in.
"""

from __future__ import annotations

import mmap
import os
import secrets
from pathlib import Path

from aiodicom.fileio import OPEN_FLAGS, fsync_directory, write_all

__all__ = ["SpooledFile"]

# Read as well as write: the finished file is mapped to give the data set without a copy.
_OPEN_FLAGS = (OPEN_FLAGS & ~os.O_WRONLY) | os.O_RDWR


class SpooledFile:
    """A :class:`~aiodicom.dimse.DataSetWriter` writing a Part 10 file under a temporary name.

    Nothing is ever visible under the final name before :meth:`commit`; :meth:`discard` (or a
    failed write) removes the temporary file. A write error is kept in :attr:`error` rather than
    raised, so that the association goes on and the C-STORE is answered with a failure.
    """

    def __init__(self, directory: Path, header: bytes, fsync: bool = False) -> None:
        self.directory = directory
        self.path = Path(os.path.join(directory, f".spool-{secrets.token_hex(8)}.tmp"))
        self.error: OSError | None = None
        self.committed = False
        self._fsync = fsync
        self._header_length = len(header)
        self._fd: int | None = os.open(self.path, _OPEN_FLAGS, 0o666)
        self.write(memoryview(header))

    def write(self, fragment: memoryview) -> None:
        if self._fd is None:
            return  # failed earlier: the rest of the data set is read and dropped
        try:
            write_all(self._fd, [fragment])
        except OSError as exc:
            self.error = exc
            self.discard()

    def close(self) -> bytes | memoryview:
        """The data set, mapped from the file (no copy); ``b""`` after a failure."""
        fd = self._fd
        if fd is None:
            return b""
        self._fd = None
        try:
            if self._fsync:
                os.fsync(fd)
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            self.error = exc
            self.discard()
            return b""
        finally:
            os.close(fd)
        return memoryview(mapped)[self._header_length :]

    def discard(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if not self.committed:
            self.path.unlink(missing_ok=True)

    def commit(self, target: Path) -> None:
        """Move the finished file to ``target`` (replacing what is there), atomically."""
        os.replace(self.path, target)
        self.committed = True
        if self._fsync:
            fsync_directory(target.parent)
