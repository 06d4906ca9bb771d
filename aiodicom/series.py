"""A series of received instances as a volume: sorted data sets, a NumPy array, a SimpleITK image.

NumPy and SimpleITK are optional; they are imported only by the methods that need them.
"""

from __future__ import annotations

import importlib
import itertools
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from pydicom.dataset import Dataset

from aiodicom.errors import DicomError
from aiodicom.instance import Instance

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["Series", "SeriesError", "split_series"]

Vector = tuple[float, float, float]

# Orientations and spacings closer than this (cosines / relative to spacing) count as equal.
_TOLERANCE = 1e-4


class SeriesError(DicomError, ValueError):
    """The instances do not form a volume (empty, mixed geometry, differing image sizes...)."""


def _cross(a: Vector, b: Vector) -> Vector:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a: Vector, b: Vector) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _vector(values: Sequence[Any]) -> Vector:
    return (float(values[0]), float(values[1]), float(values[2]))


def _to_instances(instances: Iterable[Instance]) -> tuple[Instance, ...]:
    return tuple(instances)


@attrs.frozen
class _Geometry:
    row: Vector  # direction of increasing column index
    column: Vector  # direction of increasing row index
    normal: Vector
    positions: tuple[float, ...]  # each slice's position along the normal, ascending


def _plane_geometry(datasets: Sequence[Dataset]) -> tuple[Vector, Vector, Vector] | None:
    """(row, column, normal) from the first slice, if every slice has a position and orientation."""
    if not all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for ds in datasets):
        return None
    orientation = datasets[0].ImageOrientationPatient
    row, column = _vector(orientation[:3]), _vector(orientation[3:])
    return row, column, _cross(row, column)


@attrs.frozen
class Series:
    """Instances of one series; any iterable of :class:`Instance` will do (e.g. a MemorySink).

    Only the data sets are decoded (through :attr:`Instance.dataset`, cached per instance);
    the instances themselves are kept as received.
    """

    instances: tuple[Instance, ...] = attrs.field(converter=_to_instances)

    def _sorted(self) -> tuple[list[Dataset], _Geometry | None]:
        if not self.instances:
            raise SeriesError("the series has no instances")
        datasets = [instance.dataset for instance in self.instances]
        plane = _plane_geometry(datasets)
        if plane is None:
            # Without geometry the instance number is the best order there is; instances
            # without one keep their arrival order, after the numbered ones.
            def by_number(ds: Dataset) -> tuple[bool, int]:
                number = ds.get("InstanceNumber")
                return (number is None, int(number) if number is not None else 0)

            return sorted(datasets, key=by_number), None
        row, column, normal = plane
        keyed = sorted(
            ((_dot(_vector(ds.ImagePositionPatient), normal), ds) for ds in datasets),
            key=lambda pair: pair[0],
        )
        positions = tuple(position for position, _ in keyed)
        return [ds for _, ds in keyed], _Geometry(row, column, normal, positions)

    def datasets(self) -> list[Dataset]:
        """The decoded data sets, ordered along the slice normal (ImagePositionPatient projected
        on the cross product of the ImageOrientationPatient cosines); by InstanceNumber when
        any slice lacks position or orientation."""
        return self._sorted()[0]

    def to_numpy(self) -> npt.NDArray[Any]:
        """A 3-D array indexed (z, y, x) in :meth:`datasets` order.

        Each slice's RescaleSlope and RescaleIntercept are applied when present (the array is
        then float64); otherwise the stored pixel values are returned in their own type.
        Needs NumPy, and whatever pydicom needs for compressed pixel data.
        """
        return self._to_numpy(self._sorted()[0])

    @staticmethod
    def _to_numpy(datasets: list[Dataset]) -> npt.NDArray[Any]:
        try:
            import numpy as np
        except ImportError as exc:
            raise ImportError("Series.to_numpy() needs NumPy: pip install numpy") from exc
        slices = []
        for ds in datasets:
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                raise SeriesError("multi-frame instances are not supported by Series")
            pixels = ds.pixel_array
            if "RescaleSlope" in ds or "RescaleIntercept" in ds:
                slope = float(ds.get("RescaleSlope", 1.0))
                intercept = float(ds.get("RescaleIntercept", 0.0))
                pixels = pixels.astype(np.float64) * slope + intercept
            slices.append(pixels)
        shapes = {pixels.shape for pixels in slices}
        if len(shapes) > 1:
            raise SeriesError(f"slices differ in size: {sorted(shapes)}")
        return np.stack(slices)

    def to_sitk(self) -> Any:
        """A ``SimpleITK.Image`` with the series' geometry.

        Origin is the first slice's ImagePositionPatient, direction comes from
        ImageOrientationPatient, in-plane spacing from PixelSpacing and slice spacing from the
        distance between slice positions (SpacingBetweenSlices, SliceThickness or 1 for a
        single slice). Pixel values are those of :meth:`to_numpy`. Unevenly spaced slices
        give a warning, as SimpleITK can hold only one spacing.
        """
        try:
            sitk = importlib.import_module("SimpleITK")
        except ImportError as exc:
            raise ImportError("Series.to_sitk() needs SimpleITK: pip install SimpleITK") from exc
        datasets, geometry = self._sorted()
        if geometry is None:
            raise SeriesError("to_sitk() needs ImagePositionPatient and ImageOrientationPatient")
        first = datasets[0]
        expected = (*geometry.row, *geometry.column)
        for ds in datasets[1:]:
            orientation = ds.ImageOrientationPatient
            if len(orientation) != 6 or any(
                abs(float(value) - cosine) > _TOLERANCE
                for value, cosine in zip(orientation, expected, strict=True)
            ):
                raise SeriesError("slices differ in ImageOrientationPatient")
        slice_spacing = self._slice_spacing(first, geometry.positions)
        pixels = self._to_numpy(datasets)
        # Colour slices are (y, x, samples): ITK holds those as one vector-valued 3-D image.
        image = sitk.GetImageFromArray(pixels, isVector=pixels.ndim == 4)
        row_spacing, column_spacing = (float(value) for value in first.get("PixelSpacing", (1, 1)))
        image.SetSpacing((column_spacing, row_spacing, slice_spacing))
        image.SetOrigin(_vector(first.ImagePositionPatient))
        # ITK's direction matrix has the axis directions as columns, flattened row by row.
        axes = (geometry.row, geometry.column, geometry.normal)
        image.SetDirection(tuple(axis[i] for i in range(3) for axis in axes))
        return image

    @staticmethod
    def _slice_spacing(first: Dataset, positions: tuple[float, ...]) -> float:
        if len(positions) == 1:
            fallback = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
            return float(fallback)
        gaps = [b - a for a, b in itertools.pairwise(positions)]
        if min(gaps) <= _TOLERANCE:
            raise SeriesError("two slices share a position: not a single volume")
        spacing = (positions[-1] - positions[0]) / len(gaps)
        if any(not math.isclose(gap, spacing, rel_tol=1e-3) for gap in gaps):
            warnings.warn(
                f"slice gaps range from {min(gaps):g} to {max(gaps):g}; using their mean "
                f"{spacing:g}",
                stacklevel=3,
            )
        return spacing


def split_series(instances: Iterable[Instance]) -> dict[str, Series]:
    """Group instances by SeriesInstanceUID, read cheaply with :meth:`Instance.peek_uids`.

    Instances without one are grouped under ``""``.
    """
    groups: dict[str, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.peek_uids()[1] or "", []).append(instance)
    return {uid: Series(members) for uid, members in groups.items()}
