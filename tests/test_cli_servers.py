"""``aiodicom qrscp`` and ``aiodicom storescp`` as subprocesses, driven by DCMTK's tools:
they serve, receive, and stop on SIGTERM with a summary and exit code 0."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from peers import require_executable
from peers.aiodicom_cli import aiodicom, qrscp, storescp
from peers.dcmtk import (
    ECHOSCU,
    FINDSCU,
    GETSCU,
    MOVESCU,
    STORESCU,
    echoscu,
    find_datasets,
    getscu,
    movescu,
)
from peers.dcmtk import storescu as dcmtk_storescu

from aiodicom.testing.synthetic import write_synthetic

PATIENT = "AIO-0001"  # the synthetic CT (12 slices) and MR (3 x 12) studies: 48 instances


@pytest.fixture
def dcmtk() -> None:
    for tool in (ECHOSCU, FINDSCU, MOVESCU, GETSCU, STORESCU):
        require_executable(tool)


@pytest.mark.interop
def test_qrscp_serves_dcmtk_tools_and_stops_on_sigterm(dcmtk: None, tmp_path: Path) -> None:
    received = tmp_path / "received"
    with storescp(received, tmp_path, ae_title="MOVEDEST") as destination:
        server = qrscp(tmp_path / "archive", tmp_path, ae_title="QR",
                       move_destinations=[("MOVEDEST", "127.0.0.1", destination.port)]).start()
        try:
            assert echoscu(server.host, server.port, "QR").returncode == 0
            studies = find_datasets(
                server.host, server.port, "QR",
                {"QueryRetrieveLevel": "STUDY", "PatientID": PATIENT, "StudyDate": "",
                 "StudyInstanceUID": ""},
                extract_dir=tmp_path / "find",
            )
            assert sorted(s.StudyDate for s in studies) == ["20240105", "20240312"]
            moved = movescu(server.host, server.port, "QR", "MOVEDEST",
                            {"QueryRetrieveLevel": "PATIENT", "PatientID": PATIENT},
                            model="patient")
            assert moved.returncode == 0, moved.stderr
            for study in studies:
                got = getscu(server.host, server.port, "QR",
                             {"QueryRetrieveLevel": "STUDY",
                              "StudyInstanceUID": study.StudyInstanceUID},
                             output_dir=tmp_path / "got")
                assert got.returncode == 0, got.stderr
            assert len(list((tmp_path / "got").iterdir())) == 48
            # C-STORE into the archive: a new patient's files
            extra = write_synthetic(tmp_path / "more", seed="other", rows=8, columns=8, slices=2)
            stored = dcmtk_storescu(server.host, server.port, "QR", extra)
            assert stored.returncode == 0, stored.stderr
        finally:
            code = server.stop()
        assert code == 0, server.log_text()
    log = server.log_text()
    assert re.search(r"wrote 120 synthetic instances", log), log
    assert re.search(rf"stopped: served 120 instances; {len(extra)} received by C-STORE", log)
    assert len(list(received.rglob("*.dcm"))) == 48
    assert "stopped: received 48 instances of 2 studies" in destination.log_text()


@pytest.mark.interop
def test_qrscp_serves_an_existing_directory_without_synthetic(
    dcmtk: None, tmp_path: Path
) -> None:
    files = write_synthetic(tmp_path / "archive", rows=8, columns=8, slices=2)
    with qrscp(tmp_path / "archive", tmp_path, synthetic=False) as server:
        patients = find_datasets(server.host, server.port, "AIOQR",
                                 {"QueryRetrieveLevel": "PATIENT", "PatientID": ""},
                                 model="patient", extract_dir=tmp_path / "find")
    assert len(patients) == len({p.PatientID for p in patients}) >= 3
    assert f"indexed {len(files)} instances" in server.log_text()


@pytest.mark.interop
def test_storescp_receives_from_storescu_and_summarises(dcmtk: None, tmp_path: Path) -> None:
    files = write_synthetic(tmp_path / "send", rows=8, columns=8, slices=3)
    server = storescp(tmp_path / "in", tmp_path, ae_title="STORE").start()
    try:
        done = dcmtk_storescu(server.host, server.port, "STORE", files)
        assert done.returncode == 0, done.stderr
    finally:
        code = server.stop()
    assert code == 0
    assert len(list((tmp_path / "in").rglob("*.dcm"))) == len(files)
    studies = len({f.parent.parent for f in files})
    assert f"stopped: received {len(files)} instances of {studies} studies" in server.log_text()


def test_server_help_is_complete() -> None:
    for command, options in {
        "qrscp": ["PORT", "DIR", "--move-dest", "--synthetic", "-aet", "--listen-host",
                  "--tls-cert", "--tls-key", "--tls-ca", "mutual TLS", "--max-pdu", "exit codes"],
        "storescp": ["PORT", "--output", "-aet", "--listen-host", "--tls-cert", "exit codes"],
    }.items():
        done = aiodicom(command, "--help")
        assert done.returncode == 0
        for option in options:
            assert option in done.stdout, (command, option)


def test_qrscp_bad_move_destination_is_a_usage_error(tmp_path: Path) -> None:
    done = aiodicom("qrscp", "0", str(tmp_path), "--move-dest", "VIEWER")
    assert done.returncode == 2
    assert "AET=HOST:PORT" in done.stderr


def test_qrscp_directory_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = aiodicom("qrscp", "0", str(tmp_path / "file"))
    assert done.returncode == 2
    assert "is not a directory" in done.stderr and "Traceback" not in done.stderr
