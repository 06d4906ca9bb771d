"""Data sets written to disk while they arrive: SpooledFile, DirectorySink.open_spool."""

from __future__ import annotations

import asyncio
import errno
import os
import sys
from pathlib import Path

import anyio.lowlevel
import pytest

import aiodicom.fileio
import aiodicom.spool
import aiodicom.unnamed
from aiodicom.dimse import DimseMessage
from aiodicom.errors import DicomError
from aiodicom.fileio import PREAMBLE, split_part10
from aiodicom.instance import Instance, read_part10
from aiodicom.services.storage_scp import SpoolError, instance_from_request, release_spool
from aiodicom.sinks import DirectorySink, UnsafePathError
from aiodicom.spool import SpooledFile

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


def data_set() -> bytes:
    # (0020,000D) and (0020,000E) in explicit VR little endian, then some "pixel" bytes.
    def ui(element: int, value: str) -> bytes:
        raw = value.encode() + (b"\0" if len(value) % 2 else b"")
        return (0x0020).to_bytes(2, "little") + element.to_bytes(2, "little") + b"UI" + len(
            raw).to_bytes(2, "little") + raw

    return ui(0x000D, STUDY) + ui(0x000E, SERIES) + bytes(range(256)) * 64


def spooled(sink: DirectorySink, data: bytes, pieces: int = 4) -> SpooledFile:
    """``data`` through the sink's writer, fragment by fragment (to disk past 1 KiB)."""
    sink.memory_limit = 1024
    spool = sink.open_spool(CT, SOP, EXPLICIT_LE, "PACS")
    assert spool is not None
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        spool.write(memoryview(data)[start : start + step])
        spool.flush()  # the end of a read, as the assembler says it
    return spool


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and p.name.startswith(".")]


@pytest.fixture
def named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spool files under a temporary name, as where there is no O_TMPFILE (not Linux, a file
    system without it, no /proc): the tests using it look at that name."""
    monkeypatch.setattr(aiodicom.unnamed, "_usable", False)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


unnamed_files = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="O_TMPFILE is Linux's"
)


def test_spooled_file_holds_a_part10_file_until_committed(tmp_path: Path, named: None) -> None:
    sink = DirectorySink(tmp_path / "out")
    data = data_set()
    spool = spooled(sink, data)
    assert spool.on_disk and spool.path is not None
    assert spool.path.parent == (tmp_path / "out").resolve()
    assert spool.close() == b"" and spool.deferred  # the data set stays in the file
    assert bytes(spool.mapped()) == data  # mapped from it when asked
    assert spool.size == len(data)
    on_disk = spool.path.read_bytes()
    assert on_disk.startswith(PREAMBLE)
    meta, body = split_part10(on_disk)
    assert bytes(body) == data
    assert meta == {
        "sop_class_uid": CT, "sop_instance_uid": SOP, "transfer_syntax_uid": EXPLICIT_LE,
        "source_ae_title": "PACS",
    }


async def test_directory_sink_renames_its_spool_into_place(tmp_path: Path, named: None) -> None:
    sink = DirectorySink(tmp_path)
    data = data_set()
    spool = spooled(sink, data)
    instance = Instance(CT, SOP, EXPLICIT_LE, spool.close(), "PACS", spool=spool)
    await sink(instance)
    target = tmp_path / STUDY / SERIES / f"{SOP}.dcm"
    assert sink.paths[SOP] == target and spool.committed
    assert spool.path is not None and not spool.path.exists()
    assert leftovers(tmp_path) == []
    back = read_part10(target)
    assert bytes(back.data) == data and back.source_ae_title == "PACS"
    assert back.sop_instance_uid == SOP and back.transfer_syntax_uid == EXPLICIT_LE


async def test_another_sinks_spool_is_written_not_stolen(tmp_path: Path, named: None) -> None:
    """A spool belongs to the directory it was made in; another sink writes its own copy."""
    first, second = DirectorySink(tmp_path / "a"), DirectorySink(tmp_path / "b")
    spool = spooled(first, data_set())
    instance = Instance(CT, SOP, EXPLICIT_LE, spool.close(), "PACS", spool=spool)
    await second(instance)
    assert (tmp_path / "b" / STUDY / SERIES / f"{SOP}.dcm").exists()
    assert spool.path is not None and spool.path.exists() and not spool.committed
    release_spool(DimseMessage(1, {}, instance.data, writer=spool))
    assert not spool.path.exists()


async def test_refused_instance_leaves_no_temporary_file(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path, layout=lambda _instance: "../escape.dcm")
    spool = spooled(sink, data_set())
    message = DimseMessage(
        1, {"AffectedSOPClassUID": CT, "AffectedSOPInstanceUID": SOP}, spool.close(),
        writer=spool,
    )
    instance = instance_from_request(message, EXPLICIT_LE, "PACS")
    assert instance.spool is spool
    with pytest.raises(UnsafePathError):
        await sink(instance)
    release_spool(message)  # what the C-STORE handlers do after every request
    assert leftovers(tmp_path) == [] and list(tmp_path.rglob("*")) == []


def test_discard_before_the_end_removes_the_file(tmp_path: Path, named: None) -> None:
    """An association that ends mid-data set: the assembler discards its writer."""
    sink = DirectorySink(tmp_path)
    spool = spooled(sink, data_set()[:2000], pieces=1)
    assert spool.path is not None and spool.path.exists()
    spool.discard()
    spool.discard()  # idempotent
    assert not spool.path.exists() and leftovers(tmp_path) == []


def test_write_error_is_kept_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: None
) -> None:
    sink = DirectorySink(tmp_path, memory_limit=16)
    spool = sink.open_spool(CT, SOP, EXPLICIT_LE, None)
    assert spool is not None

    def full(fd: int, chunks: list[memoryview]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(aiodicom.spool, "write_all", full)
    spool.write(memoryview(b"x" * 10))
    spool.write(memoryview(b"y" * 10))  # past the limit: to disk, which is full
    spool.write(memoryview(b"z" * 10))
    spool.flush()  # written now, once the read is handled: no exception, the association goes on
    assert isinstance(spool.error, OSError) and spool.error.errno == errno.ENOSPC
    assert spool.close() == b""
    assert spool.path is not None and not spool.path.exists()
    message = DimseMessage(
        1, {"AffectedSOPClassUID": CT, "AffectedSOPInstanceUID": SOP}, b"", writer=spool
    )
    with pytest.raises(SpoolError, match="No space left"):
        instance_from_request(message, EXPLICIT_LE, "PACS")


def test_open_spool_falls_back_to_memory_when_it_cannot(tmp_path: Path) -> None:
    """UIDs that cannot go into File Meta, or a directory that cannot be made: ``None``, and
    the data set is received in memory as before."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    assert DirectorySink(blocker / "sub").open_spool(CT, SOP, EXPLICIT_LE, None) is None
    assert DirectorySink(tmp_path).open_spool(CT, "é" * 3, EXPLICIT_LE, None) is None
    assert leftovers(tmp_path) == []


async def test_a_sink_without_a_memory_limit_writes_even_a_small_data_set_as_it_arrives(
    tmp_path: Path,
) -> None:
    """``memory_limit=0``: nothing is held back, each read's fragments go to the file at once;
    nothing appears under a name before the sink names the file, and the UIDs that file it are
    read from the first bytes."""
    sink = DirectorySink(tmp_path, memory_limit=0)
    spool = sink.open_spool(CT, SOP, EXPLICIT_LE, "PACS")
    assert spool is not None
    data = identified_data_set()
    for start in range(0, len(data), 4096):
        spool.write(memoryview(data)[start : start + 4096])
        spool.flush()  # the end of a read
        assert spool.on_disk
    assert [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")] == []
    assert spool.identifying is not None
    assert spool.close() == b"" and spool.deferred
    instance = Instance(CT, SOP, EXPLICIT_LE, b"", "PACS", spool=spool)
    assert instance.peek_uids() == (STUDY, SERIES)
    await sink(instance)
    assert bytes(read_part10(sink.paths[SOP]).data) == data
    assert leftovers(tmp_path) == []
    release_spool(DimseMessage(1, {}, b"", writer=spool))  # committed: nothing to remove


async def test_small_data_sets_stay_in_memory_until_the_sink_writes_them(tmp_path: Path) -> None:
    """Below the limit no file is made until the sink writes the data set whole (a file while
    it arrives costs more than it saves)."""
    sink = DirectorySink(tmp_path)  # default limit: 64 KiB
    spool = sink.open_spool(CT, SOP, EXPLICIT_LE, "PACS")
    assert spool is not None
    data = data_set()
    for start in range(0, len(data), 4096):
        spool.write(memoryview(data)[start : start + 4096])
    assert not spool.on_disk and list(tmp_path.rglob("*")) == []
    view = spool.close()
    assert bytes(view) == data and memoryview(view).readonly
    await sink(Instance(CT, SOP, EXPLICIT_LE, view, "PACS", spool=spool))
    assert bytes(read_part10(sink.paths[SOP]).data) == data
    assert leftovers(tmp_path) == []
    release_spool(DimseMessage(1, {}, view, writer=spool))  # nothing on disk to remove: fine


def test_the_limit_is_where_the_data_set_goes_to_disk(tmp_path: Path, named: None) -> None:
    sink = DirectorySink(tmp_path, memory_limit=100)
    spool = sink.open_spool(CT, SOP, EXPLICIT_LE, None)
    assert spool is not None
    spool.write(memoryview(bytes(100)))
    assert not spool.on_disk  # exactly the limit is still memory
    spool.write(memoryview(bytes(1)))
    assert spool.on_disk and spool.path is not None
    spool.close()
    assert bytes(spool.mapped()) == bytes(101)
    assert split_part10(spool.path.read_bytes())[1] == bytes(101)
    spool.discard()



def identified_data_set() -> bytes:
    def ui(group: int, element: int, value: str) -> bytes:
        raw = value.encode() + (b"\0" if len(value) % 2 else b"")
        return (group.to_bytes(2, "little") + element.to_bytes(2, "little") + b"UI"
                + len(raw).to_bytes(2, "little") + raw)

    return (ui(0x0008, 0x0016, CT) + ui(0x0008, 0x0018, SOP) + ui(0x0020, 0x000D, STUDY)
            + ui(0x0020, 0x000E, SERIES) + bytes(range(256)) * 64)


def test_the_identifying_uids_are_read_before_the_data_set_ends(tmp_path: Path) -> None:
    # Read from what goes to disk first, so that checking and filing the instance needs no
    # scan of the mapped file between its last fragment and the C-STORE-RSP.
    sink = DirectorySink(tmp_path / "out")
    sink.memory_limit = 1024
    data = identified_data_set()
    spool = sink.open_spool(CT, SOP, EXPLICIT_LE, "PACS")
    assert spool is not None
    spool.write(memoryview(data)[:2048])  # past the limit: on disk, the rest still to come
    assert spool.on_disk
    assert spool.identifying == {
        0x00080016: CT, 0x00080018: SOP, 0x0020000D: STUDY, 0x0020000E: SERIES
    }
    spool.write(memoryview(data)[2048:])
    instance = Instance(CT, SOP, EXPLICIT_LE, spool.close(), spool=spool)
    assert instance.peek_uids() == (STUDY, SERIES)
    assert instance.peek_sop_uids() == (CT, SOP)
    # A data set without all four (here no SOP UIDs) is read whole, once it is whole.
    other = sink.open_spool(CT, SOP, EXPLICIT_LE, "PACS")
    assert other is not None
    other.write(memoryview(data_set())[:2048])
    assert other.on_disk and other.identifying is None
    other.write(memoryview(data_set())[2048:])
    assert Instance(CT, SOP, EXPLICIT_LE, other.close(), spool=other).peek_uids() == (
        STUDY, SERIES
    )
    other.discard()
    spool.discard()


def test_by_default_a_ct_slice_goes_to_disk_from_its_first_large_fragment(
    tmp_path: Path,
) -> None:
    """A DirectorySink's default keeps only small data sets in memory: a fragment of 128 KiB
    (a CT slice from a peer using large PDUs) starts the file at once, with no large buffer
    first; a 40 kB object in one fragment stays in memory and is written whole."""
    sink = DirectorySink(tmp_path)
    slice_spool = sink.open_spool(CT, SOP, EXPLICIT_LE, "PACS")
    assert slice_spool is not None
    first = data_set() + bytes(128 * 1024 - len(data_set()))
    slice_spool.write(memoryview(first))
    assert slice_spool.on_disk
    slice_spool.discard()

    small = sink.open_spool(CT, SOP, EXPLICIT_LE, "PACS")
    assert small is not None
    small.write(memoryview(data_set() + bytes(40_000 - len(data_set()))))
    assert not small.on_disk
    small.discard()


async def test_an_instance_written_as_it_arrived_reads_its_data_from_the_file(
    tmp_path: Path,
) -> None:
    """Receiving to a DirectorySink maps nothing: the file is renamed into place, and the
    instance's data are mapped from it only if someone reads them (five system calls per
    instance saved, most retrievals to a directory never read the data back)."""
    sink = DirectorySink(tmp_path)
    data = data_set()
    spool = spooled(sink, data)
    instance = Instance(CT, SOP, EXPLICIT_LE, spool.close(), "PACS", spool=spool)
    assert instance.size == len(data)
    assert f"data=<{len(data)} bytes>" in repr(instance)
    await sink(instance)
    target = sink.paths[SOP]
    assert bytes(instance.data) == data  # mapped from where the sink put it
    assert instance == Instance(CT, SOP, EXPLICIT_LE, data, "PACS")
    assert hash(instance) == hash(Instance(CT, SOP, EXPLICIT_LE, data, "PACS"))
    assert instance != Instance(CT, SOP, EXPLICIT_LE, data[:-1] + b"x", "PACS")

    gone = spooled(DirectorySink(tmp_path / "other"), data)
    lost = Instance(CT, SOP, EXPLICIT_LE, gone.close(), "PACS", spool=gone)
    gone.discard()  # refused, say: the temporary file is removed
    with pytest.raises(DicomError, match="cannot be read back"):
        lost.data  # noqa: B018 - the access is the test
    assert target.exists()


# --- files without a name (Linux's O_TMPFILE) ------------------------------------------------


@unnamed_files
async def test_an_unnamed_spool_file_is_seen_only_once_committed(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    data = data_set()
    before = open_descriptors()
    spool = spooled(sink, data)
    assert spool.on_disk and spool.path is None
    assert list(tmp_path.rglob("*")) == []  # nothing in the directory while it arrives
    instance = Instance(CT, SOP, EXPLICIT_LE, spool.close(), "PACS", spool=spool)
    assert spool.deferred and bytes(spool.mapped()) == data  # read back from the open file
    assert list(tmp_path.rglob("*")) == []
    await sink(instance)
    target = tmp_path / STUDY / SERIES / f"{SOP}.dcm"
    assert sink.paths[SOP] == target and spool.committed
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [target]
    meta, body = split_part10(target.read_bytes())
    assert bytes(body) == data and meta["source_ae_title"] == "PACS"
    del instance
    # CPython's mmap keeps a duplicate of the descriptor it maps: dropped with the mapping.
    spool._view = None
    assert open_descriptors() == before  # closed once it has its name


@unnamed_files
async def test_an_unnamed_spool_file_replaces_an_instance_received_before(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    target = tmp_path / STUDY / SERIES / f"{SOP}.dcm"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the first one")
    spool = spooled(sink, data_set())
    await sink(Instance(CT, SOP, EXPLICIT_LE, spool.close(), "PACS", spool=spool))
    assert bytes(split_part10(target.read_bytes())[1]) == data_set()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [target]


@unnamed_files
@pytest.mark.parametrize("closed", [False, True], ids=["while-arriving", "once-whole"])
def test_a_discarded_unnamed_spool_file_leaves_nothing(tmp_path: Path, closed: bool) -> None:
    """Refused, or the association ended mid-data set: the file goes with its descriptor."""
    before = open_descriptors()
    spool = spooled(DirectorySink(tmp_path), data_set())
    assert open_descriptors() == before + 1
    if closed:
        spool.close()
    spool.discard()
    spool.discard()  # idempotent
    assert open_descriptors() == before and list(tmp_path.rglob("*")) == []
    with pytest.raises(DicomError, match="cannot be read back"):
        spool.mapped()


@unnamed_files
async def test_another_sink_copies_an_unnamed_spool_file(tmp_path: Path) -> None:
    first, second = DirectorySink(tmp_path / "a"), DirectorySink(tmp_path / "b")
    before = open_descriptors()
    spool = spooled(first, data_set())
    instance = Instance(CT, SOP, EXPLICIT_LE, spool.close(), "PACS", spool=spool)
    await second(instance)
    assert bytes(read_part10(tmp_path / "b" / STUDY / SERIES / f"{SOP}.dcm").data) == data_set()
    assert not spool.committed
    release_spool(DimseMessage(1, {}, b"", writer=spool))
    del instance
    spool._view = None  # the mapping's own duplicate descriptor, as above
    assert open_descriptors() == before and list((tmp_path / "a").rglob("*")) == []


@unnamed_files
async def test_without_proc_an_unnamed_spool_file_is_copied_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = DirectorySink(tmp_path)
    spool = spooled(sink, data_set())
    instance = Instance(CT, SOP, EXPLICIT_LE, spool.close(), "PACS", spool=spool)

    def no_proc(fd: int, target: str) -> None:
        monkeypatch.setattr(aiodicom.unnamed, "_usable", False)
        raise aiodicom.unnamed.ProcUnavailable(errno.ENOENT, "no /proc")

    monkeypatch.setattr(aiodicom.fileio, "link_unnamed", no_proc)
    await sink(instance)
    target = tmp_path / STUDY / SERIES / f"{SOP}.dcm"
    assert bytes(read_part10(target).data) == data_set()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [target]


# --- the next file made ahead (SpareFile) ----------------------------------------------------


def small_instance(sink: DirectorySink, sop_instance_uid: str) -> Instance:
    spool = sink.open_spool(CT, sop_instance_uid, EXPLICIT_LE, "PACS")
    assert spool is not None
    spool.write(memoryview(data_set()))
    return Instance(CT, sop_instance_uid, EXPLICIT_LE, spool.close(), "PACS", spool=spool)


@unnamed_files
async def test_the_next_file_is_made_after_the_receiver_yields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink that received an instance has the next file made once the task yields (after
    the response went out), so the next instance's write does not create one."""
    made_while_writing: list[str] = []
    real_open = aiodicom.fileio.open_unnamed

    def counting(directory: str) -> int | None:
        made_while_writing.append(directory)
        return real_open(directory)

    # Where the sink's writer makes a file while a data set arrives, and where a data set held
    # in memory is written whole: neither is to make one when a file was made ahead.
    monkeypatch.setattr(aiodicom.fileio, "open_unnamed", counting)
    monkeypatch.setattr(aiodicom.spool, "open_unnamed", counting)
    sink = DirectorySink(tmp_path)
    before = open_descriptors()
    await sink(small_instance(sink, SOP))
    assert len(made_while_writing) == 1  # nothing made ahead for the first
    await anyio.lowlevel.checkpoint()  # the receiver waits for the next request
    assert open_descriptors() == before + 1  # the spare: a descriptor, nothing on disk
    await sink(small_instance(sink, SOP + ".1"))
    assert len(made_while_writing) == 1  # the second used the file made ahead
    for uid in (SOP, SOP + ".1"):
        assert bytes(read_part10(sink.paths[uid]).data) == data_set()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        f"{SOP}.1.dcm", f"{SOP}.dcm"
    ]
    await anyio.lowlevel.checkpoint()
    sink.release_spare()
    assert open_descriptors() == before


@unnamed_files
async def test_small_data_sets_of_a_series_are_written_into_space_allocated_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once two instances written whole had one size (a series), the next file is made with
    the whole blocks of the last one written as zeros, which its write then only overwrites
    (pages the page cache holds already). A smaller data set leaves that file alone (it
    would need truncating, which costs more than the space saved) and is written into a file
    of its own."""
    allocations: list[int] = []
    real_fill = aiodicom.unnamed._fill

    def fill(fd: int, size: int) -> None:
        allocations.append(size)
        real_fill(fd, size)
        assert os.fstat(fd).st_size == size and os.lseek(fd, 0, os.SEEK_CUR) == 0

    allocated: list[int] = []  # posix_fallocate: for files written as they arrive only

    def fallocate(fd: int, offset: int, size: int) -> None:
        allocated.append(size)

    monkeypatch.setattr(aiodicom.unnamed, "_fill", fill)
    monkeypatch.setattr(aiodicom.unnamed, "_fallocate", fallocate)
    sink = DirectorySink(tmp_path)
    for n in range(3):
        await sink(small_instance(sink, f"{SOP}.{n}"))
        await anyio.lowlevel.checkpoint()  # the receiver waits for the next request
    file_size = sink.paths[f"{SOP}.0"].stat().st_size
    blocks = file_size - file_size % 4096
    assert blocks and allocations == [blocks, blocks]  # after the second and the third
    assert allocated == []
    for n in range(3):
        path = sink.paths[f"{SOP}.{n}"]
        assert path.stat().st_size == file_size
        assert bytes(read_part10(path).data) == data_set()

    before = open_descriptors()
    shorter = data_set()[: -len(data_set()) // 2]
    spool = sink.open_spool(CT, SOP + ".9", EXPLICIT_LE, "PACS")
    assert spool is not None
    spool.write(memoryview(shorter))
    await sink(Instance(CT, SOP + ".9", EXPLICIT_LE, spool.close(), "PACS", spool=spool))
    assert bytes(read_part10(sink.paths[SOP + ".9"]).data) == shorter
    assert open_descriptors() == before  # the allocated file is still the spare
    sink.release_spare()
    assert open_descriptors() == before - 1


@unnamed_files
async def test_a_large_data_set_is_written_into_the_file_made_ahead(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    await sink(small_instance(sink, SOP))
    await anyio.lowlevel.checkpoint()
    before = open_descriptors()
    spool = spooled(sink, data_set())  # past the limit: to disk, into the spare
    assert open_descriptors() == before  # no other file was opened for it
    await sink(Instance(CT, SOP + ".2", EXPLICIT_LE, spool.close(), "PACS", spool=spool))
    assert bytes(read_part10(sink.paths[SOP + ".2"]).data) == data_set()
    sink.release_spare()


def test_a_spare_is_made_only_on_asyncio_and_release_is_final(tmp_path: Path) -> None:
    spare = aiodicom.unnamed.SpareFile(str(tmp_path))
    spare.prepare()  # no running asyncio loop (trio, or none): nothing is scheduled
    assert spare.take() is None

    async def prepare_then_release() -> int | None:
        spare.prepare()
        spare.release()  # before the loop came round: the making is called off
        await asyncio.sleep(0)
        return spare.take()

    assert asyncio.run(prepare_then_release()) is None


@unnamed_files
def test_a_file_made_ahead_on_another_file_system_is_not_used(tmp_path: Path) -> None:
    """A layout may put a file on another file system than the sink's directory: the file
    made ahead cannot be linked there, and the data is written the usual way."""
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to make the file on")
    before = open_descriptors()
    ahead = aiodicom.unnamed.open_unnamed(str(other))
    assert ahead is not None
    target = tmp_path / "x.dcm"
    aiodicom.fileio.write_atomic(target, [memoryview(b"abc")], unnamed=ahead)
    assert target.read_bytes() == b"abc"
    assert list(tmp_path.iterdir()) == [target] and open_descriptors() == before


def test_the_fragments_of_one_read_go_to_the_file_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the memory limit, fragments are kept as views until flush(), which writes them
    in one call; the receive buffer may then be reused without changing the file."""
    sink = DirectorySink(tmp_path, memory_limit=1024)
    spool = sink.open_spool(CT, SOP, EXPLICIT_LE, "PACS")
    assert spool is not None
    calls: list[int] = []
    real_write_all = aiodicom.spool.write_all

    def counted(fd: int, chunks: list[memoryview]) -> None:
        calls.append(len(chunks))
        real_write_all(fd, chunks)

    monkeypatch.setattr(aiodicom.spool, "write_all", counted)
    data = data_set() + bytes(range(256)) * 16
    receive_buffer = bytearray(data)
    view = memoryview(receive_buffer)
    for start in range(0, 3000, 1000):  # one read holding three PDUs: in memory, then past it
        spool.write(view[start : start + 1000])
    assert calls == []  # nothing written before the read is handled
    spool.flush()
    assert calls == [4]  # File Meta header, what was in memory, two fragments: one writev
    receive_buffer[:3000] = bytes(3000)  # the buffer is read into again
    spool.write(view[3000:])
    assert spool.close() == b""  # close() writes what the last read left
    assert calls == [4, 1]
    instance = Instance(CT, SOP, EXPLICIT_LE, b"", "PACS", spool=spool)
    assert bytes(spool.mapped()) == data
    assert instance.peek_uids()[0] == STUDY


def test_a_discarded_spool_forgets_the_fragments_it_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = DirectorySink(tmp_path, memory_limit=16)
    spool = sink.open_spool(CT, SOP, EXPLICIT_LE, "PACS")
    assert spool is not None
    written: list[int] = []
    monkeypatch.setattr(aiodicom.spool, "write_all", lambda fd, chunks: written.append(fd))
    spool.write(memoryview(bytes(100)))  # past the limit: kept for the end of the read
    spool.discard()  # the association ended mid-read
    spool.flush()
    assert written == []


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files are Linux's")
def test_a_large_data_set_kept_in_memory_goes_into_a_memory_file_mapped_whole() -> None:
    """Past 64 KiB a data set kept in memory goes on in a file that lives in memory (what the
    buffer held first, then each fragment as it arrives) and comes back as a read-only mapping,
    which outlives the writer; nothing is created on a disk."""
    data = data_set() * 5  # 82 kB: past the 64 KiB a buffer holds
    writer = aiodicom.spool.memory_spool()
    assert isinstance(writer, aiodicom.spool.MemoryFileWriter)
    step = len(data) // 4
    pieces = [memoryview(data)[start : start + step] for start in range(0, 3 * step, step)]
    for piece in pieces:
        writer.write(piece)
    writer.write_last(memoryview(data)[3 * step :])
    whole = writer.close()
    assert isinstance(whole, memoryview) and whole.readonly and bytes(whole) == data
    writer.discard()  # what the assembler does to a writer it gives up: nothing left to close
    assert bytes(whole[:16]) == data[:16]


def test_a_small_data_set_kept_in_memory_stays_in_a_buffer() -> None:
    """As with a MemoryWriter: one fragment comes back as bytes, several as a read-only view."""
    data = data_set()[:1000]
    writer = aiodicom.spool.memory_spool()
    writer.write_last(memoryview(data))
    assert writer.close() == data
    writer = aiodicom.spool.memory_spool()
    writer.write(memoryview(data)[:400])
    writer.write_last(memoryview(data)[400:])
    whole = writer.close()
    assert isinstance(whole, memoryview) and whole.readonly and bytes(whole) == data


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files are Linux's")
def test_a_memory_file_that_cannot_grow_hands_its_bytes_back_to_a_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = data_set() * 5
    writer = aiodicom.spool.memory_spool()
    writer.write(memoryview(data)[:70_000])  # past 64 KiB: in a memory file
    real_write_all = aiodicom.spool.write_all

    def out_of_memory(fd: int, chunks: list[memoryview]) -> None:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(aiodicom.spool, "write_all", out_of_memory)
    writer.write(memoryview(data)[70_000:75_000])
    monkeypatch.setattr(aiodicom.spool, "write_all", real_write_all)
    made = []
    monkeypatch.setattr(aiodicom.spool, "_memfd_create", lambda *a: made.append(a) or 0)
    writer.write_last(memoryview(data)[75_000:])
    assert bytes(writer.close()) == data
    assert made == []  # the rest went on in the buffer, not into a new memory file


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files are Linux's")
def test_an_abandoned_memory_file_is_closed() -> None:
    writer = aiodicom.spool.memory_spool()
    writer.write(memoryview(data_set() * 5))
    before = len(os.listdir("/proc/self/fd"))
    writer.discard()
    assert len(os.listdir("/proc/self/fd")) == before - 1
