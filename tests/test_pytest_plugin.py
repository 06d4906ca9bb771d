"""The fixtures users get from the aiodicom pytest plugin, run as a user's test run would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_TEST = '''
from pydicom.dataset import Dataset
from aiodicom.query import QueryModel
from aiodicom.server import find, instances_for_retrieve


def test_files(aiodicom_synthetic_files):
    assert len(aiodicom_synthetic_files) == 80
    assert all(p.exists() for p in aiodicom_synthetic_files)


def test_index(aiodicom_index):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    studies = [r for b in find(aiodicom_index, ds, QueryModel.STUDY_ROOT) for r in b]
    assert len(studies) == 6
    ds.StudyInstanceUID = studies[0].StudyInstanceUID
    (first, *_), *_ = instances_for_retrieve(aiodicom_index, ds, QueryModel.STUDY_ROOT)
    assert aiodicom_index.remove(first.sop_instance_uid)


def test_index_is_fresh_for_each_test(aiodicom_index):
    assert len(aiodicom_index) == 80
'''


def test_plugin_fixtures_work_in_a_users_test_run(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        # "no:aiodicom": once the plugin's entry point (named "aiodicom") is installed, it
        # would load too, and pluggy refuses one module registered under two names.
        [sys.executable, "-m", "pytest", "-q", "-p", "no:aiodicom",
         "-p", "aiodicom.testing.pytest_plugin",
         "-p", "no:cacheprovider", str(tmp_path / "test_user.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
