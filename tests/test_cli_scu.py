"""``aiodicom echo/find/move/get/store`` end to end, as subprocesses, against DCMTK dcmqrscp and
storescp and against the embedded Q/R SCP started as ``aiodicom qrscp`` (also a subprocess);
exit codes, one-line errors, peers.toml, and the help of each subcommand."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import free_port
from peers.aiodicom_cli import CliServer, aiodicom, library_find, peer_args, qrscp, storescp
from pydicom import Dataset, dcmread

from aiodicom.testing.synthetic import write_synthetic

PATIENT = "AIO-0001"  # CT (1 series) and MR (3 series); 3 slices each here: 12 instances


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_synthetic(tmp_path_factory.mktemp("cli-synthetic"), rows=8, columns=8, slices=3)


@pytest.fixture
def pacs(
    request: pytest.FixtureRequest, files: list[Path], tmp_path: Path,
    dcmqrscp_factory: Callable[..., Any],
) -> Iterator[tuple[Any, int]]:
    """(the peer: .host .port .ae_title, the port our move destination AIODICOM listens on)."""
    our_port = free_port()
    destinations = [("AIODICOM", "127.0.0.1", our_port)]
    if request.param == "dcmqrscp":
        server = dcmqrscp_factory(load_corpus=False, move_destinations=destinations)
        server.load(files)
        yield server, our_port
        return
    archive = tmp_path / "archive"
    for file in files:  # the files, as DIR holds them for 'aiodicom qrscp'
        target = archive / file.relative_to(Path(*files[0].parts[:-4]))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())
    embedded = qrscp(archive, tmp_path, ae_title="AIOQR", move_destinations=destinations,
                     synthetic=False).start()
    try:
        yield embedded, our_port
    finally:
        assert embedded.stop() == 0, embedded.log_text()


both = pytest.mark.parametrize("pacs", ["dcmqrscp", "embedded"], indirect=True)
pytestmark = pytest.mark.interop


@both
def test_echo(pacs: tuple[Any, int]) -> None:
    done = aiodicom("echo", *peer_args(pacs[0]))
    assert done.returncode == 0, done.stderr
    assert "success" in done.stdout


@both
def test_find_table_json_and_files(pacs: tuple[Any, int], tmp_path: Path) -> None:
    server, _ = pacs
    table = aiodicom("find", *peer_args(server), "-k", f"PatientID={PATIENT}", "-k", "StudyDate")
    assert table.returncode == 0, table.stderr
    expected = library_find(server, PatientID=PATIENT, StudyDate=None)
    assert len(expected) == 2
    for study in expected:
        assert study.StudyInstanceUID in table.stdout
    assert "20240105" in table.stdout and "20240312" in table.stdout
    # --json: PS3.18 F.2, loading back into Datasets equal to the matches
    as_json = aiodicom("find", *peer_args(server), "-k", f"PatientID={PATIENT}", "-k",
                       "StudyDate", "--json")
    assert as_json.returncode == 0, as_json.stderr
    loaded = [Dataset.from_json(item) for item in json.loads(as_json.stdout)]
    key = "StudyInstanceUID"
    assert sorted(loaded, key=lambda d: d[key].value) == sorted(expected,
                                                               key=lambda d: d[key].value)
    # -o DIR: one DICOM file per match
    written = aiodicom("find", *peer_args(server), "-k", f"PatientID={PATIENT}",
                       "-o", str(tmp_path / "rsp"))
    assert written.returncode == 0, written.stderr
    uids = sorted(dcmread(p).StudyInstanceUID for p in (tmp_path / "rsp").glob("rsp*.dcm"))
    assert uids == sorted(d.StudyInstanceUID for d in expected)


@both
def test_find_series_by_keys_above_the_level_and_cancel(pacs: tuple[Any, int]) -> None:
    server, _ = pacs
    done = aiodicom("find", *peer_args(server), "-L", "SERIES", "-k", f"PatientID={PATIENT}",
                    "-k", "Modality=MR", "--json")
    assert done.returncode in (0, 1), done.stderr
    series = [Dataset.from_json(item) for item in json.loads(done.stdout)]
    assert len(series) == 3 and {s.Modality for s in series} == {"MR"}
    uid = series[0]
    cancelled = aiodicom("find", *peer_args(server), "-L", "IMAGE",
                         "-k", f"StudyInstanceUID={uid.StudyInstanceUID}",
                         "-k", f"SeriesInstanceUID={uid.SeriesInstanceUID}",
                         "--cancel-after", "1", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert len(json.loads(cancelled.stdout)) == 1



@both
def test_get_by_the_unique_keys_of_a_series(pacs: tuple[Any, int], tmp_path: Path) -> None:
    server, _ = pacs
    found = aiodicom("find", *peer_args(server), "-L", "SERIES", "-k", f"PatientID={PATIENT}",
                     "-k", "Modality=CT", "--json")
    (series,) = [Dataset.from_json(item) for item in json.loads(found.stdout)]
    got = aiodicom("get", *peer_args(server), "-L", "SERIES",
                   "-k", f"StudyInstanceUID={series.StudyInstanceUID}",
                   "-k", f"SeriesInstanceUID={series.SeriesInstanceUID}",
                   "-o", str(tmp_path / "got"))
    assert got.returncode == 0, got.stderr
    assert "3 completed, 0 failed, 0 warning" in got.stderr
    assert len(list((tmp_path / "got").rglob("*.dcm"))) == 3


@both
def test_move_and_get_write_the_instances(pacs: tuple[Any, int], tmp_path: Path) -> None:
    server, our_port = pacs
    moved = aiodicom("move", *peer_args(server), "-k", f"PatientID={PATIENT}",
                     "--our-port", str(our_port), "-o", str(tmp_path / "moved"))
    assert moved.returncode == 0, moved.stderr
    assert len(list((tmp_path / "moved").rglob("*.dcm"))) == 12
    assert "12 completed, 0 failed, 0 warning" in moved.stderr
    got = aiodicom("get", *peer_args(server), "-L", "SERIES", "-k", f"PatientID={PATIENT}",
                   "-k", "Modality=CT", "-o", str(tmp_path / "got"))
    assert got.returncode == 0, got.stderr
    assert len(list((tmp_path / "got").rglob("*.dcm"))) == 3
    assert "C-GET" in got.stderr and "3 completed" in got.stderr


@both
def test_move_to_an_unknown_destination_fails_with_code_3(pacs: tuple[Any, int]) -> None:
    done = aiodicom("move", *peer_args(pacs[0]), "-k", f"PatientID={PATIENT}",
                    "--dest", "NOBODY")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr


@both
def test_move_to_another_ae(pacs: tuple[Any, int], tmp_path: Path) -> None:
    server, our_port = pacs
    # Our move destination's port is taken by an 'aiodicom storescp' named AIODICOM.
    with CliServer("storescp", ["-o", str(tmp_path / "in"), "-aet", "AIODICOM"], tmp_path,
                   "AIODICOM", port=our_port) as receiver:
        done = aiodicom("move", *peer_args(server), "-aet", "MOVER", "-k",
                        f"PatientID={PATIENT}", "--dest", "AIODICOM")
    assert done.returncode == 0, done.stderr
    assert "to AIODICOM: 12 completed" in done.stderr
    assert len(list((tmp_path / "in").rglob("*.dcm"))) == 12, receiver.log_text()


def test_store_to_dcmtk_storescp_and_aiodicom_storescp(
    files: list[Path], storescp_factory: Callable[..., Any], tmp_path: Path,
) -> None:
    dcmtk = storescp_factory(ae_title="DCMTKSTORE")
    folder = files[0].parent.parent  # one series folder's parent: a study
    count = len([f for f in files if f.is_relative_to(folder)])
    done = aiodicom("store", dcmtk.host, str(dcmtk.port), "-aec", "DCMTKSTORE", str(folder))
    assert done.returncode == 0, done.stderr
    assert len(dcmtk.received_files()) == count
    assert f"{count} stored, 0 failed" in done.stderr
    with storescp(tmp_path / "in", tmp_path, ae_title="OURS") as ours:
        done = aiodicom("store", "-aec", "OURS", ours.host, str(ours.port), *map(str, files))
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "in").rglob("*.dcm"))) == len(files)


def test_named_peer_from_peers_toml(files: list[Path], dcmqrscp_factory: Callable[..., Any],
                                   tmp_path: Path) -> None:
    server = dcmqrscp_factory(load_corpus=False)
    server.load(files)
    config = tmp_path / "peers.toml"
    config.write_text(f'[mypacs]\nhost = "{server.host}"\nport = {server.port}\n'
                      f'ae_title = "{server.ae_title}"\nmethod = "get"\n')
    done = aiodicom("find", "mypacs", "-k", f"PatientID={PATIENT}", "--json",
                    env={"AIODICOM_PEERS": str(config)})
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2
    unknown = aiodicom("echo", "otherpacs", env={"AIODICOM_PEERS": str(config)})
    assert unknown.returncode == 2
    assert "otherpacs" in unknown.stderr and "mypacs" in unknown.stderr


def test_exit_codes_for_refused_association_and_network_error(
    files: list[Path], dcmqrscp_factory: Callable[..., Any],
) -> None:
    server = dcmqrscp_factory(load_corpus=False)
    refused = aiodicom("echo", server.host, str(server.port), "-aec", "NOT-QRSCP")
    assert refused.returncode == 4, refused.stderr
    assert "association refused" in refused.stderr and "-aec" in refused.stderr
    assert "Traceback" not in refused.stderr
    closed = aiodicom("echo", "127.0.0.1", str(free_port()), "--connect-timeout", "5")
    assert closed.returncode == 5
    assert "cannot connect" in closed.stderr and len(closed.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("pacs", ["embedded"], indirect=True)
def test_progress_on_a_terminal_only(pacs: tuple[Any, int], tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    from peers.aiodicom_cli import ROOT, cli_env, peer_args

    server, _ = pacs
    args = ["get", *peer_args(server), "-k", f"PatientID={PATIENT}", "-L", "PATIENT",
            "-o", str(tmp_path / "tty")]
    master, slave = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "aiodicom", *args], stdout=subprocess.PIPE,
                              stderr=slave, cwd=ROOT, env=cli_env(), timeout=120, check=False)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert done.returncode == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert "MB/s" in text and "12/12" in text  # the bar: sub-operations done of the total
    piped = aiodicom(*args)
    assert piped.returncode == 0 and "12/12" not in piped.stderr  # no bar when not a TTY
    quiet = aiodicom(*args, "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_tls_store_and_echo_to_aiodicom_storescp_and_dcmtk_storescp(
    files: list[Path], storescp_factory: Callable[..., Any], tmp_path: Path,
) -> None:
    from peers import require_module

    require_module("cryptography")
    from test_interop_association import _self_signed

    cert, key = _self_signed(tmp_path / "tls")
    with storescp(tmp_path / "in", tmp_path, ae_title="TLSSCP",
                  extra=["--tls-cert", str(cert), "--tls-key", str(key)]) as ours:
        tls = ["--tls-ca", str(cert)]
        echo = aiodicom("echo", ours.host, str(ours.port), "-aec", "TLSSCP", *tls)
        stored = aiodicom("store", ours.host, str(ours.port), "-aec", "TLSSCP", *tls,
                          *map(str, files[:3]))
        plain = aiodicom("echo", ours.host, str(ours.port), "-aec", "TLSSCP",
                         "--acse-timeout", "3")
    assert echo.returncode == 0, echo.stderr
    assert stored.returncode == 0, stored.stderr
    assert len(list((tmp_path / "in").rglob("*.dcm"))) == 3
    assert plain.returncode == 5, plain.stderr  # no TLS: the acceptor never answers
    dcmtk = storescp_factory(extra_args=["+tls", str(key), str(cert), "-ic"])
    done = aiodicom("store", dcmtk.host, str(dcmtk.port), "-aec", dcmtk.ae_title,
                    "--tls-ca", str(cert), *map(str, files[:2]))
    assert done.returncode == 0, done.stderr
    assert len(dcmtk.received_files()) == 2


@pytest.mark.parametrize("method", ["move", "get"])
def test_retrieve_uses_the_method_of_peers_toml(
    method: str, files: list[Path], dcmqrscp_factory: Callable[..., Any], tmp_path: Path,
) -> None:
    our_port = free_port()
    server = dcmqrscp_factory(load_corpus=False,
                              move_destinations=[("CLIAE", "127.0.0.1", our_port)])
    server.load(files)
    config = tmp_path / "peers.toml"
    config.write_text(f'[pacs]\nhost = "{server.host}"\nport = {server.port}\n'
                      f'ae_title = "{server.ae_title}"\nmethod = "{method}"\n'
                      f'our_ae_title = "CLIAE"\nour_port = {our_port}\n')
    done = aiodicom("retrieve", "pacs", "-k", f"PatientID={PATIENT}",
                    "-o", str(tmp_path / "out"), env={"AIODICOM_PEERS": str(config)})
    assert done.returncode == 0, done.stderr
    assert f"C-{method.upper()} into" in done.stderr and "12 completed" in done.stderr
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 12


def test_find_warning_exit_code_and_debug_traceback(
    files: list[Path], dcmqrscp_factory: Callable[..., Any],
) -> None:
    server = dcmqrscp_factory(load_corpus=False)
    server.load(files)
    # dcmqrscp neither matches nor returns ModalitiesInStudy: a warning, exit code 1
    done = aiodicom("find", *peer_args(server), "-k", f"PatientID={PATIENT}",
                    "-k", "ModalitiesInStudy=MR")
    assert done.returncode == 1, done.stderr
    assert "warning: the peer ignored matching key(s) ModalitiesInStudy" in done.stderr
    closed = ["echo", "127.0.0.1", str(free_port())]
    assert "Traceback" in aiodicom(*closed, "-d").stderr
    assert "Traceback" not in aiodicom(*closed).stderr
    verbose = aiodicom("echo", *peer_args(server), "-v")
    assert verbose.returncode == 0 and "INFO aiodicom.cli: AIODICOM -> QRSCP" in verbose.stderr


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_client_command_stops_on_a_signal_with_c_cancel(
    sig: str, pynetdicom_find_scp_factory: Callable[..., Any],
) -> None:
    import signal
    import subprocess
    import sys
    import time

    from peers.aiodicom_cli import ROOT, cli_env

    records = []
    for n in range(40):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = "P1"
        ds.StudyInstanceUID = f"1.2.3.{n}"
        records.append(ds)
    scp = pynetdicom_find_scp_factory(records, delay=0.25)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiodicom", "find", "127.0.0.1", str(scp.port), "-aec",
         scp.ae_title, "-k", "PatientID=P1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=cli_env(),
    )
    deadline = time.monotonic() + 30
    while not scp.pendings_sent and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(getattr(signal, sig))
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "aiodicom find: interrupted (what was running was cancelled)"
    deadline = time.monotonic() + 10
    while not scp.cancels and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scp.cancels  # leaving the find sent C-CANCEL


def test_store_reports_a_file_that_is_not_dicom(files: list[Path], tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    with storescp(tmp_path / "in", tmp_path, ae_title="OURS") as ours:
        done = aiodicom("store", ours.host, str(ours.port), "-aec", "OURS", str(text),
                        str(files[0]))
    assert done.returncode == 3, done.stderr
    assert "1 stored, 1 failed" in done.stderr and f"failed: {text}" in done.stderr
    assert len(list((tmp_path / "in").rglob("*.dcm"))) == 1
