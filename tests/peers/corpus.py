"""Deterministic DICOM test corpus, generated with pydicom by the tests themselves.

``generate_corpus(directory)`` writes small but valid CT Image Storage / MR Image Storage
Part 10 files (Explicit VR Little Endian, 64x64 16-bit pixels, complete Image Plane module so a
series can become a 3-D volume) and returns a :class:`Corpus` describing every patient, study,
series and instance with its UIDs and file path, so tests can compute expected match counts.

Everything is reproducible: UIDs are ``2.25.`` + the integer of a uuid5 derived from a stable
key (pydicom's ``generate_uid`` ignores its entropy sources when ``prefix=None``), dates and
times are fixed, pixel data is a pure function of the slice position.  No numpy is needed.
"""

from __future__ import annotations

import array
import math
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    MRImageStorage,
    RLELossless,
)

__all__ = [
    "DEFAULT_SPEC",
    "Corpus",
    "InstanceInfo",
    "PatientInfo",
    "PatientSpec",
    "SeriesInfo",
    "SeriesSpec",
    "StudyInfo",
    "StudySpec",
    "WorklistItem",
    "bulk_patient_spec",
    "compressed_copy",
    "derive_uid",
    "generate_corpus",
    "generate_worklist",
    "load_datasets",
]

_UID_NAMESPACE = uuid.UUID("6f1c3f7e-8a51-5d2c-9a0e-2b7d4c1e9f30")
ROWS = COLUMNS = 64
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
PIXEL_SPACING = 0.5  # mm -> 32 mm field of view
SLICE_THICKNESS = 2.0  # mm


def derive_uid(key: str) -> str:
    """A stable UID for ``key``: ``2.25.<uuid5 integer>`` (at most 44 characters)."""
    return "2.25." + str(uuid.uuid5(_UID_NAMESPACE, key).int)


# --------------------------------------------------------------------------------------------
# Specification of what to generate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesSpec:
    modality: str  # "CT" or "MR"
    description: str  # e.g. "AX T1"
    n_instances: int
    orientation: str = "AX"  # "AX" or "SAG"
    body_part: str = ""


@dataclass(frozen=True)
class StudySpec:
    date: str  # YYYYMMDD
    time: str  # HHMMSS
    description: str
    accession_number: str
    study_id: str
    series: tuple[SeriesSpec, ...]
    referring_physician: str = ""


@dataclass(frozen=True)
class PatientSpec:
    patient_id: str
    name: str  # unicode; encoded according to ``charset``
    charset: str | None  # Specific Character Set, None -> default repertoire (ASCII)
    birth_date: str
    sex: str
    studies: tuple[StudySpec, ...]


DEFAULT_SPEC: tuple[PatientSpec, ...] = (
    PatientSpec(
        "AIO0001",
        "Doe^John",
        None,
        "19700101",
        "M",
        (
            StudySpec(
                "20240105",
                "101500",
                "CT CHEST",
                "ACC1001",
                "S1001",
                (SeriesSpec("CT", "AX CT", 5, "AX", "CHEST"),),
                "Welby^Marcus",
            ),
            StudySpec(
                "20240112",
                "083000",
                "MR HEAD",
                "ACC1002",
                "S1002",
                (
                    SeriesSpec("MR", "AX T1", 4, "AX", "HEAD"),
                    SeriesSpec("MR", "SAG T2", 4, "SAG", "HEAD"),
                ),
            ),
        ),
    ),
    PatientSpec(
        "AIO0002",
        "Müller^Jürgen",
        "ISO_IR 192",
        "19621224",
        "M",
        (
            StudySpec(
                "20240115",
                "141000",
                "MR KNEE",
                "ACC1003",
                "S1003",
                (
                    SeriesSpec("MR", "AX T1", 3, "AX", "KNEE"),
                    SeriesSpec("MR", "SAG T2", 3, "SAG", "KNEE"),
                ),
            ),
        ),
    ),
    PatientSpec(
        "AIO0003",
        "山田^太郎",
        "ISO_IR 192",
        "19800315",
        "M",
        (
            StudySpec(
                "20240120",
                "090000",
                "CT ABDOMEN",
                "ACC1004",
                "S1004",
                (SeriesSpec("CT", "AX CT", 5, "AX", "ABDOMEN"),),
            ),
        ),
    ),
    PatientSpec(
        "AIO0004",
        "Smith^Jane",
        None,
        "19851130",
        "F",
        (
            StudySpec(
                "20231215",
                "110000",
                "MR SPINE",
                "ACC1005",
                "S1005",
                (SeriesSpec("MR", "SAG T2", 4, "SAG", "LSPINE"),),
            ),
            StudySpec(
                "20240205",
                "160000",
                "CT HEAD",
                "ACC1006",
                "S1006",
                (SeriesSpec("CT", "AX CT", 4, "AX", "HEAD"),),
            ),
        ),
    ),
    PatientSpec(
        "AIO0005",
        "Lindqvist^Åsa",
        "ISO_IR 100",
        "19910704",
        "F",
        (
            StudySpec(
                "20240131",
                "235900",
                "CT MR PELVIS",
                "ACC1007",
                "S1007",
                (
                    SeriesSpec("CT", "AX CT", 3, "AX", "PELVIS"),
                    SeriesSpec("MR", "AX T1", 3, "AX", "PELVIS"),
                ),
            ),
        ),
    ),
)


def bulk_patient_spec(
    n_instances: int,
    patient_id: str = "AIOBULK",
    name: str = "Bulk^Series",
    modality: str = "CT",
    date: str = "20240110",
) -> PatientSpec:
    """One patient, one study, one series of ``n_instances`` (for throughput/cancel tests).

    Use as ``generate_corpus(d, (*DEFAULT_SPEC, bulk_patient_spec(500)))``.
    """
    desc = "AX CT" if modality == "CT" else "AX T1"
    return PatientSpec(
        patient_id,
        name,
        None,
        "19750505",
        "O",
        (
            StudySpec(
                date,
                "120000",
                "BULK",
                "ACCBULK",
                "SBULK",
                (SeriesSpec(modality, desc, n_instances, "AX", "CHEST"),),
            ),
        ),
    )


# --------------------------------------------------------------------------------------------
# Description of what was generated
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceInfo:
    sop_class_uid: str
    sop_instance_uid: str
    instance_number: int
    path: Path
    transfer_syntax_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    image_position: tuple[float, float, float]
    image_orientation: tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class SeriesInfo:
    series_instance_uid: str
    series_number: int
    modality: str
    series_description: str
    body_part: str
    frame_of_reference_uid: str
    study_instance_uid: str
    patient_id: str
    instances: tuple[InstanceInfo, ...]

    @property
    def files(self) -> list[Path]:
        return [i.path for i in self.instances]

    @property
    def sop_class_uid(self) -> str:
        return self.instances[0].sop_class_uid


@dataclass(frozen=True)
class StudyInfo:
    study_instance_uid: str
    study_date: str
    study_time: str
    study_id: str
    accession_number: str
    study_description: str
    referring_physician: str
    patient_id: str
    patient_name: str
    series: tuple[SeriesInfo, ...]

    @property
    def instances(self) -> list[InstanceInfo]:
        return [i for s in self.series for i in s.instances]

    @property
    def files(self) -> list[Path]:
        return [i.path for i in self.instances]

    @property
    def modalities_in_study(self) -> list[str]:
        return sorted({s.modality for s in self.series})

    @property
    def sop_classes_in_study(self) -> list[str]:
        return sorted({i.sop_class_uid for i in self.instances})


@dataclass(frozen=True)
class PatientInfo:
    patient_id: str
    patient_name: str  # unicode
    specific_character_set: str | None
    birth_date: str
    sex: str
    studies: tuple[StudyInfo, ...]

    @property
    def series(self) -> list[SeriesInfo]:
        return [s for st in self.studies for s in st.series]

    @property
    def instances(self) -> list[InstanceInfo]:
        return [i for st in self.studies for i in st.instances]


@dataclass(frozen=True)
class Corpus:
    directory: Path
    patients: tuple[PatientInfo, ...]

    @property
    def studies(self) -> list[StudyInfo]:
        return [st for p in self.patients for st in p.studies]

    @property
    def series(self) -> list[SeriesInfo]:
        return [s for st in self.studies for s in st.series]

    @property
    def instances(self) -> list[InstanceInfo]:
        return [i for s in self.series for i in s.instances]

    @property
    def files(self) -> list[Path]:
        return [i.path for i in self.instances]

    def patient(self, patient_id: str) -> PatientInfo:
        for p in self.patients:
            if p.patient_id == patient_id:
                return p
        raise KeyError(patient_id)

    def study(self, study_instance_uid: str) -> StudyInfo:
        for st in self.studies:
            if st.study_instance_uid == study_instance_uid:
                return st
        raise KeyError(study_instance_uid)

    def series_by_uid(self, series_instance_uid: str) -> SeriesInfo:
        for s in self.series:
            if s.series_instance_uid == series_instance_uid:
                return s
        raise KeyError(series_instance_uid)

    def instance(self, sop_instance_uid: str) -> InstanceInfo:
        for i in self.instances:
            if i.sop_instance_uid == sop_instance_uid:
                return i
        raise KeyError(sop_instance_uid)

    def studies_between(self, first: str, last: str) -> list[StudyInfo]:
        """Studies with ``first <= StudyDate <= last`` (YYYYMMDD strings, inclusive)."""
        return [st for st in self.studies if first <= st.study_date <= last]

    def series_with(
        self, *, modality: str | None = None, description: str | None = None
    ) -> list[SeriesInfo]:
        return [
            s
            for s in self.series
            if (modality is None or s.modality == modality)
            and (description is None or s.series_description == description)
        ]


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    """DS value text (at most 16 characters)."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _geometry(
    orientation: str, index: int, n: int
) -> tuple[tuple[float, float, float], tuple[float, float, float, float, float, float]]:
    half = ROWS * PIXEL_SPACING / 2
    offset = (index - (n - 1) / 2) * SLICE_THICKNESS
    if orientation == "AX":
        return (-half, -half, offset), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    if orientation == "SAG":
        return (offset, -half, half), (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    raise ValueError(f"unknown orientation {orientation!r}")


def _pixels(
    modality: str,
    position: tuple[float, float, float],
    orient: tuple[float, float, float, float, float, float],
    seed: int,
) -> bytes:
    """A sphere of radius 10 mm at the origin on a smooth background, as 12-bit unsigned."""
    rx, ry, rz, cx, cy, cz = orient
    if modality == "CT":
        background, inside, air = 1064, 2024, 24  # stored values; intercept -1024 -> HU
    else:
        background, inside, air = 300, 900, 0
    values = array.array("H")
    for r in range(ROWS):
        for c in range(COLUMNS):
            x = position[0] + rx * c * PIXEL_SPACING + cx * r * PIXEL_SPACING
            y = position[1] + ry * c * PIXEL_SPACING + cy * r * PIXEL_SPACING
            z = position[2] + rz * c * PIXEL_SPACING + cz * r * PIXEL_SPACING
            d = math.sqrt(x * x + y * y + z * z)
            if d <= 10.0:
                v = inside
            elif d <= 15.0:
                v = background + ((r * 7 + c * 3 + seed) % 32)
            else:
                v = air + ((r + c + seed) % 8)
            values.append(v)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def _instance_dataset(
    pspec: PatientSpec,
    stspec: StudySpec,
    sspec: SeriesSpec,
    *,
    study_uid: str,
    series_uid: str,
    series_number: int,
    frame_uid: str,
    sop_uid: str,
    index: int,
) -> tuple[Dataset, tuple[float, float, float], tuple[float, float, float, float, float, float]]:
    sop_class = CTImageStorage if sspec.modality == "CT" else MRImageStorage
    position, orient = _geometry(sspec.orientation, index, sspec.n_instances)

    ds = Dataset()
    if pspec.charset:
        ds.SpecificCharacterSet = pspec.charset
    if sspec.modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.InstanceCreationDate = stspec.date
    ds.InstanceCreationTime = stspec.time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = stspec.date
    ds.SeriesDate = stspec.date
    ds.AcquisitionDate = stspec.date
    ds.ContentDate = stspec.date
    ds.StudyTime = stspec.time
    ds.SeriesTime = stspec.time
    ds.AcquisitionTime = stspec.time
    ds.ContentTime = stspec.time
    ds.AccessionNumber = stspec.accession_number
    ds.Modality = sspec.modality
    ds.Manufacturer = "aiodicom"
    ds.InstitutionName = "aiodicom test hospital"
    ds.ReferringPhysicianName = stspec.referring_physician
    ds.StudyDescription = stspec.description
    ds.SeriesDescription = sspec.description
    ds.ManufacturerModelName = "corpus.py"
    ds.PatientName = pspec.name
    ds.PatientID = pspec.patient_id
    ds.PatientBirthDate = pspec.birth_date
    ds.PatientSex = pspec.sex
    ds.BodyPartExamined = sspec.body_part
    ds.SliceThickness = _fmt(SLICE_THICKNESS)
    if sspec.modality == "CT":
        ds.KVP = "120"
    else:
        t2 = "T2" in sspec.description
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "3000" if t2 else "500"
        ds.EchoTime = "90" if t2 else "15"
        ds.EchoTrainLength = "1"
        ds.MagneticFieldStrength = "1.5"
        ds.SpacingBetweenSlices = _fmt(SLICE_THICKNESS)
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = stspec.study_id
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [_fmt(v) for v in position]
    ds.ImageOrientationPatient = [_fmt(v) for v in orient]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _fmt(position[2] if sspec.orientation == "AX" else position[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.PixelSpacing = [_fmt(PIXEL_SPACING), _fmt(PIXEL_SPACING)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if sspec.modality == "CT":
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
    else:
        ds.WindowCenter = "500"
        ds.WindowWidth = "1000"
    ds.PixelData = _pixels(sspec.modality, position, orient, seed=index)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds, position, orient


def generate_corpus(directory: str | Path, spec: Sequence[PatientSpec] = DEFAULT_SPEC) -> Corpus:
    """Write the corpus as Part 10 files under ``directory`` and describe it.

    Layout: ``<directory>/<PatientID>/ST<n>/SE<n>/IM<nnnn>.dcm``.  Calling it twice with the
    same spec gives identical UIDs and identical files.
    """
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    patients: list[PatientInfo] = []
    for pspec in spec:
        studies: list[StudyInfo] = []
        for st_idx, stspec in enumerate(pspec.studies, start=1):
            study_key = f"{pspec.patient_id}/{stspec.accession_number}"
            study_uid = derive_uid(f"study/{study_key}")
            series_infos: list[SeriesInfo] = []
            for se_idx, sspec in enumerate(stspec.series, start=1):
                series_key = f"{study_key}/{se_idx}"
                series_uid = derive_uid(f"series/{series_key}")
                frame_uid = derive_uid(f"frame/{series_key}")
                series_dir = root / pspec.patient_id / f"ST{st_idx}" / f"SE{se_idx}"
                series_dir.mkdir(parents=True, exist_ok=True)
                instances: list[InstanceInfo] = []
                for idx in range(sspec.n_instances):
                    sop_uid = derive_uid(f"instance/{series_key}/{idx + 1}")
                    ds, position, orient = _instance_dataset(
                        pspec,
                        stspec,
                        sspec,
                        study_uid=study_uid,
                        series_uid=series_uid,
                        series_number=se_idx,
                        frame_uid=frame_uid,
                        sop_uid=sop_uid,
                        index=idx,
                    )
                    path = series_dir / f"IM{idx + 1:04d}.dcm"
                    ds.save_as(path, enforce_file_format=True)
                    instances.append(
                        InstanceInfo(
                            sop_class_uid=str(ds.SOPClassUID),
                            sop_instance_uid=sop_uid,
                            instance_number=idx + 1,
                            path=path,
                            transfer_syntax_uid=ExplicitVRLittleEndian,
                            series_instance_uid=series_uid,
                            study_instance_uid=study_uid,
                            patient_id=pspec.patient_id,
                            image_position=position,
                            image_orientation=orient,
                        )
                    )
                series_infos.append(
                    SeriesInfo(
                        series_instance_uid=series_uid,
                        series_number=se_idx,
                        modality=sspec.modality,
                        series_description=sspec.description,
                        body_part=sspec.body_part,
                        frame_of_reference_uid=frame_uid,
                        study_instance_uid=study_uid,
                        patient_id=pspec.patient_id,
                        instances=tuple(instances),
                    )
                )
            studies.append(
                StudyInfo(
                    study_instance_uid=study_uid,
                    study_date=stspec.date,
                    study_time=stspec.time,
                    study_id=stspec.study_id,
                    accession_number=stspec.accession_number,
                    study_description=stspec.description,
                    referring_physician=stspec.referring_physician,
                    patient_id=pspec.patient_id,
                    patient_name=pspec.name,
                    series=tuple(series_infos),
                )
            )
        patients.append(
            PatientInfo(
                patient_id=pspec.patient_id,
                patient_name=pspec.name,
                specific_character_set=pspec.charset,
                birth_date=pspec.birth_date,
                sex=pspec.sex,
                studies=tuple(studies),
            )
        )
    return Corpus(directory=root, patients=tuple(patients))


# --------------------------------------------------------------------------------------------
# Compressed copies
# --------------------------------------------------------------------------------------------

DCMCJPEG = "/usr/bin/dcmcjpeg"
DCMCRLE = "/usr/bin/dcmcrle"


def compressed_copy(
    series: SeriesInfo,
    out_dir: str | Path,
    transfer_syntax: str = RLELossless,
    *,
    new_uids: str | None = None,
) -> SeriesInfo:
    """Write a losslessly compressed copy of ``series`` into ``out_dir``.

    ``transfer_syntax``: RLE Lossless (pydicom's own encoder, no extra package; DCMTK
    ``dcmcrle`` as fallback) or JPEG Lossless SV1 (DCMTK ``/usr/bin/dcmcjpeg``).
    By default the copy keeps the SOP/Series Instance UIDs (lossless: same instances) so it is
    meant for a *different* archive than the uncompressed corpus.  With ``new_uids="some-key"``
    the copy gets its own Series and SOP Instance UIDs (derived from the key, same study), so it
    can sit next to the original in one archive.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    series_uid = (
        derive_uid(f"series-copy/{new_uids}/{series.series_instance_uid}")
        if new_uids
        else series.series_instance_uid
    )
    instances: list[InstanceInfo] = []
    for inst in series.instances:
        ds = dcmread(inst.path)
        sop_uid = inst.sop_instance_uid
        if new_uids:
            sop_uid = derive_uid(f"instance-copy/{new_uids}/{inst.sop_instance_uid}")
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = sop_uid
            ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
            ds.SeriesDescription = f"{ds.SeriesDescription} {_TS_SHORT.get(transfer_syntax, 'C')}"
        path = out / inst.path.name
        if transfer_syntax == RLELossless:
            try:
                ds.compress(RLELossless, generate_instance_uid=False)
                ds.save_as(path, enforce_file_format=True)
            except Exception:  # pragma: no cover - fallback when pydicom cannot encode
                tmp = out / (inst.path.name + ".tmp")
                ds.save_as(tmp, enforce_file_format=True)
                _run_checked([DCMCRLE, str(tmp), str(path)])
                tmp.unlink()
        elif transfer_syntax == JPEGLosslessSV1:
            tmp = out / (inst.path.name + ".tmp")
            ds.save_as(tmp, enforce_file_format=True)
            _run_checked([DCMCJPEG, "+e1", str(tmp), str(path)])
            tmp.unlink()
        else:
            raise ValueError(f"unsupported transfer syntax {transfer_syntax}")
        instances.append(
            replace(
                inst,
                path=path,
                transfer_syntax_uid=transfer_syntax,
                sop_instance_uid=sop_uid,
                series_instance_uid=series_uid,
            )
        )
    return replace(series, series_instance_uid=series_uid, instances=tuple(instances))


_TS_SHORT: dict[str, str] = {RLELossless: "RLE", JPEGLosslessSV1: "JPEGLL"}


def _run_checked(cmd: list[str]) -> None:
    if not Path(cmd[0]).exists():
        raise FileNotFoundError(f"{cmd[0]} is not installed (Debian package dcmtk)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")


# --------------------------------------------------------------------------------------------
# Modality worklist items (for Orthanc's worklist plugin)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorklistItem:
    path: Path
    patient_id: str
    patient_name: str
    accession_number: str
    modality: str
    scheduled_station_ae: str
    scheduled_date: str
    scheduled_time: str
    requested_procedure_id: str
    study_instance_uid: str
    specific_character_set: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


_DEFAULT_WORKLIST: tuple[tuple[str, str, str | None, str, str, str, str], ...] = (
    # patient id, name, charset, accession, modality, date, time
    ("AIO0101", "Brown^Charlie", None, "WL1001", "CT", "20240301", "080000"),
    ("AIO0102", "Müller^Jürgen", "ISO_IR 192", "WL1002", "MR", "20240301", "093000"),
    ("AIO0103", "Smith^Jane", None, "WL1003", "MR", "20240302", "110000"),
)


def generate_worklist(
    directory: str | Path,
    station_ae: str = "AIOSCU",
    items: Iterable[tuple[str, str, str | None, str, str, str, str]] = _DEFAULT_WORKLIST,
) -> list[WorklistItem]:
    """Write Modality Worklist items as ``<accession>.wl`` files (Orthanc worklist plugin)."""
    out = Path(directory).resolve()
    out.mkdir(parents=True, exist_ok=True)
    result: list[WorklistItem] = []
    for pid, name, charset, acc, modality, date, time in items:
        ds = Dataset()
        if charset:
            ds.SpecificCharacterSet = charset
        ds.AccessionNumber = acc
        ds.ReferringPhysicianName = ""
        ds.PatientName = name
        ds.PatientID = pid
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        study_uid = derive_uid(f"worklist/{acc}")
        ds.StudyInstanceUID = study_uid
        ds.RequestedProcedureDescription = f"{modality} EXAM"
        ds.RequestedProcedureID = f"RP{acc}"
        sps = Dataset()
        sps.Modality = modality
        sps.ScheduledStationAETitle = station_ae
        sps.ScheduledProcedureStepStartDate = date
        sps.ScheduledProcedureStepStartTime = time
        sps.ScheduledPerformingPhysicianName = ""
        sps.ScheduledProcedureStepDescription = f"{modality} EXAM"
        sps.ScheduledProcedureStepID = f"SPS{acc}"
        ds.ScheduledProcedureStepSequence = [sps]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(MODALITY_WORKLIST_FIND)
        meta.MediaStorageSOPInstanceUID = UID(derive_uid(f"worklist-file/{acc}"))
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = out / f"{acc}.wl"
        ds.save_as(path, enforce_file_format=True)
        result.append(
            WorklistItem(
                path=path,
                patient_id=pid,
                patient_name=name,
                accession_number=acc,
                modality=modality,
                scheduled_station_ae=station_ae,
                scheduled_date=date,
                scheduled_time=time,
                requested_procedure_id=f"RP{acc}",
                study_instance_uid=study_uid,
                specific_character_set=charset,
            )
        )
    return result


def iter_files(paths: Iterable[Path | InstanceInfo]) -> Iterator[Path]:
    """Accept paths or InstanceInfo objects alike."""
    for p in paths:
        yield p.path if isinstance(p, InstanceInfo) else Path(p)


def copy_files(paths: Iterable[Path | InstanceInfo], dest: Path) -> list[Path]:
    """Copy files into ``dest`` with unique flat names; returns the new absolute paths."""
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for n, src in enumerate(iter_files(paths)):
        target = dest / f"{n:06d}_{src.name}"
        shutil.copyfile(src, target)
        out.append(target.resolve())
    return out


def load_datasets(
    items: Iterable[Path | InstanceInfo], *, stop_before_pixels: bool = True
) -> list[Dataset]:
    """Read files (e.g. ``corpus.instances``) as datasets, e.g. as records for a FindScp."""
    return [dcmread(p, stop_before_pixels=stop_before_pixels) for p in iter_files(items)]
