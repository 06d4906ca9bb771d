"""The benchmark corpus: generated once into ``benchmarks/.work/<profile>/corpus`` and reused.

* ``big``: one CT series of 512x512 16-bit slices (500 in the full profile, about 263 MB);
* ``many``: one series of tiny CT images (10,000 in the full profile), for a C-FIND with that
  many matches;
* ``store_small`` / ``store_large``: objects of about 40 kB and about 50 MB that DCMTK's
  ``storescu`` sends to each storage SCP.

UIDs derive from fixed keys (``peers.corpus.derive_uid``) so that the peers' caches, which are
keyed by the corpus description, stay valid between runs.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from peers.corpus import derive_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from benchmarks import _paths

CORPUS_VERSION = 2


@dataclass(frozen=True)
class SeriesSpec:
    key: str
    patient_id: str
    n: int
    rows: int
    columns: int


@dataclass(frozen=True)
class SeriesRef:
    """A generated series: what queries and retrievals need, and its size on the wire."""

    key: str
    patient_id: str
    study_uid: str
    series_uid: str
    n: int
    rows: int
    columns: int
    directory: str
    dataset_bytes: int  # sum of the data sets (what travels in C-STOREs), File Meta excluded

    @property
    def files(self) -> list[Path]:
        return sorted(Path(self.directory).glob("*.dcm"))

    @property
    def megabytes(self) -> float:
        return self.dataset_bytes / 1e6


@dataclass(frozen=True)
class CorpusSpec:
    big: SeriesSpec
    many: SeriesSpec
    store_small: SeriesSpec
    store_large: SeriesSpec


def spec_for(profile: str) -> CorpusSpec:
    if profile == "full":
        return CorpusSpec(
            big=SeriesSpec("big", "BENCHCT", 500, 512, 512),
            many=SeriesSpec("many", "BENCHMANY", 10_000, 8, 8),
            # 140 x 140 x 2 bytes + header: about 40 kB
            store_small=SeriesSpec("store_small", "BENCHSTORE", 1000, 140, 140),
            # 5000 x 5000 x 2 bytes: 50 MB
            store_large=SeriesSpec("store_large", "BENCHSTORE", 4, 5000, 5000),
        )
    return CorpusSpec(
        big=SeriesSpec("big", "BENCHCT", 20, 512, 512),
        many=SeriesSpec("many", "BENCHMANY", 300, 8, 8),
        store_small=SeriesSpec("store_small", "BENCHSTORE", 50, 140, 140),
        store_large=SeriesSpec("store_large", "BENCHSTORE", 1, 1600, 1600),
    )


@dataclass(frozen=True)
class Corpus:
    big: SeriesRef
    many: SeriesRef
    store_small: SeriesRef
    store_large: SeriesRef

    def to_json(self) -> str:
        return json.dumps({k: asdict(v) for k, v in self.__dict__.items()}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Corpus:
        data = json.loads(text)
        return cls(**{k: SeriesRef(**v) for k, v in data.items()})


def _template(spec: SeriesSpec, study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240110"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"ACC{spec.patient_id}"[:16]
    ds.Modality = "CT"
    ds.Manufacturer = "aiodicom-benchmarks"
    ds.InstitutionName = "aiodicom benchmark hospital"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "BENCHMARK"
    ds.SeriesDescription = f"BENCH {spec.key}"
    ds.PatientName = f"Bench^{spec.key}"
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.SliceThickness = "1"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = derive_uid(f"bench/frame/{spec.key}")
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    return ds


def _dataset_offset(path: Path) -> int:
    """Where the data set starts in a Part 10 file we wrote (File Meta group length first)."""
    with open(path, "rb") as fp:
        head = fp.read(132 + 12)
    (group_length,) = struct.unpack_from("<I", head, 132 + 8)
    return 132 + 12 + group_length


def _generate_series(spec: SeriesSpec, directory: Path) -> SeriesRef:
    study_uid = derive_uid(f"bench/study/{spec.patient_id}")
    series_uid = derive_uid(f"bench/series/{spec.key}")
    directory.mkdir(parents=True, exist_ok=True)
    ds = _template(spec, study_uid, series_uid)
    base = (np.arange(spec.rows * spec.columns, dtype=np.uint32) * 7 % 4096).astype("<u2")
    total = 0
    for index in range(spec.n):
        sop_uid = derive_uid(f"bench/instance/{spec.key}/{index + 1}")
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = ["-180", "-180", str(index)]
        ds.SliceLocation = str(index)
        ds.PixelData = np.roll(base, index).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = directory / f"IM{index + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size - _dataset_offset(path)
    return SeriesRef(
        spec.key, spec.patient_id, study_uid, series_uid, spec.n, spec.rows, spec.columns,
        str(directory), total,
    )


def ensure_corpus(profile: str, log: object = print) -> Corpus:
    """Generate the corpus of ``profile`` ("full" or "quick") unless it is cached."""
    spec = spec_for(profile)
    root = _paths.WORK / profile / "corpus"
    marker = root / "corpus.json"
    key = json.dumps({"version": CORPUS_VERSION, "spec": asdict(spec)}, sort_keys=True)
    key_file = root / "spec.key"
    if marker.exists() and key_file.exists() and key_file.read_text() == key:
        return Corpus.from_json(marker.read_text())
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    refs = {}
    for name, series_spec in asdict(spec).items():
        s = SeriesSpec(**series_spec)
        if callable(log):
            log(f"  generating {s.n} x {s.rows}x{s.columns} ({name}) ...")
        refs[name] = _generate_series(s, root / name)
    corpus = Corpus(**refs)
    marker.write_text(corpus.to_json())
    key_file.write_text(key)
    return corpus


def ensure_corpus_in_child(profile: str) -> Corpus:
    """:func:`ensure_corpus` in a child process: generating 50 MB images leaves a few hundred
    MB in the generating process, and this runner forks every measured client."""
    import os
    import subprocess
    import sys

    code = f"from benchmarks.corpus import ensure_corpus; ensure_corpus({profile!r})"
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=_paths.ROOT,
        env={**os.environ, "PYTHONPATH": str(_paths.ROOT)},
    )
    return ensure_corpus(profile, log=None)


def iter_all_files(corpus: Corpus) -> Iterator[Path]:
    yield from corpus.big.files
    yield from corpus.many.files
