"""``aiodicom store --commit`` as a subprocess: against ``aiodicom qrscp`` (the answer on the
request's association), a pynetdicom SCP failing one instance, and Orthanc (the answer on an
association of its own to our ``--our-port``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from peers import free_port, require_module
from peers.aiodicom_cli import aiodicom, qrscp
from peers.corpus import Corpus
from peers.orthanc import Orthanc
from peers.pynetdicom_commitment import CommitmentScp
from pydicom import dcmread

from aiodicom.testing.synthetic import write_synthetic

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_synthetic(tmp_path_factory.mktemp("commit-synthetic"), rows=8, columns=8,
                           slices=2)[:4]


def test_store_commit_to_aiodicom_qrscp(files: list[Path], tmp_path: Path) -> None:
    with qrscp(tmp_path / "archive", tmp_path, synthetic=False) as server:
        done = aiodicom("store", server.host, str(server.port), "-aec", server.ae_title,
                        "--commit", *map(str, files))
    assert done.returncode == 0, done.stderr
    assert f"{len(files)} stored, 0 failed" in done.stderr
    assert f"storage commitment by AIOQR: {len(files)} committed, 0 not committed" \
        in done.stderr
    assert "answered on the request's association" in done.stderr


def test_store_commit_shows_what_was_not_committed(files: list[Path]) -> None:
    require_module("pynetdicom")
    refused = str(dcmread(files[1], stop_before_pixels=True).SOPInstanceUID)
    with CommitmentScp(storage=True, reasons={refused: 0x0110}) as scp:
        done = aiodicom("store", scp.host, str(scp.port), "-aec", scp.ae_title, "--commit",
                        *map(str, files))
    assert done.returncode == 3, done.stderr
    assert f"storage commitment by COMMITSCP: {len(files) - 1} committed, 1 not committed" \
        in done.stderr
    assert f"not committed: {files[1]}: processing failure (0x0110)" in done.stderr


def test_store_commit_to_orthanc_answering_on_its_own_association(
    orthanc: Orthanc, corpus: Corpus,
) -> None:
    our_port = free_port()
    paths = [str(i.path) for i in corpus.instances[:3]]
    with orthanc.temporary_modality("AIODICOM", "AIODICOM", "127.0.0.1", our_port):
        done = aiodicom("store", orthanc.host, str(orthanc.port), "-aec", orthanc.ae_title,
                        "--commit", "--our-port", str(our_port), *paths)
    assert done.returncode == 0, done.stderr
    assert "storage commitment by ORTHANC: 3 committed, 0 not committed" in done.stderr
    assert "answered on an association of its own" in done.stderr


def test_store_commit_without_an_answer_times_out(orthanc: Orthanc, corpus: Corpus) -> None:
    """Orthanc knows us at a port where nobody listens: no answer comes; exit 3, and the
    message says what to check."""
    our_port, nowhere = free_port(), free_port()
    with orthanc.temporary_modality("AIODICOM", "AIODICOM", "127.0.0.1", nowhere):
        done = aiodicom("store", orthanc.host, str(orthanc.port), "-aec", orthanc.ae_title,
                        "--commit", "--commit-timeout", "2", "--our-port", str(our_port),
                        str(corpus.instances[0].path))
    assert done.returncode == 3, done.stderr
    assert "no storage commitment answer from ORTHANC within 2.0 s" in done.stderr
    assert "--our-port" in done.stderr
