"""``aiodicom qrscp`` over TLS and mutual TLS (a subprocess), used by the command line's SCU
commands, by the library's Client and by DCMTK's echoscu: certificates checked both ways, and a
client without a trusted certificate refused."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
from peers import require_executable, require_module
from peers.aiodicom_cli import aiodicom, library_find, peer_args, qrscp
from peers.dcmtk import ECHOSCU, echoscu
from pydicom import dcmread

import aiodicom as lib
from aiodicom.testing.synthetic import write_synthetic

PATIENT = "AIO-0001"

Pair = tuple[Path, Path]  # (certificate, key), PEM


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    """Three self-signed certificates: the server's, a client's the server trusts, and one it
    does not (same subject name, another key)."""
    require_module("cryptography")
    from test_interop_association import _self_signed

    directory = tmp_path_factory.mktemp("tls")
    return {name: _self_signed(directory / name) for name in ("server", "client", "stranger")}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A directory to serve, and how many instances PATIENT has in it."""
    directory = tmp_path_factory.mktemp("archive")
    files = write_synthetic(directory, rows=8, columns=8, slices=2)
    count = sum(dcmread(f, stop_before_pixels=True).PatientID == PATIENT for f in files)
    return directory, count


def server_options(certificates: dict[str, Pair], *, mutual: bool) -> list[str]:
    cert, key = certificates["server"]
    options = ["--tls-cert", str(cert), "--tls-key", str(key)]
    return options + (["--tls-ca", str(certificates["client"][0])] if mutual else [])


def client_options(certificates: dict[str, Pair], who: str | None) -> list[str]:
    options = ["--tls-ca", str(certificates["server"][0])]
    if who is not None:
        cert, key = certificates[who]
        options += ["--tls-cert", str(cert), "--tls-key", str(key)]
    return options


def client_context(certificates: dict[str, Pair], who: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(certificates["server"][0]))
    context.check_hostname = False
    if who is not None:
        context.load_cert_chain(*map(str, certificates[who]))
    return context


@pytest.mark.interop
def test_qrscp_over_tls_serves_the_cli_and_the_library(
    certificates: dict[str, Pair], archive: tuple[Path, int], tmp_path: Path,
) -> None:
    directory, count = archive
    tls = client_options(certificates, None)
    with qrscp(directory, tmp_path, ae_title="TLSQR", synthetic=False,
               extra=server_options(certificates, mutual=False)) as server:
        echo = aiodicom("echo", *peer_args(server), *tls)
        found = aiodicom("find", *peer_args(server), "-k", f"PatientID={PATIENT}",
                         "-k", "StudyDate", "--json", *tls)
        got = aiodicom("get", *peer_args(server), "-L", "PATIENT", "-k", f"PatientID={PATIENT}",
                       "-o", str(tmp_path / "got"), *tls)
        studies = library_find(server, ssl_context=client_context(certificates, None),
                               PatientID=PATIENT)
        plain = aiodicom("echo", *peer_args(server), "--acse-timeout", "3")
        untrusting = aiodicom("echo", *peer_args(server), "--tls-ca",
                              str(certificates["stranger"][0]))
    assert echo.returncode == 0, echo.stderr
    assert found.returncode == 0, found.stderr
    assert sorted(d["00080020"]["Value"][0] for d in json.loads(found.stdout)) == [
        "20240105", "20240312"]
    assert got.returncode == 0, got.stderr
    assert f"{count} completed, 0 failed" in got.stderr
    assert len(list((tmp_path / "got").rglob("*.dcm"))) == count
    assert len(studies) == 2
    # Without TLS the server never sees an A-ASSOCIATE-RQ it can read: a network error.
    assert plain.returncode == 5, plain.stderr
    # A client that does not trust the server's certificate stops at the handshake.
    assert untrusting.returncode == 5, untrusting.stderr
    assert "TLS failed" in untrusting.stderr and "--tls-ca" in untrusting.stderr


@pytest.mark.interop
def test_qrscp_with_mutual_tls_refuses_clients_without_a_trusted_certificate(
    certificates: dict[str, Pair], archive: tuple[Path, int], tmp_path: Path,
) -> None:
    directory, _ = archive
    with qrscp(directory, tmp_path, ae_title="MTLSQR", synthetic=False,
               extra=server_options(certificates, mutual=True)) as server:
        trusted = aiodicom("echo", *peer_args(server), *client_options(certificates, "client"))
        found = aiodicom("find", *peer_args(server), "-k", f"PatientID={PATIENT}", "--json",
                         *client_options(certificates, "client"))
        studies = library_find(server, ssl_context=client_context(certificates, "client"),
                               PatientID=PATIENT)
        anonymous = aiodicom("echo", *peer_args(server), *client_options(certificates, None),
                             "--acse-timeout", "5")
        stranger = aiodicom("echo", *peer_args(server), *client_options(certificates, "stranger"),
                            "--acse-timeout", "5")
        with pytest.raises(lib.DicomError):
            library_find(server, ssl_context=client_context(certificates, None), PatientID=PATIENT)
        still_serving = aiodicom("echo", *peer_args(server),
                                 *client_options(certificates, "client"))
    assert trusted.returncode == 0, trusted.stderr
    assert found.returncode == 0 and len(json.loads(found.stdout)) == 2, found.stderr
    assert len(studies) == 2
    for refused in (anonymous, stranger):
        assert refused.returncode == 5, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
        assert "--tls-cert" in refused.stderr
    assert still_serving.returncode == 0, still_serving.stderr
    assert "stopped: served" in server.log_text()


@pytest.mark.interop
def test_dcmtk_echoscu_with_mutual_tls(
    certificates: dict[str, Pair], archive: tuple[Path, int], tmp_path: Path,
) -> None:
    require_executable(ECHOSCU)
    directory, _ = archive
    server_cert = str(certificates["server"][0])
    with qrscp(directory, tmp_path, ae_title="MTLSQR", synthetic=False,
               extra=server_options(certificates, mutual=True)) as server:
        for who in ("client", "stranger"):
            cert, key = map(str, certificates[who])
            done = echoscu(server.host, server.port, "MTLSQR",
                           args=["+tls", key, cert, "+cf", server_cert])
            assert (done.returncode == 0) == (who == "client"), (who, done.stderr)


def test_a_tls_server_needs_its_certificate(tmp_path: Path) -> None:
    done = aiodicom("qrscp", "0", str(tmp_path), "--tls-ca", str(tmp_path / "ca.pem"))
    assert done.returncode == 2
    assert "give --tls-cert and --tls-key" in done.stderr
