"""DEBUG dumps of what goes over an association (issue 12, ``-d``): the loggers
``aiodicom.pdu`` (association PDUs) and ``aiodicom.dimse`` (whole DIMSE messages), against the
embedded Q/R SCP, in the library and through ``aiodicom find -d``."""

from __future__ import annotations

import logging
import re

import pytest
from peers import LOOPBACK
from peers.aiodicom_cli import aiodicom, peer_args, qrscp

import aiodicom as lib
from aiodicom import AccessPolicy, Client, Query, UserIdentity
from aiodicom.pdu import UserIdentityRQ
from aiodicom.testing.pytest_plugin import QRScp

AE = "DUMPSCU"


def _records(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def _has(block: str, label: str, value: str) -> bool:
    """``block`` has the line ``label: value`` (labels are padded to one column)."""
    return re.search(rf"^  {re.escape(label)}: +{re.escape(value)}", block, re.M) is not None


def _block(records: list[str], title: str) -> str:
    """The one record titled ``title`` (e.g. "OUTGOING A-ASSOCIATE-RQ")."""
    found = [r for r in records if r.startswith(f"===== {title} ")]
    assert len(found) == 1, (title, records)
    return found[0]


async def _echo_and_find(server: QRScp) -> None:
    async with Client(AE, peer=server.peer) as client:
        await client.echo()
        studies = await client.find(Query.study(PatientID="AIO-0001", StudyInstanceUID="")).all()
    assert len(studies) == 2


async def test_association_echo_find_and_release_are_dumped(
    aiodicom_qrscp: QRScp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiodicom")
    await _echo_and_find(aiodicom_qrscp)

    pdus = _records(caplog, "aiodicom.pdu")
    rq = _block([r for r in pdus if "A-ASSOCIATE-RQ" in r and "C-FIND" not in r and
                 "Verification" in r], "OUTGOING A-ASSOCIATE-RQ")
    assert _has(rq, "Calling AE title", AE)
    assert _has(rq, "Called AE title", aiodicom_qrscp.ae_title)
    assert "Context ID 1: Verification SOP Class (1.2.840.10008.1.1)" in rq
    assert "proposed: Implicit VR Little Endian (1.2.840.10008.1.2)" in rq
    assert _has(rq, "Implementation class UID", "2.25.")
    assert re.search(r"Maximum PDU length: +\d+", rq)
    # Each association of the client (echo, then find) and the server's side of it.
    assert sum(r.startswith("===== OUTGOING A-ASSOCIATE-RQ ") for r in pdus) == 2
    assert sum(r.startswith("===== INCOMING A-ASSOCIATE-RQ ") for r in pdus) == 2
    find_ac = [r for r in pdus if r.startswith("===== INCOMING A-ASSOCIATE-AC ")
               and "Study Root Query/Retrieve Information Model - FIND" in r]
    assert len(find_ac) == 1, pdus
    assert re.search(r"Context ID \d+: Study Root Query/Retrieve Information Model - FIND "
                     r"\(1\.2\.840\.10008\.5\.1\.4\.1\.2\.2\.1\)\n +accepted: ", find_ac[0])
    for title in ("OUTGOING A-RELEASE-RQ", "INCOMING A-RELEASE-RP",
                  "INCOMING A-RELEASE-RQ", "OUTGOING A-RELEASE-RP"):
        assert sum(r.startswith(f"===== {title} ") for r in pdus) == 2, (title, pdus)

    messages = _records(caplog, "aiodicom.dimse")
    echo_rsp = _block(messages, "INCOMING C-ECHO-RSP (DIMSE)")
    assert _has(echo_rsp, "Status", "0x0000 (Success")
    find_rq = _block(messages, "OUTGOING C-FIND-RQ (DIMSE)")
    assert _has(find_rq, "Affected SOP class", "Study Root Query/Retrieve Information Model - FIND")
    assert _has(find_rq, "Priority", "medium")
    assert re.search(r"Data set: +present, \d+ bytes", find_rq)
    message_id = re.search(r"Message ID: +(\d+)", find_rq)
    assert message_id
    responses = [r for r in messages if r.startswith("===== INCOMING C-FIND-RSP (DIMSE)")]
    assert len(responses) == 3  # two matches, then the final success
    for pending in responses[:2]:
        assert re.search(r"Status: +0xFF00 \(Pending", pending), pending
        assert re.search(r"Data set: +present, \d+ bytes", pending)
        assert _has(pending, "Message ID being responded to", message_id[1])
    assert _has(responses[2], "Status", "0x0000 (Success: matching is complete)")
    assert _has(responses[2], "Data set", "none")
    # The identifier's values are not dumped, only its size.
    assert not any("AIO-0001" in r for r in messages)


async def test_nothing_is_dumped_at_info(
    aiodicom_qrscp: QRScp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiodicom")
    await _echo_and_find(aiodicom_qrscp)
    assert not _records(caplog, "aiodicom.pdu") and not _records(caplog, "aiodicom.dimse")


async def test_user_identity_passcode_never_dumped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiodicom")

    def verify(identity: UserIdentity) -> bytes | bool:
        return identity.username == "alice" and identity.passcode == "pa55-w0rd"

    async with lib.Client("DUMPSCP", listen_port=0,
                          access=AccessPolicy(verify_identity=verify)) as server:
        assert server.listen_port
        async with Client(AE) as client:
            peer = client.peer(LOOPBACK, server.listen_port, "DUMPSCP")
            with pytest.raises(lib.AssociationRejected):
                async with peer.associate(
                    user_identity=UserIdentityRQ(2, True, b"alice", b"wrong-pa55")
                ):
                    pass
            async with peer.associate(
                user_identity=UserIdentityRQ(2, True, b"alice", b"pa55-w0rd")
            ) as session:
                await session.echo()
                await session.association.abort()
    pdus = _records(caplog, "aiodicom.pdu")
    rqs = [r for r in pdus if "A-ASSOCIATE-RQ" in r]
    assert len(rqs) == 4  # each association: sent and received
    for rq in rqs:
        assert _has(rq, "User identity", "username and passcode, user 'alice'")
    rejected = _block(pdus, "INCOMING A-ASSOCIATE-RJ")
    assert "service provider (ACSE)" in rejected and _block(pdus, "OUTGOING A-ASSOCIATE-RJ")
    accepted = _block(pdus, "INCOMING A-ASSOCIATE-AC")
    assert _has(accepted, "User identity response", "0 bytes (not shown)")
    aborted = _block(pdus, "OUTGOING A-ABORT")
    assert "association aborted by the service user" in aborted
    assert "pa55-w0rd" not in caplog.text and "wrong-pa55" not in caplog.text


@pytest.mark.interop
def test_cli_find_d_dumps_on_stderr_and_v_does_not(tmp_path: pytest.TempPathFactory) -> None:
    server = qrscp(tmp_path / "archive", tmp_path).start()  # type: ignore[operator]
    try:
        debug = aiodicom("find", *peer_args(server), "-k", "PatientID=AIO-0001", "-d")
        verbose = aiodicom("find", *peer_args(server), "-k", "PatientID=AIO-0001", "-v")
    finally:
        server.stop()
    assert debug.returncode == 0, debug.stderr
    err = debug.stderr
    assert "DEBUG aiodicom.pdu: ===== OUTGOING A-ASSOCIATE-RQ =====" in err
    assert "DEBUG aiodicom.pdu: ===== INCOMING A-ASSOCIATE-AC =====" in err
    assert "Study Root Query/Retrieve Information Model - FIND" in err
    assert "DEBUG aiodicom.dimse: ===== OUTGOING C-FIND-RQ (DIMSE) =====" in err
    assert err.count("DEBUG aiodicom.dimse: ===== INCOMING C-FIND-RSP (DIMSE) =====") == 3
    assert re.search(r"Status: +0xFF00 \(Pending", err)
    assert "===== OUTGOING A-RELEASE-RQ =====" in err
    assert "===== INCOMING A-RELEASE-RP =====" in err
    # The dump goes to stderr; stdout keeps the table alone.
    assert "=====" not in debug.stdout and "AIO-0001" in debug.stdout
    assert verbose.returncode == 0, verbose.stderr
    assert "=====" not in verbose.stderr and "aiodicom.pdu" not in verbose.stderr
    assert "AIO-0001" in verbose.stdout
