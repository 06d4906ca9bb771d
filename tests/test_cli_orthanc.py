"""The ``aiodicom`` subcommands (store, echo, find, get, move, retrieve) as subprocesses against
Orthanc: what the command line stores there is found, retrieved by C-GET and by C-MOVE to our
own storage SCP or to another AE; a destination Orthanc does not know fails with exit code 3."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from peers import free_port
from peers.aiodicom_cli import aiodicom, library_find, peer_args, storescp
from pydicom import Dataset

from aiodicom.testing.synthetic import write_synthetic

pytestmark = pytest.mark.interop

PATIENT = "AIO-0001"  # CT (1 series) and MR (3 series); 3 slices each here: 12 instances


@pytest.fixture
def orthanc(
    orthanc_factory: Callable[..., Any], tmp_path: Path
) -> tuple[Any, int, list[Path]]:
    """An empty Orthanc knowing AIODICOM at a free port as a C-MOVE destination, the port, and
    the synthetic files the test stores there first."""
    our_port = free_port()
    server = orthanc_factory(load_corpus=False, extra_config={"DefaultEncoding": "Utf8"},
                             modalities={"AIODICOM": ("AIODICOM", "127.0.0.1", our_port)})
    files = write_synthetic(tmp_path / "synthetic", rows=8, columns=8, slices=3)
    return server, our_port, files


def test_store_echo_find_get_and_move_with_orthanc(
    orthanc: tuple[Any, int, list[Path]], tmp_path: Path,
) -> None:
    server, our_port, files = orthanc
    patient_files = len([f for f in files if f.is_relative_to(files[0].parents[2])])
    stored = aiodicom("store", *peer_args(server), str(files[0].parents[3]))
    assert stored.returncode == 0, stored.stderr
    assert f"{len(files)} stored, 0 failed" in stored.stderr
    assert server.statistics()["CountInstances"] == len(files)

    echo = aiodicom("echo", *peer_args(server))
    assert echo.returncode == 0 and "success" in echo.stdout, echo.stderr

    as_json = aiodicom("find", *peer_args(server), "-k", f"PatientID={PATIENT}",
                       "-k", "StudyDate", "--json")
    assert as_json.returncode == 0, as_json.stderr
    loaded = [Dataset.from_json(item) for item in json.loads(as_json.stdout)]
    expected = library_find(server, PatientID=PATIENT, StudyDate=None)
    assert len(expected) == 2
    key = "StudyInstanceUID"
    assert sorted(loaded, key=lambda d: d[key].value) == sorted(expected,
                                                               key=lambda d: d[key].value)
    table = aiodicom("find", *peer_args(server), "-L", "SERIES", "-k", f"PatientID={PATIENT}",
                     "-k", "Modality", "-k", "SeriesDescription")
    assert table.returncode in (0, 1), table.stderr
    assert "AX T1" in table.stdout and "4 matches" in table.stderr
    # Orthanc grants no relational queries: an IMAGE query without the series is refused
    # before it is sent, saying why; without --relational, the levels are walked.
    relational = aiodicom("find", *peer_args(server), "-L", "IMAGE",
                          "-k", f"StudyInstanceUID={expected[0].StudyInstanceUID}",
                          "-k", "SOPInstanceUID", "--relational")
    assert relational.returncode == 2
    assert "did not accept relational queries" in relational.stderr
    cancelled = aiodicom("find", *peer_args(server), "-L", "IMAGE",
                         "-k", f"PatientID={PATIENT}", "-k", "SOPInstanceUID",
                         "--cancel-after", "1", "--json")
    assert cancelled.returncode in (0, 1), cancelled.stderr
    assert len(json.loads(cancelled.stdout)) == 1

    got = aiodicom("get", *peer_args(server), "-L", "SERIES", "-k", f"PatientID={PATIENT}",
                   "-k", "Modality=CT", "-o", str(tmp_path / "got"))
    assert got.returncode == 0, got.stderr
    assert "C-GET into" in got.stderr and "3 completed, 0 failed, 0 warning" in got.stderr
    assert len(list((tmp_path / "got").rglob("*.dcm"))) == 3

    moved = aiodicom("move", *peer_args(server), "-P", "-L", "PATIENT",
                     "-k", f"PatientID={PATIENT}", "--our-port", str(our_port),
                     "-o", str(tmp_path / "moved"))
    assert moved.returncode == 0, moved.stderr
    assert f"{patient_files} completed, 0 failed" in moved.stderr
    assert len(list((tmp_path / "moved").rglob("*.dcm"))) == patient_files


def test_move_to_another_ae_and_retrieve_by_peers_toml(
    orthanc: tuple[Any, int, list[Path]], tmp_path: Path,
) -> None:
    server, our_port, files = orthanc
    server.upload(files)
    with storescp(tmp_path / "in", tmp_path, ae_title="VIEWER") as viewer, \
            server.temporary_modality("VIEWER", "VIEWER", viewer.host, viewer.port):
        moved = aiodicom("move", *peer_args(server), "-k", f"PatientID={PATIENT}",
                         "--dest", "VIEWER")
    assert moved.returncode == 0, moved.stderr
    assert "to VIEWER: 12 completed, 0 failed" in moved.stderr
    assert len(list((tmp_path / "in").rglob("*.dcm"))) == 12, viewer.log_text()
    config = tmp_path / "peers.toml"
    config.write_text(f'[orthanc]\nhost = "{server.host}"\nport = {server.port}\n'
                      f'ae_title = "{server.ae_title}"\nmethod = "move"\n'
                      f'our_port = {our_port}\n')
    env = {"AIODICOM_PEERS": str(config)}
    retrieved = aiodicom("retrieve", "orthanc", "-k", f"PatientID={PATIENT}",
                         "-o", str(tmp_path / "retrieved"), env=env)
    assert retrieved.returncode == 0, retrieved.stderr
    assert "C-MOVE into" in retrieved.stderr and "12 completed" in retrieved.stderr
    as_get = aiodicom("retrieve", "orthanc", "--method", "get", "-k", f"PatientID={PATIENT}",
                      "-o", str(tmp_path / "as-get"), env=env)
    assert as_get.returncode == 0, as_get.stderr
    assert "C-GET into" in as_get.stderr and "12 completed" in as_get.stderr
    assert len(list((tmp_path / "retrieved").rglob("*.dcm"))) == 12
    assert len(list((tmp_path / "as-get").rglob("*.dcm"))) == 12


def test_move_to_a_destination_orthanc_does_not_know_fails_with_code_3(
    orthanc: tuple[Any, int, list[Path]],
) -> None:
    server, _, files = orthanc
    server.upload(files[:3])
    done = aiodicom("move", *peer_args(server), "-k", f"PatientID={PATIENT}",
                    "--dest", "NOBODY")
    assert done.returncode == 3, done.stderr  # Orthanc answers C000, not A801
    assert "Traceback" not in done.stderr and "to NOBODY" in done.stderr
