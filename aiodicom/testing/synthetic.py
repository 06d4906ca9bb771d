"""Synthetic but realistic studies: CT and MR series with real geometry, reproducible.

For demos and tests (the library's own and its users'): a few patients, among them names
that need a Specific Character Set (``Müller^Jürgen`` in ISO_IR 100, ``山田^太郎`` in
ISO_IR 192), with CT and MR studies whose series have a complete Image Plane module, so that a
series loads as a 3-D volume (SimpleITK, ``aiodicom.Series``). The axial CT series are stored
in descending slice order (Instance Number 1 is the top slice), as many scanners store them,
so that a loader which trusts Instance Numbers instead of positions shows it.

Everything is a pure function of the seed: UIDs are ``2.25.`` + the integer of a uuid5 of the
seed and the entity's path (pydicom's ``generate_uid`` ignores its entropy sources when
``prefix=None``), dates and times are fixed, pixel values depend only on the voxel position.
No numpy is needed.
"""

from __future__ import annotations

import array
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from aiodicom.datasets import encode_dataset
from aiodicom.fileio import write_part10_atomic
from aiodicom.instance import Instance

__all__ = [
    "DEFAULT_PATIENTS",
    "PatientSpec",
    "SeriesSpec",
    "StudySpec",
    "synthetic_datasets",
    "synthetic_instances",
    "synthetic_uid",
    "write_synthetic",
]

_NAMESPACE = uuid.UUID("0d1c8e52-3f57-4a8e-9c43-6f5b7e2a9d10")

# Row direction, column direction of each orientation (patient coordinates, LPS).
_ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "AX": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "SAG": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "COR": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


def synthetic_uid(seed: str, *path: str) -> str:
    """``2.25.<uuid5 integer>`` of the seed and path: at most 44 characters, reproducible."""
    return "2.25." + str(uuid.uuid5(_NAMESPACE, "/".join((seed, *path))).int)


@attrs.frozen
class SeriesSpec:
    """One series. ``orientation``: "AX", "SAG" or "COR"; ``descending``: Instance Number 1
    is the slice furthest along the slice normal."""

    modality: str
    description: str
    orientation: str
    body_part: str
    descending: bool = False


@attrs.frozen
class StudySpec:
    date: str
    time: str
    description: str
    accession_number: str
    study_id: str
    referring_physician: str
    series: tuple[SeriesSpec, ...]


@attrs.frozen
class PatientSpec:
    """``name`` is Unicode; ``character_set`` the Specific Character Set that can encode it
    (``None``: the default repertoire)."""

    patient_id: str
    name: str
    character_set: str | None
    birth_date: str
    sex: str
    studies: tuple[StudySpec, ...]


_MR_BRAIN = (
    SeriesSpec("MR", "AX T1", "AX", "HEAD"),
    SeriesSpec("MR", "SAG T2", "SAG", "HEAD"),
    SeriesSpec("MR", "COR T1", "COR", "HEAD"),
)

#: Four patients, six studies, ten series. The demo's scenario: PatientID "AIO-0001",
#: StudyDate "20240312", SeriesDescription "AX*" finds the axial T1 of a brain MR.
DEFAULT_PATIENTS: tuple[PatientSpec, ...] = (
    PatientSpec(
        "AIO-0001",
        "Doe^John",
        None,
        "19700101",
        "M",
        (
            StudySpec(
                "20240105", "101500", "CT CHEST", "ACC1001", "S1001", "Welby^Marcus",
                (SeriesSpec("CT", "AX CT CHEST", "AX", "CHEST", descending=True),),
            ),
            StudySpec(
                "20240312", "083000", "MR BRAIN", "ACC1002", "S1002", "Welby^Marcus", _MR_BRAIN
            ),
        ),
    ),
    PatientSpec(
        "AIO-0002",
        "Müller^Jürgen",
        "ISO_IR 100",
        "19651224",
        "M",
        (
            StudySpec(
                "20240105", "141000", "MR KNEE", "ACC2001", "S2001", "Schäfer^Anna",
                (
                    SeriesSpec("MR", "SAG T2 KNEE", "SAG", "KNEE"),
                    SeriesSpec("MR", "AX T1 KNEE", "AX", "KNEE"),
                ),
            ),
        ),
    ),
    PatientSpec(
        "AIO-0003",
        "山田^太郎",
        "ISO_IR 192",
        "19801120",
        "M",
        (
            StudySpec(
                "20231120", "160000", "CT ABDOMEN", "ACC3001", "S3001", "",
                (SeriesSpec("CT", "AX CT ABDOMEN", "AX", "ABDOMEN", descending=True),),
            ),
        ),
    ),
    PatientSpec(
        "AIO-0004",
        "Smith^Anna",
        None,
        "19881003",
        "F",
        (
            StudySpec(
                "20240312", "113000", "MR BRAIN", "ACC4001", "S4001", "House^Gregory",
                (
                    SeriesSpec("MR", "AX T1", "AX", "HEAD"),
                    SeriesSpec("MR", "AX FLAIR", "AX", "HEAD"),
                ),
            ),
            StudySpec(
                "20240620", "090000", "CT HEAD", "ACC4002", "S4002", "House^Gregory",
                (SeriesSpec("CT", "AX CT HEAD", "AX", "HEAD", descending=True),),
            ),
        ),
    ),
)


def _ds_text(x: float) -> str:
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _cross(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _pixels(
    modality: str,
    origin: Sequence[float],
    row_dir: Sequence[float],
    col_dir: Sequence[float],
    rows: int,
    columns: int,
    spacing: float,
) -> bytes:
    """A bright ball (radius a third of the field of view) at the origin in a dimmer one, on
    air: the same object whatever the orientation, so reformatted series agree."""
    if modality == "CT":
        outside, shell, core = 24, 1064, 2024  # with intercept -1024: -1000, 40, 1000 HU
    else:
        outside, shell, core = 0, 300, 900
    field = max(rows, columns) * spacing
    core_r2, shell_r2 = (field / 3) ** 2, (field / 2.2) ** 2
    values = array.array("H", bytes(2 * rows * columns))
    i = 0
    for r in range(rows):
        base = [origin[k] + col_dir[k] * r * spacing for k in range(3)]
        for c in range(columns):
            x = base[0] + row_dir[0] * c * spacing
            y = base[1] + row_dir[1] * c * spacing
            z = base[2] + row_dir[2] * c * spacing
            d2 = x * x + y * y + z * z
            values[i] = core if d2 <= core_r2 else shell if d2 <= shell_r2 else outside
            i += 1
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def synthetic_datasets(
    patients: Sequence[PatientSpec] = DEFAULT_PATIENTS,
    *,
    seed: str = "aiodicom",
    rows: int = 64,
    columns: int = 64,
    slices: int = 12,
    pixel_spacing: float = 0.5,
    slice_thickness: float = 2.0,
) -> Iterator[Dataset]:
    """Every instance of ``patients`` as a pydicom Dataset with ``file_meta`` (Explicit VR
    Little Endian), series by series, in Instance Number order.

    ``rows`` x ``columns`` pixels of ``pixel_spacing`` mm, ``slices`` per series,
    ``slice_thickness`` mm apart, 16 bits allocated, 12 stored.
    """
    for patient in patients:
        for s, study in enumerate(patient.studies):
            study_uid = synthetic_uid(seed, patient.patient_id, str(s))
            frame_uid = synthetic_uid(seed, patient.patient_id, str(s), "frame")
            for n, series in enumerate(study.series):
                series_uid = synthetic_uid(seed, patient.patient_id, str(s), str(n))
                for index in range(slices):
                    yield _instance(
                        patient, study, series,
                        study_uid=study_uid,
                        series_uid=series_uid,
                        frame_uid=frame_uid,
                        sop_uid=synthetic_uid(
                            seed, patient.patient_id, str(s), str(n), str(index)
                        ),
                        series_number=n + 1,
                        index=index,
                        geometry=(rows, columns, slices, pixel_spacing, slice_thickness),
                    )


def _instance(
    patient: PatientSpec,
    study: StudySpec,
    series: SeriesSpec,
    *,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    sop_uid: str,
    series_number: int,
    index: int,
    geometry: tuple[int, int, int, float, float],
) -> Dataset:
    rows, columns, slices, spacing, thickness = geometry
    row_dir, col_dir = _ORIENTATIONS[series.orientation]
    normal = _cross(row_dir, col_dir)
    # Slice ``index`` in storage order; descending series run against the normal.
    step = slices - 1 - index if series.descending else index
    distance = (step - (slices - 1) / 2) * thickness
    half_w, half_h = columns * spacing / 2, rows * spacing / 2
    origin = tuple(
        -row_dir[k] * half_w - col_dir[k] * half_h + normal[k] * distance for k in range(3)
    )
    sop_class = CTImageStorage if series.modality == "CT" else MRImageStorage

    ds = Dataset()
    if patient.character_set:
        ds.SpecificCharacterSet = patient.character_set
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if series.orientation == "AX" else "OTHER"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study.time
    ds.AccessionNumber = study.accession_number
    ds.Modality = series.modality
    ds.Manufacturer = "aiodicom"
    ds.InstitutionName = "aiodicom synthetic hospital"
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyDescription = study.description
    # A coded procedure, so that queries can exercise sequence matching.
    procedure = Dataset()
    procedure.CodeValue = study.description.replace(" ", "")
    procedure.CodingSchemeDesignator = "99AIODICOM"
    procedure.CodeMeaning = study.description
    ds.ProcedureCodeSequence = [procedure]
    ds.SeriesDescription = series.description
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.BodyPartExamined = series.body_part
    ds.SliceThickness = _ds_text(thickness)
    if series.modality == "MR":
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "3000" if "T2" in series.description else "500"
        ds.EchoTime = "90" if "T2" in series.description else "15"
        ds.MagneticFieldStrength = "1.5"
        ds.SpacingBetweenSlices = _ds_text(thickness)
    else:
        ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series_number
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [_ds_text(v) for v in origin]
    ds.ImageOrientationPatient = [_ds_text(v) for v in (*row_dir, *col_dir)]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds_text(distance)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [_ds_text(spacing), _ds_text(spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if series.modality == "CT":
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
    else:
        ds.WindowCenter, ds.WindowWidth = "500", "1000"
    ds.PixelData = _pixels(series.modality, origin, row_dir, col_dir, rows, columns, spacing)
    ds["PixelData"].VR = "OW"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _as_instance(ds: Dataset) -> Instance:
    return Instance(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        data=encode_dataset(ds, ExplicitVRLittleEndian),
    )


def synthetic_instances(
    patients: Sequence[PatientSpec] = DEFAULT_PATIENTS,
    *,
    seed: str = "aiodicom",
    rows: int = 64,
    columns: int = 64,
    slices: int = 12,
) -> Iterator[Instance]:
    """As :func:`synthetic_datasets`, encoded as :class:`~aiodicom.instance.Instance`
    objects: what a storage SCP would have received."""
    for ds in synthetic_datasets(patients, seed=seed, rows=rows, columns=columns, slices=slices):
        yield _as_instance(ds)


def write_synthetic(
    directory: str | os.PathLike[str],
    patients: Sequence[PatientSpec] = DEFAULT_PATIENTS,
    *,
    seed: str = "aiodicom",
    rows: int = 64,
    columns: int = 64,
    slices: int = 12,
) -> list[Path]:
    """Write every instance as a Part 10 file,
    ``<directory>/<PatientID>/<StudyID>/<SeriesNumber>/<InstanceNumber>.dcm``; returns the
    paths in generation order."""
    root = Path(directory)
    written = []
    for ds in synthetic_datasets(patients, seed=seed, rows=rows, columns=columns, slices=slices):
        path = root / ds.PatientID / ds.StudyID / f"{ds.SeriesNumber:03d}"
        path.mkdir(parents=True, exist_ok=True)
        path = path / f"{ds.InstanceNumber:04d}.dcm"
        write_part10_atomic(path, _as_instance(ds))
        written.append(path)
    return written
