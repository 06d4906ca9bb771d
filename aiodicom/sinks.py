"""Where retrieved instances go: any async callable taking an :class:`Instance` is a sink."""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar, cast

from aiodicom.errors import DicomError
from aiodicom.fileio import PREAMBLE, encode_file_meta, write_atomic, write_part10_atomic
from aiodicom.instance import Instance, read_part10
from aiodicom.spool import MEMORY_LIMIT, SpooledFile
from aiodicom.unnamed import SpareFile

log = logging.getLogger(__name__)

_K = TypeVar("_K")
_V = TypeVar("_V")

__all__ = [
    "DirectorySink",
    "InvalidUIDError",
    "MemorySink",
    "Sink",
    "UnsafePathError",
    "as_sink",
    "default_layout",
]


class UnsafePathError(DicomError, ValueError):
    """A file name derived from received data would land outside the sink's directory."""


class InvalidUIDError(UnsafePathError):
    """A UID meant for a path component is missing, too long, or not digits and dots."""


class Sink(Protocol):
    """Receives each retrieved instance; raising tells the sender the store failed.

    Any ``async def f(instance)`` is one; typed as returning ``Awaitable[None]`` so that
    callables annotated ``Callable[[Instance], Awaitable[None]]`` are accepted too.
    """

    def __call__(self, instance: Instance, /) -> Awaitable[None]: ...


class MemorySink:
    """Keeps every instance in memory, keyed by SOP Instance UID.

    A second instance with the same SOP Instance UID replaces the first; ``bytes_received``
    counts both, since both arrived.
    """

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.bytes_received = 0

    async def __call__(self, instance: Instance) -> None:
        self.instances[instance.sop_instance_uid] = instance
        self.bytes_received += instance.size

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances.values())


# Components of digits separated by single dots: this rules out "", ".", ".." and separators.
_UID_PATTERN = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def _path_uid(name: str, value: str | None) -> str:
    if value is None:
        raise InvalidUIDError(f"the data set has no {name}")
    if len(value) > 64 or not _UID_PATTERN.fullmatch(value):
        raise InvalidUIDError(f"{name} {value!r} is not a UID usable as a file name")
    return value


def default_layout(instance: Instance) -> Path:
    """``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, each UID validated."""
    study, series = instance.peek_uids()
    return Path(
        _path_uid("Study Instance UID", study),
        _path_uid("Series Instance UID", series),
        _path_uid("SOP Instance UID", instance.sop_instance_uid) + ".dcm",
    )


class DirectorySink:
    """Writes one Part 10 file per instance under ``path``, atomically.

    ``layout`` maps an instance to a path relative to the directory (default:
    :func:`default_layout`); whatever it returns must resolve inside the directory, symbolic
    links included, or :class:`UnsafePathError` is raised before anything is created. An
    instance received again replaces its file. ``paths`` maps each SOP Instance UID to the
    file written for it.

    Iterating it (or :meth:`instance`) reads the files back as :class:`Instance` objects, so
    ``Series(sink)`` works as with a :class:`MemorySink`, loading only when asked.

    When it receives from a retrieval (or as the client's storage SCP), a data set larger than
    ``memory_limit`` bytes is written to its file while it arrives instead of being held in
    memory whole: memory stays bounded whatever the size of an object. Smaller ones are written
    whole once complete: one write instead of one per read. 0 writes every data set as it
    arrives, which shortens the peer's wait for each response to the last read's write, but
    did not make storescu's 40 kB C-STOREs faster and cost 8 % more CPU (benchmarks/RESULTS.md,
    run 17).

    ``max_remembered``: ``paths`` keeps only this many most recent instances (``None``: all of
    them, what a retrieval's results read). A long-running storage SCP must bound it: the
    client's acceptor sets it to :attr:`Limits.max_remembered_paths <aiodicom.Limits>` when
    unset. :attr:`written` counts every instance written all the same.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        layout: Callable[[Instance], str | os.PathLike[str]] | None = None,
        fsync: bool = False,
        memory_limit: int = MEMORY_LIMIT,
        max_remembered: int | None = None,
    ) -> None:
        self.directory = Path(path)
        self.layout = layout if layout is not None else default_layout
        self.fsync = fsync
        self.memory_limit = memory_limit
        self.max_remembered = max_remembered
        # SOP Instance UID -> its file, as a Path, or as the string it was written by until
        # someone reads paths (see there); _unconverted lists the UIDs of those strings.
        self._paths: dict[str, Path | str] = {}
        self._unconverted: list[str] = []
        self.written = 0
        self._root = self.directory.resolve()
        self._root_created = False
        # The next file, made after a response went out rather than before the next one.
        self._spare = SpareFile(str(self._root))
        # Of the last file written as it arrived, and of the last written whole: a series
        # of either kind keeps its allocation across an odd one of the other (_next_allocation).
        self._last_sizes = [0, 0]
        # Caches of checked directories: bounded, as a long-running SCP meets ever new series.
        self._directories: dict[Path, Path] = {}
        # Each series' directory, as a string ending in a separator.
        self._series_directories: dict[tuple[str | None, str | None], str] = {}

    def _target(self, instance: Instance) -> str | Path:
        """Where ``instance`` goes: a string for the default layout (see :attr:`paths`)."""
        if self.layout is default_layout:
            return self._default_target(instance)
        return self._checked_target(Path(self.layout(instance)))

    def _default_target(self, instance: Instance) -> str:
        # The default layout without pathlib per instance: parsing a relative Path, and joining
        # a name to the directory's, cost more than writing a small file's data (its code cold
        # once a data set has gone through the CPU's caches). The same checks, through the
        # same cache, once per series; the file's path is joined as a string.
        study, series = instance.peek_uids()
        directory = self._series_directories.get((study, series))
        name = _path_uid("SOP Instance UID", instance.sop_instance_uid) + ".dcm"
        if directory is None:
            relative = Path(
                _path_uid("Study Instance UID", study), _path_uid("Series Instance UID", series)
            )
            parent = self._checked_target(relative / name).parent
            directory = os.path.join(str(parent), "")
            _remember(self._series_directories, (study, series), directory, _CACHED_DIRECTORIES)
        return directory + name

    @property
    def paths(self) -> dict[str, Path]:
        """SOP Instance UID -> the file written for it (bounded by ``max_remembered``).

        Each file's Path is made here, when this is read, rather than on the way to the
        response that says the instance was stored (where pathlib cost a tenth of a small
        C-STORE's Python); or for many files at once, so that the strings waiting are few."""
        if self._unconverted:
            self._convert_paths()
        return cast("dict[str, Path]", self._paths)

    def _convert_paths(self) -> None:
        table = self._paths
        for uid in self._unconverted:
            value = table.get(uid)  # gone if max_remembered dropped it meanwhile
            if type(value) is str:
                table[uid] = Path(value)
        self._unconverted.clear()

    def _checked_target(self, relative: Path) -> Path:
        name = relative.name
        if relative.is_absolute() or name in ("", ".", ".."):
            raise UnsafePathError(f"{str(relative)!r} does not name a file inside {self._root}")
        # Resolving (an lstat per component) and mkdir cost more than writing a small file:
        # do them once per directory, since a series shares one.
        directory = self._directories.get(relative.parent)
        if directory is None:
            directory = (self._root / relative.parent).resolve()
            if directory != self._root and not directory.is_relative_to(self._root):
                raise UnsafePathError(
                    f"{str(relative)!r} does not name a file inside {self._root}"
                )
            # Blocking on purpose (no threads in this library): it is quick and done once.
            directory.mkdir(parents=True, exist_ok=True)
            _remember(self._directories, relative.parent, directory, _CACHED_DIRECTORIES)
        # The file is renamed into place, which replaces a symbolic link there rather than
        # writing through it: the final component needs no resolving.
        return directory / name

    async def __call__(self, instance: Instance) -> None:
        target = self._target(instance)
        spool = instance.spool
        # 'is': a spool this sink made (open_spool passes its _root), whose header was built
        # for this very instance when its command arrived.
        if spool is not None and spool.directory is self._root and not spool.committed:
            whole = not spool.on_disk
            if not whole:
                # Written to our directory while it arrived: only naming it is left.
                next_size = self._next_allocation(len(spool.header) + spool.size, whole)
                try:
                    spool.commit(target)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:  # a layout reaching onto another file system
                        raise
                    write_part10_atomic(target, instance, fsync=self.fsync)
                    spool.discard()
            else:
                # Held in memory (a small data set): its File Meta header is already encoded.
                data = memoryview(instance.data).cast("B")
                size = len(spool.header) + data.nbytes
                next_size = self._next_allocation(size, whole)
                write_atomic(
                    target, [memoryview(spool.header), data], fsync=self.fsync,
                    unnamed=self._spare.take(size),
                )
            # Received here: more will likely follow, of the same kind (a series).
            self._spare.prepare(next_size, fill=whole)
        else:
            # Blocking calls on purpose (no threads in this library): page-cache writes are quick.
            write_part10_atomic(target, instance, fsync=self.fsync)
        self.written += 1
        uid = instance.sop_instance_uid
        table = self._paths
        if self.max_remembered is None:
            table[uid] = target
        else:
            table.pop(uid, None)  # most recent last
            _remember(table, uid, target, self.max_remembered)
        if type(target) is str:
            unconverted = self._unconverted
            unconverted.append(uid)
            waiting = len(unconverted)
            if waiting == _CONVERT_BATCH:
                self._convert_later()
            elif waiting >= 2 * _CONVERT_BATCH:
                self._convert_paths()  # a caller that never yields: the bound holds anyway

    def _convert_later(self) -> None:
        """Make the waiting paths Paths once the running task yields, after the response has
        gone out: done before it, a batch cost the C-STORE it fell on some 200 us."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another event loop (trio): convert now
            self._convert_paths()
            return
        loop.call_soon(self._convert_paths)

    def _next_allocation(self, size: int, whole: bool) -> int:
        """The disk space to give the next file ahead (0: none), after one of ``size`` bytes.

        Writing into space allocated ahead costs ext4 less (a 525 kB slice 108 us instead of
        191, 40 kB 16 us instead of 22), but space allocated past the end of a data set must be
        truncated before the response, and freeing whole blocks so cost 100-126 us here, more
        than the allocation saved. So: only after two files within a block of each other (a
        series, whose sizes differ by a few bytes of UIDs; compressed images differ by more),
        and only the whole blocks of the last one, which the next one of the series fills.
        Files written whole (small) and as they arrive (large) are followed apart: a small
        object among a series of large ones leaves the large ones' allocation alone."""
        sizes = self._last_sizes
        previous, sizes[whole] = sizes[whole], size
        if not previous or abs(size - previous) >= _BLOCK:
            return 0
        return size - size % _BLOCK

    def release_spare(self) -> None:
        """Close the file made ahead for the next instance received (on Linux, an unnamed file:
        nothing on disk). A retrieval calls it when it ends, so that no descriptor outlives it;
        the next instance received has one made again."""
        self._spare.release()

    def open_spool(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
        source_ae_title: str | None,
    ) -> SpooledFile | None:
        """A writer for a data set about to arrive: kept in memory while small, written to a
        temporary file in this directory as it comes once large, so that no object of any size
        is ever held whole; ``None`` if the directory cannot be made (the data set is then
        received in memory and written by :meth:`__call__` as usual)."""
        try:
            header = PREAMBLE + encode_file_meta(
                sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
                transfer_syntax_uid=transfer_syntax_uid, source_ae_title=source_ae_title,
            )
            if not self._root_created:
                self._root.mkdir(parents=True, exist_ok=True)
                self._root_created = True
            return SpooledFile(
                self._root, header, fsync=self.fsync, memory_limit=self.memory_limit,
                transfer_syntax_uid=transfer_syntax_uid, spare=self._spare,
            )
        except (OSError, DicomError) as exc:
            log.debug("receiving %s in memory: no spool file: %s", sop_instance_uid, exc)
            return None

    def instance(self, sop_instance_uid: str) -> Instance:
        """The instance written for ``sop_instance_uid``, read back from its file."""
        return read_part10(self.paths[sop_instance_uid])

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Instance]:
        return (read_part10(path) for path in list(self.paths.values()))


_BLOCK = 4096
"""The file system block _next_allocation rounds to (ext4's, and most others'; on one with
larger blocks the rounding is only less exact)."""

_CACHED_DIRECTORIES = 4096
"""Checked directories a DirectorySink keeps at most (each saves a resolve and a mkdir)."""

_CONVERT_BATCH = 64
"""Paths a DirectorySink keeps as strings before it makes them Paths, once the running task
yields (see paths); twice as many at most, for a caller that never yields."""


def _remember(table: dict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """Add to an insertion-ordered table, dropping the oldest entries past ``limit``."""
    table[key] = value
    while len(table) > limit:
        del table[next(iter(table))]


def as_sink(obj: object) -> Sink:
    """Return ``obj`` as a :class:`Sink`, or raise :class:`TypeError` if it cannot be one.

    Accepts :class:`MemorySink`, :class:`DirectorySink` and any async callable (a coroutine
    function, or an object whose ``__call__`` is one). A plain function is refused here rather
    than failing on the first instance received.
    """
    if isinstance(obj, (MemorySink, DirectorySink)):
        return obj
    # The type's __call__, not the object's: a class whose instances are sinks is not one.
    if inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(type(obj), "__call__", None)  # noqa: B004 - the method itself is wanted
    ):
        return cast(Sink, obj)
    if isinstance(obj, (str, os.PathLike)):
        raise TypeError(f"{obj!r} is a path, not a sink: pass DirectorySink({obj!r})")
    raise TypeError(f"{obj!r} is not a sink: expected an async callable taking an Instance")
