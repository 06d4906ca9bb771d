"""The aiodicom_qrscp fixture as a user's test run gets it (pytest-asyncio in strict mode)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_TEST = '''
import pytest
from aiodicom import Client, Query


@pytest.mark.asyncio
async def test_find_and_get(aiodicom_qrscp):
    assert aiodicom_qrscp.ae_title == "AIOQR" and aiodicom_qrscp.port > 0
    async with Client("USER", peer=(aiodicom_qrscp.host, aiodicom_qrscp.port,
                                    aiodicom_qrscp.ae_title)) as client:
        studies = await client.find(Query.study(StudyInstanceUID="")).all()
        assert len(studies) == 6
        result = await client.get(Query.study(StudyInstanceUID=studies[0].StudyInstanceUID))
        assert result.ok and result.completed


@pytest.mark.asyncio
async def test_move_destination_added(aiodicom_qrscp):
    async with Client("USER", peer=aiodicom_qrscp.peer, listen_port=0) as client:
        aiodicom_qrscp.add_move_destination("USER", "127.0.0.1", client.listen_port)
        [study, *_] = await client.find(Query.study(PatientID="AIO-0001")).all()
        result = await client.move(Query.study(StudyInstanceUID=study.StudyInstanceUID))
        assert result.ok and len(result.completed) == result.sub_operations.completed
'''


def test_qrscp_fixture_in_a_users_test_run(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        # "no:aiodicom": see test_pytest_plugin.py (one module under two names).
        [sys.executable, "-m", "pytest", "-q", "-p", "no:aiodicom",
         "-p", "aiodicom.testing.pytest_plugin", "-p", "no:cacheprovider",
         "-o", "asyncio_mode=strict", str(tmp_path / "test_user.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
