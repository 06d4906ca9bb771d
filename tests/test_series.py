"""Series: ordering slices, stacking them into arrays and SimpleITK images."""

from __future__ import annotations

import importlib
import random
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from aiodicom.instance import Instance
from aiodicom.series import Series, SeriesError, split_series
from aiodicom.sinks import MemorySink

ROWS, COLUMNS = 3, 4
PIXEL_SPACING = (0.5, 0.75)  # (between rows, between columns), as DICOM orders it
SLICE_SPACING = 2.5
# A coronal-ish stack with a twist, so no axis lines up with a patient axis by accident.
ROW_COSINES = (np.cos(0.3), np.sin(0.3), 0.0)
COLUMN_COSINES = (0.0, 0.0, -1.0)
NORMAL = tuple(np.cross(ROW_COSINES, COLUMN_COSINES))
ORIGIN = (-10.0, 5.0, 20.0)
SERIES_UID = "1.2.3.4.5"


def stored_pixels(index: int) -> np.ndarray[Any, np.dtype[np.uint16]]:
    return (np.arange(ROWS * COLUMNS, dtype=np.uint16).reshape(ROWS, COLUMNS) + 100 * index).astype(
        np.uint16
    )


def make_slice(
    index: int,
    *,
    position: Sequence[float] | None = None,
    instance_number: int | None = None,
    rescale: tuple[float, float] | None = (2.0, -1024.0),
    orientation: Sequence[float] | None = None,
    series_uid: str = SERIES_UID,
    shape: tuple[int, int] = (ROWS, COLUMNS),
) -> Instance:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"1.2.3.4.5.{index}"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [float(value) for value in position]
    ds.ImageOrientationPatient = [
        float(value) for value in (orientation or (*ROW_COSINES, *COLUMN_COSINES))
    ]
    ds.PixelSpacing = list(PIXEL_SPACING)
    ds.SliceThickness = SLICE_SPACING
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    pixels = np.resize(stored_pixels(index), shape).astype("<u2")
    ds.add_new(0x7FE00010, "OW", pixels.tobytes())
    fp = DicomBytesIO()
    fp.is_implicit_VR = False
    fp.is_little_endian = True
    write_dataset(fp, ds)
    return Instance(CTImageStorage, ds.SOPInstanceUID, ExplicitVRLittleEndian, fp.getvalue())


def position_of(index: int, spacing: float = SLICE_SPACING) -> tuple[float, ...]:
    return tuple(o + index * spacing * n for o, n in zip(ORIGIN, NORMAL, strict=True))


def shuffled_volume(count: int = 5) -> list[Instance]:
    # Instance numbers run against the geometry, so only position-based sorting gets it right.
    instances = [
        make_slice(index, position=position_of(index), instance_number=count - index)
        for index in range(count)
    ]
    random.Random(7).shuffle(instances)
    return instances


def sitk_module() -> Any:
    return pytest.importorskip("SimpleITK")


def test_datasets_sorted_by_position_along_the_normal() -> None:
    series = Series(shuffled_volume())
    order = [ds.SOPInstanceUID for ds in series.datasets()]
    assert order == [f"1.2.3.4.5.{index}" for index in range(5)]


def test_datasets_fall_back_to_instance_number() -> None:
    instances = [make_slice(index, instance_number=10 - index) for index in range(4)]
    instances.append(make_slice(9))  # no number at all: last
    series = Series(reversed(instances))
    order = [ds.SOPInstanceUID for ds in series.datasets()]
    assert order == ["1.2.3.4.5.3", "1.2.3.4.5.2", "1.2.3.4.5.1", "1.2.3.4.5.0", "1.2.3.4.5.9"]


def test_series_from_memory_sink_and_split() -> None:
    sink = MemorySink()
    for instance in shuffled_volume(3):
        sink.instances[instance.sop_instance_uid] = instance
    other = make_slice(8, position=ORIGIN, series_uid="1.2.3.9")
    sink.instances[other.sop_instance_uid] = other
    groups = split_series(sink)
    assert set(groups) == {SERIES_UID, "1.2.3.9"}
    assert len(groups[SERIES_UID].instances) == 3
    assert groups["1.2.3.9"].instances == (other,)
    assert len(Series(sink).instances) == 4


def test_to_numpy_applies_rescale() -> None:
    volume = Series(shuffled_volume()).to_numpy()
    assert volume.shape == (5, ROWS, COLUMNS)
    assert volume.dtype == np.float64
    for index in range(5):
        np.testing.assert_array_equal(volume[index], stored_pixels(index) * 2.0 - 1024.0)


def test_to_numpy_without_rescale_keeps_stored_type() -> None:
    instances = [make_slice(i, position=position_of(i), rescale=None) for i in range(3)]
    volume = Series(instances).to_numpy()
    assert volume.dtype == np.uint16
    np.testing.assert_array_equal(volume[2], stored_pixels(2))


def test_to_numpy_refuses_mixed_sizes_and_empty_series() -> None:
    instances = [make_slice(0, position=position_of(0)), make_slice(1, position=position_of(1))]
    instances.append(make_slice(2, position=position_of(2), shape=(ROWS + 1, COLUMNS)))
    with pytest.raises(SeriesError, match="differ in size"):
        Series(instances).to_numpy()
    with pytest.raises(SeriesError):
        Series([]).datasets()


def test_to_sitk_geometry_and_pixels() -> None:
    sitk = sitk_module()
    image = Series(shuffled_volume()).to_sitk()
    assert image.GetSize() == (COLUMNS, ROWS, 5)
    np.testing.assert_allclose(image.GetSpacing(), (0.75, 0.5, SLICE_SPACING))
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 0], ROW_COSINES, atol=1e-12)
    np.testing.assert_allclose(direction[:, 1], COLUMN_COSINES, atol=1e-12)
    np.testing.assert_allclose(direction[:, 2], NORMAL, atol=1e-12)
    # Every slice's first voxel is at its ImagePositionPatient; a step along an image row
    # moves by the column spacing along the row cosines.
    for index in range(5):
        np.testing.assert_allclose(
            image.TransformIndexToPhysicalPoint((0, 0, index)), position_of(index), atol=1e-9
        )
    np.testing.assert_allclose(
        image.TransformIndexToPhysicalPoint((2, 1, 0)),
        np.add(ORIGIN, np.multiply(ROW_COSINES, 2 * 0.75) + np.multiply(COLUMN_COSINES, 0.5)),
        atol=1e-9,
    )
    pixels = sitk.GetArrayFromImage(image)
    for index in range(5):
        np.testing.assert_array_equal(pixels[index], stored_pixels(index) * 2.0 - 1024.0)
    assert image.GetPixelID() == sitk.sitkFloat64


def test_to_sitk_single_slice_uses_slice_thickness() -> None:
    sitk_module()
    image = Series([make_slice(0, position=ORIGIN)]).to_sitk()
    assert image.GetSpacing()[2] == pytest.approx(SLICE_SPACING)


def test_to_sitk_uneven_spacing_warns() -> None:
    sitk_module()
    positions = [0.0, 1.0, 2.0, 4.0]
    instances = [make_slice(i, position=position_of(1, p)) for i, p in enumerate(positions)]
    with pytest.warns(UserWarning, match="slice gaps"):
        image = Series(instances).to_sitk()
    assert image.GetSpacing()[2] == pytest.approx(4.0 / 3)


def test_to_sitk_refuses_what_is_not_a_volume() -> None:
    sitk_module()
    same_place = [make_slice(i, position=ORIGIN) for i in range(2)]
    with pytest.raises(SeriesError, match="share a position"):
        Series(same_place).to_sitk()
    tilted = [
        make_slice(0, position=position_of(0)),
        make_slice(1, position=position_of(1), orientation=(1, 0, 0, 0, 1, 0)),
    ]
    with pytest.raises(SeriesError, match="ImageOrientationPatient"):
        Series(tilted).to_sitk()
    with pytest.raises(SeriesError, match="needs ImagePositionPatient"):
        Series([make_slice(0, instance_number=1)]).to_sitk()


def test_to_sitk_without_simpleitk(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_sitk(name: str, package: str | None = None) -> ModuleType:
        if name == "SimpleITK":
            raise ImportError("No module named 'SimpleITK'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_sitk)
    with pytest.raises(ImportError, match="pip install SimpleITK"):
        Series(shuffled_volume(2)).to_sitk()
