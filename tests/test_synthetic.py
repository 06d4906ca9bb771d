"""Synthetic studies: reproducible, valid, with geometry a volume loader can use."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.dataset import Dataset

from aiodicom.query import QueryModel
from aiodicom.server import InstanceIndex, find, instances_for_retrieve
from aiodicom.testing import DEFAULT_PATIENTS, synthetic_datasets, synthetic_uid, write_synthetic

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_synthetic(tmp_path_factory.mktemp("synthetic"), slices=10)


def _volume(paths: list[Path]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(paths[0].parent))
    reader.SetFileNames(names)
    return reader.Execute()


def _series(files: list[Path], patient_id: str, study_id: str, number: int) -> list[Path]:
    return [p for p in files if p.parts[-4:-1] == (patient_id, study_id, f"{number:03d}")]


def test_same_seed_same_files_other_seed_other_uids(tmp_path: Path) -> None:
    first = write_synthetic(tmp_path / "a", rows=8, columns=8, slices=2)
    second = write_synthetic(tmp_path / "b", rows=8, columns=8, slices=2)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    other = list(synthetic_datasets(seed="other", rows=8, columns=8, slices=2))
    assert {str(ds.SOPInstanceUID) for ds in other}.isdisjoint(
        str(dcmread(p).SOPInstanceUID) for p in first
    )


def test_uids_are_valid_and_unique(files: list[Path]) -> None:
    datasets = [dcmread(p, stop_before_pixels=True) for p in files]
    sops = [str(ds.SOPInstanceUID) for ds in datasets]
    assert len(set(sops)) == len(sops)
    for ds in datasets:
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
            assert uid.startswith("2.25.") and len(uid) <= 64 and _UID.fullmatch(uid)
    assert synthetic_uid("x", "1") == synthetic_uid("x", "1") != synthetic_uid("x", "2")


def test_shape_of_the_default_set(files: list[Path]) -> None:
    datasets = [dcmread(p, stop_before_pixels=True) for p in files]
    assert len({ds.PatientID for ds in datasets}) == len(DEFAULT_PATIENTS) == 4
    assert len({ds.StudyInstanceUID for ds in datasets}) == 6
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 10
    assert len(files) == 10 * 10


def test_non_ascii_names_are_encoded_in_their_character_set(files: list[Path]) -> None:
    muller = dcmread(_series(files, "AIO-0002", "S2001", 1)[0])
    assert muller.SpecificCharacterSet == "ISO_IR 100"
    assert muller.PatientName == "Müller^Jürgen"
    assert "Müller^Jürgen".encode("latin-1") in muller.PatientName.original_string
    yamada = dcmread(_series(files, "AIO-0003", "S3001", 1)[0])
    assert yamada.SpecificCharacterSet == "ISO_IR 192"
    assert yamada.PatientName == "山田^太郎"


def test_axial_ct_is_stored_in_descending_order_and_loads_as_a_volume(files: list[Path]) -> None:
    paths = _series(files, "AIO-0001", "S1001", 1)
    by_number = sorted((dcmread(p, stop_before_pixels=True) for p in paths),
                       key=lambda ds: ds.InstanceNumber)
    z = [float(ds.ImagePositionPatient[2]) for ds in by_number]
    assert z == sorted(z, reverse=True)
    image = _volume(paths)
    assert image.GetSize() == (64, 64, 10)
    assert image.GetSpacing() == pytest.approx((0.5, 0.5, 2.0))
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert image.GetOrigin() == pytest.approx((-16.0, -16.0, -9.0))
    # The ball at the origin: bright (1000 HU after the rescale) at the centre, air outside.
    voxels = sitk.GetArrayFromImage(image)
    assert voxels[5, 32, 32] > 500 and voxels[5, 0, 0] < -900


@pytest.mark.parametrize(
    ("number", "direction"),
    [
        (1, (1, 0, 0, 0, 1, 0, 0, 0, 1)),  # AX T1
        (2, (0, 0, -1, 1, 0, 0, 0, -1, 0)),  # SAG T2: rows along y, columns along -z
        (3, (1, 0, 0, 0, 0, 1, 0, -1, 0)),  # COR T1: rows along x, columns along -z
    ],
)
def test_mr_series_have_their_orientation(
    files: list[Path], number: int, direction: tuple[int, ...]
) -> None:
    image = _volume(_series(files, "AIO-0001", "S1002", number))
    assert image.GetSize() == (64, 64, 10)
    assert image.GetDirection() == pytest.approx(direction)
    # Reformats of one object: the centre voxel of every orientation is inside the ball.
    centre = sitk.GetArrayFromImage(image)[5, 32, 32]
    assert centre == 900


def test_demo_scenario_find_then_load_the_axial_series(files: list[Path]) -> None:
    index = InstanceIndex(files[0].parents[3], database=":memory:")
    index.scan_all()

    def find_all(level: str, **keys: str) -> list[Dataset]:
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        return [r for b in find(index, ds, QueryModel.STUDY_ROOT) for r in b]

    (study,) = find_all("STUDY", PatientID="AIO-0001", StudyDate="20240312", StudyInstanceUID="")
    (series,) = find_all("SERIES", StudyInstanceUID=study.StudyInstanceUID,
                         SeriesDescription="AX*", SeriesInstanceUID="")
    move = Dataset()
    move.QueryRetrieveLevel = "SERIES"
    move.StudyInstanceUID = study.StudyInstanceUID
    move.SeriesInstanceUID = series.SeriesInstanceUID
    stored = [s for b in instances_for_retrieve(index, move, QueryModel.STUDY_ROOT) for s in b]
    paths = sorted({s.path for s in stored if s.path is not None})
    assert len(paths) == 10
    image = _volume(paths)
    assert image.GetSize() == (64, 64, 10)
    assert np.asarray(image.GetSpacing()) == pytest.approx([0.5, 0.5, 2.0])
