"""The query engine against DCMTK's dcmqrscp: the same synthetic files in both, the same
C-FIND identifiers, the same number of matches at every level of Patient Root and Study Root.

Only keys dcmqrscp indexes are used (it neither matches nor returns SeriesDescription,
ModalitiesInStudy and the like), and no person name differs from a value by case, where
dcmqrscp compares bytes and the engine folds case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from peers.dcmtk import DcmQrScp, find_datasets
from pydicom.dataset import Dataset

from aiodicom.query import QueryModel
from aiodicom.server import InstanceIndex, find
from aiodicom.testing import write_synthetic

pytestmark = pytest.mark.interop

_MODELS = {"patient": QueryModel.PATIENT_ROOT, "study": QueryModel.STUDY_ROOT}


def _ours(index: InstanceIndex, model: str, keys: dict[str, str]) -> list[Dataset]:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return [r for batch in find(index, ds, _MODELS[model], batch_size=3) for r in batch]


def test_match_counts_agree_with_dcmqrscp(
    tmp_path: Path, dcmqrscp_factory: Callable[..., DcmQrScp]
) -> None:
    files = write_synthetic(tmp_path / "files", rows=16, columns=16, slices=4)
    index = InstanceIndex(tmp_path / "files", database=":memory:")
    index.scan_all()
    server = dcmqrscp_factory(load_corpus=False)
    server.load(files)
    runs = 0

    def compare(model: str, keys: dict[str, str]) -> list[Dataset]:
        nonlocal runs
        runs += 1
        theirs = find_datasets(
            server.host, server.port, server.ae_title, keys, model=model,  # type: ignore[arg-type]
            calling_ae="AIOTEST", extract_dir=tmp_path / f"rsp{runs:03d}",
        )
        ours = _ours(index, model, keys)
        assert len(ours) == len(theirs), (model, keys)
        unique = {
            "PATIENT": "PatientID",
            "STUDY": "StudyInstanceUID",
            "SERIES": "SeriesInstanceUID",
            "IMAGE": "SOPInstanceUID",
        }[keys["QueryRetrieveLevel"]]
        if unique in keys:
            assert sorted(str(r.get(unique)) for r in ours) == sorted(
                str(r.get(unique)) for r in theirs
            ), (model, keys)
        return ours

    patient_queries: list[dict[str, str]] = [
        {"PatientID": ""},
        {"PatientID": "AIO-0001"},
        {"PatientID": "AIO-000*"},
        {"PatientID": "AIO-000?", "PatientName": ""},
        {"PatientID": "", "PatientName": "Doe*"},
        {"PatientID": "", "PatientName": "S*"},
        {"PatientID": "", "PatientSex": "F"},
        {"PatientID": "", "PatientBirthDate": "19700101"},
        {"PatientID": "", "PatientBirthDate": "19650101-19751231"},
        {"PatientID": "", "PatientBirthDate": "-19751231"},
    ]
    for keys in patient_queries:
        compare("patient", {"QueryRetrieveLevel": "PATIENT", **keys})

    study_queries: list[dict[str, str]] = [
        {"StudyInstanceUID": ""},
        {"StudyInstanceUID": "", "StudyDate": "20240105"},
        {"StudyInstanceUID": "", "StudyDate": "20240105-20240312"},
        {"StudyInstanceUID": "", "StudyDate": "20240106-"},
        {"StudyInstanceUID": "", "StudyDate": "-20240105"},
        {"StudyInstanceUID": "", "StudyTime": "0800-1100"},
        {"StudyInstanceUID": "", "AccessionNumber": "ACC1002"},
        {"StudyInstanceUID": "", "AccessionNumber": "ACC?00?"},
        {"StudyInstanceUID": "", "StudyID": "S4*"},
        {"StudyInstanceUID": "", "PatientID": "AIO-0004"},
        {"StudyInstanceUID": "", "PatientName": "Doe^John", "StudyDate": "20240312"},
    ]
    for keys in study_queries:
        studies = compare("study", {"QueryRetrieveLevel": "STUDY", **keys})
    studies = _ours(index, "study", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                                     "PatientID": ""})
    for patient in _ours(index, "patient", {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}):
        compare("patient", {"QueryRetrieveLevel": "STUDY", "PatientID": str(patient.PatientID),
                            "StudyInstanceUID": ""})
        compare("patient", {"QueryRetrieveLevel": "STUDY", "PatientID": str(patient.PatientID),
                            "StudyInstanceUID": "", "StudyDate": "20240101-"})

    for study in studies:
        uid = str(study.StudyInstanceUID)
        pid = str(study.PatientID)
        for model, parents in (("study", {}), ("patient", {"PatientID": pid})):
            series_keys = {"QueryRetrieveLevel": "SERIES", **parents, "StudyInstanceUID": uid}
            series = compare(model, {**series_keys, "SeriesInstanceUID": ""})
            compare(model, {**series_keys, "SeriesInstanceUID": "", "Modality": "MR"})
            compare(model, {**series_keys, "SeriesInstanceUID": "", "SeriesNumber": "2"})
            for one in series:
                image_keys = {
                    "QueryRetrieveLevel": "IMAGE", **parents, "StudyInstanceUID": uid,
                    "SeriesInstanceUID": str(one.SeriesInstanceUID),
                }
                compare(model, {**image_keys, "SOPInstanceUID": ""})
                compare(model, {**image_keys, "SOPInstanceUID": "", "InstanceNumber": "3"})
    assert runs > 100
