"""Smoke tests of the peer infrastructure, with DCMTK's command-line clients only.

They prove that the fixtures start real peers on free loopback ports, load the generated corpus
and answer as the corpus description predicts - before aiodicom itself talks to them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from peers import PeerProcess, in_ci, in_thread, missing_peer, require_executable
from peers.corpus import (
    Corpus,
    compressed_copy,
    generate_corpus,
    generate_worklist,
    load_datasets,
)
from peers.dcmtk import (
    ECHOSCU,
    DcmQrScp,
    StoreScp,
    echoscu,
    find_datasets,
    findscu,
    movescu,
    read_responses,
    storescu,
)
from peers.orthanc import Orthanc
from peers.pynetdicom_scp import EchoScp, FindScp
from pydicom import dcmread
from pydicom.uid import JPEGLosslessSV1, RLELossless

JAN_2024 = ("20240101", "20240131")


@pytest.fixture(autouse=True)
def _dcmtk_clients() -> None:
    require_executable(ECHOSCU)


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"{proc.args!r} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )


# ---------------------------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------------------------


def test_corpus_is_deterministic(corpus: Corpus, tmp_path: Path) -> None:
    again = generate_corpus(tmp_path)
    assert [i.sop_instance_uid for i in again.instances] == [
        i.sop_instance_uid for i in corpus.instances
    ]
    assert again.instances[0].path.read_bytes() == corpus.instances[0].path.read_bytes()
    assert len(corpus.patients) == 5
    assert len(corpus.studies_between(*JAN_2024)) == 5
    names = {p.patient_name for p in corpus.patients}
    assert {"Müller^Jürgen", "山田^太郎"} <= names
    ds = dcmread(corpus.patient("AIO0003").instances[0].path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "山田^太郎"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (64, 64, 16)
    assert len(ds.PixelData) == 64 * 64 * 2


# ---------------------------------------------------------------------------------------------
# C-ECHO against every peer
# ---------------------------------------------------------------------------------------------


def test_echo_dcmqrscp(dcmqrscp: DcmQrScp) -> None:
    _ok(echoscu(dcmqrscp.host, dcmqrscp.port, dcmqrscp.ae_title))


def test_echo_storescp(storescp: StoreScp) -> None:
    _ok(echoscu(storescp.host, storescp.port, storescp.ae_title))


def test_echo_orthanc(orthanc: Orthanc) -> None:
    _ok(echoscu(orthanc.host, orthanc.port, orthanc.ae_title))


def test_echo_pynetdicom(pynetdicom_echo_scp: EchoScp) -> None:
    before = pynetdicom_echo_scp.echoes
    _ok(echoscu(pynetdicom_echo_scp.host, pynetdicom_echo_scp.port, pynetdicom_echo_scp.ae_title))
    assert pynetdicom_echo_scp.echoes == before + 1


# ---------------------------------------------------------------------------------------------
# C-FIND: counts as predicted by the corpus description
# ---------------------------------------------------------------------------------------------

STUDY_KEYS = {
    "QueryRetrieveLevel": "STUDY",
    "StudyDate": f"{JAN_2024[0]}-{JAN_2024[1]}",
    "StudyInstanceUID": "",
    "PatientName": "",
    "PatientID": "",
}


def test_find_studies_dcmqrscp(dcmqrscp: DcmQrScp, corpus: Corpus, tmp_path: Path) -> None:
    found = find_datasets(
        dcmqrscp.host, dcmqrscp.port, dcmqrscp.ae_title, STUDY_KEYS, extract_dir=tmp_path
    )
    expected = {s.study_instance_uid for s in corpus.studies_between(*JAN_2024)}
    assert {str(d.StudyInstanceUID) for d in found} == expected
    assert len(found) == len(expected) == 5


def test_find_studies_orthanc(orthanc: Orthanc, corpus: Corpus, tmp_path: Path) -> None:
    found = find_datasets(
        orthanc.host, orthanc.port, orthanc.ae_title, STUDY_KEYS, extract_dir=tmp_path
    )
    expected = {s.study_instance_uid for s in corpus.studies_between(*JAN_2024)}
    assert {str(d.StudyInstanceUID) for d in found} == expected
    names = {str(d.PatientName) for d in found}
    assert "山田^太郎" in names and "Müller^Jürgen" in names  # DefaultEncoding Utf8


def test_find_with_small_pdu(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus, tmp_path: Path
) -> None:
    qr = dcmqrscp_factory(max_pdu=4096)
    found = find_datasets(
        qr.host,
        qr.port,
        qr.ae_title,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""},
        extract_dir=tmp_path,
        max_pdu=4096,
    )
    assert len(found) == len(corpus.studies)


# ---------------------------------------------------------------------------------------------
# C-MOVE destinations: dcmqrscp HostTable and Orthanc DicomModalities
# ---------------------------------------------------------------------------------------------


def test_move_dcmqrscp_to_storescp(
    dcmqrscp_factory: Callable[..., DcmQrScp],
    storescp_factory: Callable[..., StoreScp],
    corpus: Corpus,
) -> None:
    dest = storescp_factory(ae_title="AIOSCU")
    qr = dcmqrscp_factory(move_destinations=[dest.destination])
    series = corpus.series_with(modality="CT")[0]
    keys = {
        "QueryRetrieveLevel": "SERIES",
        "StudyInstanceUID": series.study_instance_uid,
        "SeriesInstanceUID": series.series_instance_uid,
    }
    _ok(movescu(qr.host, qr.port, qr.ae_title, "AIOSCU", keys))
    got = {str(d.SOPInstanceUID) for d in dest.received_datasets()}
    assert got == {i.sop_instance_uid for i in series.instances}
    # a destination missing from the HostTable is refused with A801
    proc = movescu(qr.host, qr.port, qr.ae_title, "NOBODY", keys, args=["-v"])
    assert "Refused: MoveDestinationUnknown" in proc.stderr
    # restart with another destination list, same index
    qr.restart(move_destinations=[])
    _ok(echoscu(qr.host, qr.port, qr.ae_title))


def test_move_orthanc_to_storescp(
    orthanc: Orthanc, storescp_factory: Callable[..., StoreScp], corpus: Corpus
) -> None:
    dest = storescp_factory(ae_title="AIOSCU")
    study = corpus.patient("AIO0002").studies[0]
    with orthanc.temporary_modality("AIOSCU", dest.ae_title, dest.host, dest.port):
        _ok(
            movescu(
                orthanc.host,
                orthanc.port,
                orthanc.ae_title,
                "AIOSCU",
                {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study.study_instance_uid},
            )
        )
    assert "AIOSCU" not in orthanc.rest("GET", "/modalities")
    assert len(dest.received_files()) == len(study.instances)


# ---------------------------------------------------------------------------------------------
# Other peer features later tests rely on
# ---------------------------------------------------------------------------------------------


def test_pynetdicom_find_scp_records_cancel(
    pynetdicom_find_scp_factory: Callable[..., FindScp], corpus: Corpus, tmp_path: Path
) -> None:
    scp = pynetdicom_find_scp_factory(load_datasets(corpus.instances), delay=0.02, max_pdu=4096)
    proc = findscu(
        scp.host,
        scp.port,
        scp.ae_title,
        {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": ""},
        extract_dir=tmp_path,
        args=["--cancel", "3"],
    )
    _ok(proc)
    assert len(read_responses(tmp_path)) < len(corpus.instances)
    deadline = time.monotonic() + 5
    while not scp.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(scp.cancels) == 1
    assert scp.cancelled == [scp.cancels[0].message_id_being_responded_to]
    assert scp.requestor_max_pdus  # DCMTK's findscu announced its max PDU


def test_compressed_copies_to_storescp(
    storescp_factory: Callable[..., StoreScp], corpus: Corpus, tmp_path: Path
) -> None:
    series = corpus.series_with(modality="MR")[0]
    syntaxes = [RLELossless]
    if os.access("/usr/bin/dcmcjpeg", os.X_OK):
        syntaxes.append(JPEGLosslessSV1)
    dest = storescp_factory()
    for ts in syntaxes:
        copy = compressed_copy(series, tmp_path / ts, ts, new_uids=ts)
        propose = "--propose-rle" if ts == RLELossless else "--propose-lossless"
        _ok(storescu(dest.host, dest.port, dest.ae_title, copy.instances, args=[propose]))
    received = dest.received_datasets()
    assert sorted(str(d.file_meta.TransferSyntaxUID) for d in received) == sorted(
        ts for ts in syntaxes for _ in series.instances
    )


def test_orthanc_worklist(orthanc_factory: Callable[..., Orthanc], tmp_path: Path) -> None:
    items = generate_worklist(tmp_path / "wl")
    server = orthanc_factory(worklist_dir=tmp_path / "wl", load_corpus=False, max_pdu=4096)
    found = find_datasets(
        server.host,
        server.port,
        server.ae_title,
        [
            "PatientName",
            "PatientID",
            "AccessionNumber",
            "ScheduledProcedureStepSequence[0].Modality=MR",
        ],
        model="worklist",
        extract_dir=tmp_path / "rsp",
    )
    assert {str(d.AccessionNumber) for d in found} == {
        i.accession_number for i in items if i.modality == "MR"
    }


def test_missing_peer_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="missing in CI"):
        require_executable("/nonexistent/dcmqrscp")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not found"):
        require_executable("/nonexistent/dcmqrscp")
    with pytest.raises(pytest.skip.Exception):
        missing_peer("no peer")


def _live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (orphans are reaped by init, later)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


@pytest.mark.interop
def test_peer_process_stops_its_process_group(tmp_path: Path) -> None:
    proc = PeerProcess(["/bin/sh", "-c", "sleep 60 & sleep 60 & wait"], log_path=tmp_path / "log")
    popen = proc.start()
    deadline = time.monotonic() + 5
    while len(_live_members(popen.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(_live_members(popen.pid)) == 3
    proc.stop(timeout=5)
    assert _live_members(popen.pid) == []


async def test_in_thread_keeps_the_event_loop_free(
    pynetdicom_echo_scp: EchoScp,
) -> None:
    import anyio

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        proc = await in_thread(echoscu, pynetdicom_echo_scp.host, pynetdicom_echo_scp.port,
                               pynetdicom_echo_scp.ae_title)
        tg.cancel_scope.cancel()
    _ok(proc)
    assert ticks > 1
