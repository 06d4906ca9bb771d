"""The file made ahead for the next data set gets the whole blocks of the last one allocated
when the last two were alike (aiodicom.unnamed.SpareFile, DirectorySink._next_allocation): the
files written are exactly the data sets received, whatever the guess was, and a data set held
in memory never takes a file with space allocated to it."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import anyio.lowlevel
import pytest

import aiodicom.unnamed
from aiodicom.instance import Instance, read_part10
from aiodicom.sinks import DirectorySink

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="O_TMPFILE is Linux's"
)

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY, SERIES = "1.2.3", "1.2.3.4"


def data_set(pixels: int) -> bytes:
    def ui(element: int, value: str) -> bytes:
        raw = value.encode() + (b"\0" if len(value) % 2 else b"")
        return ((0x0020).to_bytes(2, "little") + element.to_bytes(2, "little") + b"UI"
                + len(raw).to_bytes(2, "little") + raw)

    return ui(0x000D, STUDY) + ui(0x000E, SERIES) + bytes(range(256)) * (pixels // 256)


async def receive(sink: DirectorySink, uid: str, data: bytes) -> Path:
    """``data`` through the sink's writer in 16 KiB reads, as a storage SCP hands it over,
    then stored; the next file is made once the receiver yields."""
    spool = sink.open_spool(CT, uid, EXPLICIT_LE, "PACS")
    assert spool is not None
    view = memoryview(data)
    for start in range(0, len(data), 16384):
        spool.write(view[start : start + 16384])
        spool.flush()
    await sink(Instance(CT, uid, EXPLICIT_LE, spool.close(), "PACS", spool=spool))
    await anyio.lowlevel.checkpoint()  # the receiver waits for the next request
    return sink.paths[uid]


def blocks(path: Path) -> int:
    """The whole 4 KiB blocks of the file at ``path``, in bytes: what the next file gets."""
    size = path.stat().st_size
    return size - size % 4096


def spare_size(sink: DirectorySink) -> int | None:
    fd = sink._spare._fd
    return None if fd is None else os.fstat(fd).st_size


async def test_the_next_file_has_the_size_of_the_last_two_when_they_were_alike(
    tmp_path: Path,
) -> None:
    sink = DirectorySink(tmp_path)
    first = await receive(sink, "1.1", data_set(200_000))
    assert spare_size(sink) == 0  # one size seen: no guess
    await receive(sink, "1.2", data_set(200_000))
    assert spare_size(sink) == blocks(first)  # a series: allocated while the peer prepares
    # The same size, smaller (truncated), larger (grown): each file exact.
    for uid, pixels in (("1.3", 200_000), ("1.4", 150_000), ("1.5", 260_000)):
        path = await receive(sink, uid, data_set(pixels))
        assert bytes(read_part10(path).data) == data_set(pixels)
        assert path.stat().st_size == first.stat().st_size - len(data_set(200_000)) + len(
            data_set(pixels))
    assert spare_size(sink) == 0  # the last two differed
    sink.release_spare()


async def test_sizes_that_differ_get_nothing_allocated(tmp_path: Path) -> None:
    """Compressed images differ in size: a guess too large would be truncated before the
    response (100-126 us on ext4 here), so none is made until two in a row are alike."""
    sink = DirectorySink(tmp_path)
    for uid, pixels in (("1.1", 100_000), ("1.2", 120_000), ("1.3", 90_000)):
        await receive(sink, uid, data_set(pixels))
        assert spare_size(sink) == 0
    again = await receive(sink, "1.4", data_set(90_000))
    assert spare_size(sink) == blocks(again)
    sink.release_spare()


async def test_a_series_differing_by_a_few_bytes_is_allocated_its_whole_blocks(
    tmp_path: Path,
) -> None:
    """UIDs of different lengths make a series' files differ by a few bytes: still alike, and
    the next file gets only the whole blocks, which a few bytes shorter still fills (nothing
    to truncate)."""
    sink = DirectorySink(tmp_path)
    await receive(sink, "1.1", data_set(100_000))
    longer = await receive(sink, "1.22", data_set(100_000) + bytes(6))
    assert longer.stat().st_size % 4096  # a partial last block, left out
    assert spare_size(sink) == blocks(longer)
    shorter = await receive(sink, "1.3", data_set(100_000))
    assert bytes(read_part10(shorter).data) == data_set(100_000)
    sink.release_spare()


async def test_a_small_data_set_leaves_the_allocated_file_for_the_next_large_one(
    tmp_path: Path,
) -> None:
    sink = DirectorySink(tmp_path, memory_limit=4096)
    await receive(sink, "1.0", data_set(100_000))
    large = await receive(sink, "1.1", data_set(100_000))
    allocated = spare_size(sink)
    assert allocated == blocks(large)
    small = await receive(sink, "1.2", data_set(1024))  # in memory, written whole
    assert bytes(read_part10(small).data) == data_set(1024)
    assert spare_size(sink) == allocated  # not taken, not truncated
    again = await receive(sink, "1.3", data_set(100_000))
    assert again.stat().st_size == large.stat().st_size
    assert spare_size(sink) == blocks(large)
    sink.release_spare()


async def test_after_a_small_one_the_next_file_has_nothing_allocated(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path, memory_limit=4096)
    await receive(sink, "1.1", data_set(1024))
    assert spare_size(sink) == 0
    sink.release_spare()


@pytest.mark.parametrize(
    ("pixels", "refusing"),
    [(100_000, "_fallocate"), (20_000, "_fill")],
    ids=["allocated, written as it arrives", "zeros, written whole"],
)
async def test_a_file_system_refusing_the_space_gets_a_plain_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: int, refusing: str
) -> None:
    """A large data set's space is allocated, a small one's written as zeros (it is written
    whole); a full disk at either leaves a fresh empty file for the next one, written exactly."""
    refused: list[int] = []

    def full(fd: int, *sizes: int) -> None:
        os.pwrite(fd, bytes(sizes[-1] // 2), 0)  # what a disk filling up midway may leave
        refused.append(sizes[-1])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(aiodicom.unnamed, refusing, full)
    sink = DirectorySink(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    first = await receive(sink, "1.0", data_set(pixels))
    await receive(sink, "1.1", data_set(pixels))
    assert refused and spare_size(sink) == 0  # made again, without the space
    path = await receive(sink, "1.2", data_set(pixels))
    assert bytes(read_part10(path).data) == data_set(pixels)
    assert path.stat().st_size == first.stat().st_size
    sink.release_spare()
    assert len(os.listdir("/proc/self/fd")) == before  # the refused file was closed


async def test_a_very_large_instance_is_not_guessed_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aiodicom.unnamed, "MAX_PREALLOCATED", 50_000)
    sink = DirectorySink(tmp_path)
    await receive(sink, "1.0", data_set(100_000))
    await receive(sink, "1.1", data_set(100_000))
    assert spare_size(sink) == 0
    sink.release_spare()
