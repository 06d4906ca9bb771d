"""The embedded SCP's instance index: memory and directory modes, scans, duplicates."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import attrs
import pytest
from pydicom import dcmread

from aiodicom import Instance
from aiodicom.datasets import encode_dataset
from aiodicom.fileio import MalformedDataSetError, split_part10, write_part10_atomic
from aiodicom.instance import read_part10
from aiodicom.server import IndexedFileChanged, InstanceIndex
from aiodicom.testing import synthetic_datasets, synthetic_instances, write_synthetic

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
SMALL = {"rows": 8, "columns": 8, "slices": 3}


def _columns(index: InstanceIndex, sop_instance_uid: str) -> dict[str, object]:
    row = index.connection.execute(
        "SELECT * FROM instances WHERE SOPInstanceUID = ?", (sop_instance_uid,)
    ).fetchone()
    return dict(row)


def _variant(ds_index: int = 0, **changes: str) -> Instance:
    ds = list(synthetic_datasets(**SMALL))[ds_index]  # type: ignore[arg-type]
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return Instance(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax_uid=EXPLICIT_LE,
        data=encode_dataset(ds, EXPLICIT_LE),
    )


# -- memory mode ---------------------------------------------------------------------------


def test_memory_store_keeps_the_bytes_and_indexes_decoded_values() -> None:
    index = InstanceIndex()
    instances = list(synthetic_instances(**SMALL))  # type: ignore[arg-type]
    for instance in instances:
        stored = index.store(instance)
        assert stored.path is None
        assert stored.length == len(instance.data)
    assert len(index) == len(instances)
    muller = next(i for i in instances if i.dataset.PatientID == "AIO-0002")
    stored = index.get(muller.sop_instance_uid)
    assert stored is not None
    assert bytes(index.read_data(stored)) == bytes(muller.data)
    columns = _columns(index, muller.sop_instance_uid)
    assert columns["PatientName"] == "Müller^Jürgen"
    assert columns["SpecificCharacterSet"] == "ISO_IR 100"
    assert columns["StudyDate"] == "20240105"
    assert columns["TransferSyntaxUID"] == EXPLICIT_LE
    # Attributes without a column are kept (bulk data left out).
    assert '"00081032"' in str(columns["attributes"])  # ProcedureCodeSequence
    assert '"7FE00010"' not in str(columns["attributes"])


def test_memory_store_copies_views_so_a_released_buffer_cannot_change_it() -> None:
    instance = _variant()
    buffer = bytearray(instance.data)
    index = InstanceIndex()
    stored = index.store(attrs.evolve(instance, data=memoryview(buffer)))
    buffer[:] = bytes(len(buffer))
    assert bytes(index.read_data(stored)) == bytes(instance.data)


def test_duplicate_sop_instance_uid_replaces_the_entry() -> None:
    index = InstanceIndex()
    index.store(_variant())
    replacement = _variant(StudyDescription="CORRECTED")
    stored = index.store(replacement)
    assert len(index) == 1
    assert _columns(index, stored.sop_instance_uid)["StudyDescription"] == "CORRECTED"
    assert bytes(index.read_data(stored)) == bytes(replacement.data)


def test_remove_drops_an_instance() -> None:
    index = InstanceIndex()
    stored = index.store(_variant())
    assert index.remove(stored.sop_instance_uid) is True
    assert index.remove(stored.sop_instance_uid) is False
    assert len(index) == 0
    assert index.get(stored.sop_instance_uid) is None


def test_implicit_vr_instance_is_indexed_and_kept_as_received() -> None:
    ds = next(synthetic_datasets(**SMALL))  # type: ignore[arg-type]
    data = encode_dataset(ds, IMPLICIT_LE)
    instance = Instance(str(ds.SOPClassUID), str(ds.SOPInstanceUID), IMPLICIT_LE, data)
    index = InstanceIndex()
    stored = index.store(instance)
    assert stored.transfer_syntax_uid == IMPLICIT_LE
    assert index.read_data(stored) == data
    assert _columns(index, stored.sop_instance_uid)["PatientID"] == "AIO-0001"


def test_memory_mode_cannot_scan() -> None:
    with pytest.raises(ValueError, match="memory"):
        InstanceIndex().scan_all()


# -- directory mode ------------------------------------------------------------------------


def test_directory_store_writes_a_part10_file_with_the_data_untouched(tmp_path: Path) -> None:
    index = InstanceIndex(tmp_path)
    instance = _variant()
    stored = index.store(instance)
    study, series = instance.peek_uids()
    assert stored.path == tmp_path / str(study) / str(series) / f"{instance.sop_instance_uid}.dcm"
    content = stored.path.read_bytes()
    meta, data = split_part10(content)
    assert bytes(data) == bytes(instance.data)
    assert content[stored.offset : stored.offset + stored.length] == bytes(instance.data)
    assert meta["transfer_syntax_uid"] == EXPLICIT_LE
    assert index.load(stored).data == bytes(instance.data)
    assert not [p for p in stored.path.parent.iterdir() if p.name.startswith(".")]


def test_add_file_indexes_in_place_with_offset_and_length(tmp_path: Path) -> None:
    paths = write_synthetic(tmp_path / "files", **SMALL)  # type: ignore[arg-type]
    index = InstanceIndex(tmp_path / "pacs")
    stored = index.add_file(paths[0])
    assert stored is not None
    assert stored.path == paths[0].resolve()
    assert index.read_data(stored) == bytes(read_part10(paths[0]).data)
    assert dcmread(paths[0]).SOPInstanceUID == stored.sop_instance_uid


def test_add_file_refuses_what_is_not_part10(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    index = InstanceIndex(tmp_path)
    assert index.add_file(junk) is None
    assert len(index) == 0


def test_scan_adds_skips_updates_and_removes(tmp_path: Path) -> None:
    paths = write_synthetic(tmp_path, **SMALL)  # type: ignore[arg-type]
    (tmp_path / "README.txt").write_text("not DICOM")
    index = InstanceIndex(tmp_path)

    first = index.scan_all()
    assert (first.files_seen, first.files_indexed, first.instances_removed) == (
        len(paths) + 1,
        len(paths),
        0,
    )
    assert len(index) == len(paths)

    again = index.scan_all()
    assert (again.files_indexed, again.files_skipped) == (0, len(paths) + 1)

    # A changed file is parsed again; a deleted one leaves the index.
    changed = read_part10(paths[0]).dataset
    changed.StudyDescription = "EDITED"
    data = encode_dataset(changed, EXPLICIT_LE)
    write_part10_atomic(paths[0], attrs.evolve(read_part10(paths[0]), data=data))
    os.utime(paths[0], ns=(1, 1))
    paths[1].unlink()
    third = index.scan_all()
    assert (third.files_indexed, third.instances_removed) == (1, 1)
    assert len(index) == len(paths) - 1
    assert _columns(index, str(changed.SOPInstanceUID))["StudyDescription"] == "EDITED"


def test_scan_runs_in_bounded_steps(tmp_path: Path) -> None:
    paths = write_synthetic(tmp_path, **SMALL)  # type: ignore[arg-type]
    index = InstanceIndex(tmp_path)
    steps = list(index.scan(files_per_step=4))
    assert steps[-1].done and not any(step.done for step in steps[:-1])
    parsed = [b.files_indexed - a.files_indexed for a, b in itertools.pairwise(steps)]
    assert steps[0].files_indexed <= 4 and all(n <= 4 for n in parsed)
    assert steps[-1].files_indexed == len(paths)
    assert len(steps) >= len(paths) // 4


def test_scan_keeps_one_entry_per_duplicate_and_does_not_flip(tmp_path: Path) -> None:
    paths = write_synthetic(tmp_path / "a", **SMALL)  # type: ignore[arg-type]
    copy = tmp_path / "b" / "copy.dcm"
    copy.parent.mkdir()
    copy.write_bytes(paths[0].read_bytes())
    index = InstanceIndex(tmp_path)
    index.scan_all()
    assert len(index) == len(paths)
    served = index.get(read_part10(copy).sop_instance_uid)
    assert served is not None
    # A second scan changes nothing: the copy that lost is remembered as seen.
    second = index.scan_all()
    assert second.files_indexed == 0
    assert index.get(served.sop_instance_uid) == served


def test_persistent_database_survives_reopening(tmp_path: Path) -> None:
    paths = write_synthetic(tmp_path, **SMALL)  # type: ignore[arg-type]
    with InstanceIndex(tmp_path) as index:
        index.scan_all()
    with InstanceIndex(tmp_path) as reopened:
        assert len(reopened) == len(paths)
        assert reopened.scan_all().files_indexed == 0


def test_read_data_notices_a_file_changed_since_indexing(tmp_path: Path) -> None:
    index = InstanceIndex(tmp_path)
    stored = index.store(_variant())
    assert stored.path is not None
    with open(stored.path, "ab") as file:
        file.write(b"\0\0")
    with pytest.raises(IndexedFileChanged):
        index.read_data(stored)


def test_a_file_rewritten_with_another_instance_replaces_its_entry(tmp_path: Path) -> None:
    paths = write_synthetic(tmp_path, **SMALL)  # type: ignore[arg-type]
    index = InstanceIndex(tmp_path)
    index.scan_all()
    before = read_part10(paths[0]).sop_instance_uid
    paths[0].write_bytes(paths[1].read_bytes())
    os.utime(paths[0], ns=(1, 1))
    index.scan_all()
    assert index.get(before) is None
    assert len(index) == len(paths) - 1


def test_store_refuses_a_data_set_that_does_not_decode() -> None:
    deflated = "1.2.840.10008.1.2.1.99"
    broken = Instance("1.2.840.10008.5.1.4.1.1.2", "1.2.3", deflated, b"not a deflate stream")
    index = InstanceIndex()
    with pytest.raises(MalformedDataSetError):
        index.store(broken)
    assert len(index) == 0
