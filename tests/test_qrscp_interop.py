"""The embedded Q/R SCP (QRServer) against other implementations' SCUs: DCMTK findscu, movescu
and getscu, and pynetdicom.

The tools run in worker threads (they are blocking subprocesses or a blocking library), so the
event loop of the test, which runs the server, keeps serving meanwhile."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from peers.dcmtk import DcmQrScp, StoreScp, find_datasets, findscu, getscu, movescu
from pydicom import dcmread
from pydicom.dataset import Dataset

from aiodicom.server import InstanceIndex, QRServer
from aiodicom.testing import write_synthetic
from aiodicom.testing.pytest_plugin import QRScp
from aiodicom.testing.synthetic import PatientSpec, SeriesSpec, StudySpec, synthetic_instances

pytestmark = pytest.mark.interop

_UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
           "IMAGE": "SOPInstanceUID"}


async def _in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


def _stored(index: InstanceIndex, uid: str) -> bytes:
    stored = index.get(uid)
    assert stored is not None, uid
    return bytes(index.read_data(stored))


def _assert_same_bytes(index: InstanceIndex, files: list[Path], expected: int) -> None:
    """Each received Part 10 file ends with the data set exactly as stored in the index."""
    assert len(files) == expected
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert path.read_bytes().endswith(_stored(index, uid)), path


def _study_of(index: InstanceIndex, patient_id: str = "AIO-0001") -> tuple[str, int]:
    rows = index.connection.execute(
        "SELECT StudyInstanceUID, COUNT(*) FROM instances WHERE PatientID = ? "
        "GROUP BY StudyInstanceUID ORDER BY StudyInstanceUID", (patient_id,)
    ).fetchall()
    return str(rows[0][0]), int(rows[0][1])


async def test_find_counts_agree_with_dcmqrscp(
    tmp_path: Path, dcmqrscp_factory: Callable[..., DcmQrScp]
) -> None:
    files = write_synthetic(tmp_path / "files", rows=16, columns=16, slices=4)
    index = InstanceIndex(tmp_path / "files", database=":memory:")
    index.scan_all()
    theirs_server = dcmqrscp_factory(load_corpus=False)
    theirs_server.load(files)
    runs = 0
    async with QRServer("AIOQR", index) as ours_server:

        async def compare(
            model: str, keys: dict[str, str], args: tuple[str, ...] = ()
        ) -> list[Dataset]:
            nonlocal runs
            runs += 1
            results = []
            for name, (port, ae) in (
                ("ours", (ours_server.listen_port, ours_server.ae_title)),
                ("theirs", (theirs_server.port, theirs_server.ae_title)),
            ):
                results.append(await _in_thread(
                    find_datasets, "127.0.0.1", port, ae, keys, model=model,
                    calling_ae="AIOTEST", extract_dir=tmp_path / f"{name}{runs:03d}",
                    args=args,
                ))
            ours, theirs = results
            assert len(ours) == len(theirs), (model, keys)
            unique = _UNIQUE[keys["QueryRetrieveLevel"]]
            assert sorted(str(r.get(unique)) for r in ours) == sorted(
                str(r.get(unique)) for r in theirs), (model, keys)
            return ours

        for keys in (
            {"PatientID": ""}, {"PatientID": "AIO-0001"}, {"PatientID": "AIO-000*"},
            {"PatientID": "AIO-000?", "PatientName": ""}, {"PatientID": "", "PatientName": "S*"},
            {"PatientID": "", "PatientSex": "F"},
            {"PatientID": "", "PatientBirthDate": "19650101-19751231"},
        ):
            patients = await compare("patient", {"QueryRetrieveLevel": "PATIENT", **keys})
        for keys in (
            {"StudyInstanceUID": ""}, {"StudyInstanceUID": "", "StudyDate": "20240105-20240312"},
            {"StudyInstanceUID": "", "StudyDate": "20240106-"},
            {"StudyInstanceUID": "", "StudyTime": "0800-1100"},
            {"StudyInstanceUID": "", "AccessionNumber": "ACC?00?"},
            {"StudyInstanceUID": "", "PatientID": "AIO-0004"},
            {"StudyInstanceUID": "", "PatientName": "Doe^John", "StudyDate": "20240312"},
        ):
            studies = await compare("study", {"QueryRetrieveLevel": "STUDY", **keys})
        studies = await compare("study", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                                          "PatientID": ""})
        patients = await compare("patient", {"QueryRetrieveLevel": "PATIENT", "PatientID": ""})
        assert (len(patients), len(studies)) == (4, 6)
        for patient in patients:
            await compare("patient", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                                      "PatientID": str(patient.PatientID)})
        # Patient/Study Only ("-O" after the helper's "-P": the last model option wins).
        psonly = ("-O",)
        await compare("patient", {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, psonly)
        await compare("patient", {"QueryRetrieveLevel": "PATIENT", "PatientID": "",
                                  "PatientSex": "M"}, psonly)
        for patient in patients:
            await compare("patient", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                                      "PatientID": str(patient.PatientID)}, psonly)
        for study in studies:
            uid, pid = str(study.StudyInstanceUID), str(study.PatientID)
            for model, parents in (("study", {}), ("patient", {"PatientID": pid})):
                above = {**parents, "StudyInstanceUID": uid}
                series = await compare(model, {"QueryRetrieveLevel": "SERIES", **above,
                                               "SeriesInstanceUID": ""})
                await compare(model, {"QueryRetrieveLevel": "SERIES", **above,
                                      "SeriesInstanceUID": "", "Modality": "MR"})
                one = series[0]
                image_keys = {"QueryRetrieveLevel": "IMAGE", **above,
                              "SeriesInstanceUID": str(one.SeriesInstanceUID)}
                await compare(model, {**image_keys, "SOPInstanceUID": ""})
                await compare(model, {**image_keys, "SOPInstanceUID": "", "InstanceNumber": "3"})
    assert runs > 50


async def test_movescu_to_storescp_receives_the_stored_bytes(
    tmp_path: Path, aiodicom_qrscp: QRScp, storescp_factory: Callable[..., StoreScp]
) -> None:
    store = storescp_factory()
    aiodicom_qrscp.add_move_destination(store.ae_title, store.host, store.port)
    study, count = _study_of(aiodicom_qrscp.index)
    done = await _in_thread(
        movescu, aiodicom_qrscp.host, aiodicom_qrscp.port, aiodicom_qrscp.ae_title,
        store.ae_title, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study},
        args=["-v"],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_same_bytes(aiodicom_qrscp.index, store.received_files(), count)
    # Patient Root, at SERIES level, to the same destination.
    store.clear()
    series = aiodicom_qrscp.index.connection.execute(
        "SELECT SeriesInstanceUID, COUNT(*) FROM instances WHERE StudyInstanceUID = ? "
        "GROUP BY SeriesInstanceUID", (study,)).fetchone()
    done = await _in_thread(
        movescu, aiodicom_qrscp.host, aiodicom_qrscp.port, aiodicom_qrscp.ae_title,
        store.ae_title, {"QueryRetrieveLevel": "SERIES", "PatientID": "AIO-0001",
                         "StudyInstanceUID": study, "SeriesInstanceUID": str(series[0])},
        model="patient",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_same_bytes(aiodicom_qrscp.index, store.received_files(), int(series[1]))


async def test_movescu_to_an_unknown_destination_gets_a801(aiodicom_qrscp: QRScp) -> None:
    study, _ = _study_of(aiodicom_qrscp.index)
    done = await _in_thread(
        movescu, aiodicom_qrscp.host, aiodicom_qrscp.port, aiodicom_qrscp.ae_title,
        "NOWHERE", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}, args=["-v"],
    )
    output = done.stdout + done.stderr
    assert "Refused: MoveDestinationUnknown" in output, output


async def test_getscu_receives_the_stored_bytes(tmp_path: Path, aiodicom_qrscp: QRScp) -> None:
    study, count = _study_of(aiodicom_qrscp.index, "AIO-0002")
    done = await _in_thread(
        getscu, aiodicom_qrscp.host, aiodicom_qrscp.port, aiodicom_qrscp.ae_title,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}, output_dir=tmp_path / "got",
        args=["+B"],  # bit-preserving: the file holds the data set as it arrived
    )
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(p for p in (tmp_path / "got").iterdir() if p.is_file())
    _assert_same_bytes(aiodicom_qrscp.index, files, count)


def _pynetdicom_get_implicit_only(port: int, study_uid: str) -> tuple[list[Any], list[int]]:
    from pydicom.uid import ImplicitVRLittleEndian
    from pynetdicom import AE, build_role
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        CTImageStorage,
        MRImageStorage,
        StudyRootQueryRetrieveInformationModelGet,
    )

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for storage in (MRImageStorage, CTImageStorage):
        ae.add_requested_context(storage, [ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="AIOQR", ext_neg=[
        build_role(MRImageStorage, scp_role=True), build_role(CTImageStorage, scp_role=True)])
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        responses = [(s, i) for s, i in assoc.send_c_get(
            query, StudyRootQueryRetrieveInformationModelGet) if s]
    finally:
        assoc.release()
    final, identifier = responses[-1]
    counts = [int(final.get(k, -1)) for k in (
        "Status", "NumberOfCompletedSuboperations", "NumberOfFailedSuboperations")]
    failed = list(identifier.FailedSOPInstanceUIDList) if identifier is not None else []
    return failed, counts


async def test_get_without_a_context_in_the_stored_syntax_fails_the_sub_operations(
    aiodicom_qrscp: QRScp,
) -> None:
    # The stored data sets are Explicit VR Little Endian; a requestor accepting only Implicit
    # VR for storage gets none of them: the SCP does not re-encode, the sub-operations fail.
    study, count = _study_of(aiodicom_qrscp.index, "AIO-0002")
    failed, counts = await _in_thread(_pynetdicom_get_implicit_only, aiodicom_qrscp.port, study)
    assert counts == [0xB000, 0, count]
    expected = aiodicom_qrscp.index.connection.execute(
        "SELECT SOPInstanceUID FROM instances WHERE StudyInstanceUID = ?", (study,)).fetchall()
    assert sorted(failed) == sorted(str(r[0]) for r in expected)


async def test_findscu_cancel_ends_with_fe00(tmp_path: Path) -> None:
    patients = (PatientSpec("AIO-C", "Cancel^Me", None, "19700101", "O", (
        StudySpec("20240101", "100000", "CANCEL", "ACC-C", "C1", "",
                  (SeriesSpec("CT", "AX", "AX", "HEAD"),)),
    )),)
    with InstanceIndex() as index:
        for instance in synthetic_instances(patients, rows=4, columns=4, slices=600):
            index.store(instance)
        study = index.connection.execute("SELECT StudyInstanceUID, SeriesInstanceUID "
                                         "FROM instances LIMIT 1").fetchone()
        async with QRServer("AIOQR", index) as server:
            done = await _in_thread(
                findscu, "127.0.0.1", server.listen_port, "AIOQR",
                {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": str(study[0]),
                 "SeriesInstanceUID": str(study[1]), "SOPInstanceUID": ""},
                extract_dir=tmp_path / "rsp", args=["--cancel", "1", "-v"],
            )
            output = done.stdout + done.stderr
            assert done.returncode == 0, output
            received = len(list((tmp_path / "rsp").glob("rsp*.dcm")))
            assert 1 <= received < 600, output
            assert "cancel" in output.lower(), output


def _pynetdicom_find_and_get(port: int, study_uid: str) -> tuple[int, int, list[Any]]:
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        CTImageStorage,
        MRImageStorage,
        PatientStudyOnlyQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
    )

    received: list[Any] = []

    def on_store(event: Any) -> int:
        received.append((event.request.AffectedSOPInstanceUID, bytes(event.request.DataSet
                                                                     .getvalue())))
        return 0x0000

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(PatientStudyOnlyQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="AIOQR",
                         ext_neg=[build_role(MRImageStorage, scp_role=True),
                                  build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        studies = [i for s, i in assoc.send_c_find(query,
                                                    StudyRootQueryRetrieveInformationModelFind)
                   if s and s.Status in (0xFF00, 0xFF01)]
        query = Dataset()
        query.QueryRetrieveLevel = "PATIENT"
        query.PatientID = ""
        patients = [i for s, i in assoc.send_c_find(
            query, PatientStudyOnlyQueryRetrieveInformationModelFind)
            if s and s.Status in (0xFF00, 0xFF01)]
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        statuses = [s.Status for s, _ in assoc.send_c_get(
            query, StudyRootQueryRetrieveInformationModelGet) if s]
        assert statuses[-1] == 0x0000, statuses
    finally:
        assoc.release()
    return len(studies), len(patients), received


async def test_pynetdicom_finds_and_gets(aiodicom_qrscp: QRScp) -> None:
    study, count = _study_of(aiodicom_qrscp.index)
    studies, patients, received = await _in_thread(
        _pynetdicom_find_and_get, aiodicom_qrscp.port, study)
    assert (studies, patients) == (6, 4)
    assert len(received) == count
    for uid, data in received:
        assert data == _stored(aiodicom_qrscp.index, str(uid))
