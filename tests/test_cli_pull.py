"""``aiodicom pull``: a manifest retrieved from the command line, the report written, a second
run resuming (nothing fetched again), usage errors as one line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest
from bulk_helpers import Archive, SendCounter, assert_output_matches, count_sends, serving


@pytest.fixture
def send_counter(monkeypatch: pytest.MonkeyPatch) -> SendCounter:
    return count_sends(monkeypatch)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "AIODICOM_PEERS": "/nowhere"}


@pytest.mark.interop
async def test_pull_retrieves_reports_and_resumes(
    tmp_path: Path, send_counter: SendCounter
) -> None:
    archive = Archive.make(4)
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("pacs,StudyInstanceUID\n" + "".join(
        f"qr,{uid}\n" for uid in archive.studies) + "qr,1.2.3.999\n")
    output = tmp_path / "out"
    async with serving(archive) as server:
        config = tmp_path / "pacs.toml"
        config.write_text(f'[qr]\nhost = "127.0.0.1"\nport = {server.listen_port}\n'
                          'ae_title = "AIOQR"\nmax_associations = 2\n')
        command = [sys.executable, "-m", "aiodicom", "pull", str(manifest), "-o", str(output),
                   "--config", str(config), "--report", str(tmp_path / "report.json")]
        first = await anyio.run_process(command, env=_env(), check=False)
        sent = send_counter.total
        second = await anyio.run_process(command, env=_env(), check=False)
    # One study the PACS does not hold: reported, exit code 3 (failure), the rest retrieved.
    assert first.returncode == 3, first.stderr.decode()
    summary = first.stderr.decode()
    assert "INCOMPLETE" in summary and "FAILED qr/STUDY/1.2.3.999" in summary
    assert_output_matches(output, archive.instances)
    assert sent == len(archive.instances)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"] == {"failed": 1, "skipped": 4}  # the second run's
    assert second.returncode == 3 and send_counter.total == sent


async def test_pull_usage_errors(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("pacs,StudyInstanceUID\nqr,1.2.3\n")
    missing = await anyio.run_process(
        [sys.executable, "-m", "aiodicom", "pull", str(manifest), "-o", str(tmp_path / "o")],
        env=_env(), check=False)
    assert missing.returncode == 2
    assert "no PACS configuration" in missing.stderr.decode()
    config = tmp_path / "pacs.toml"
    config.write_text('[qr]\nhost = "127.0.0.1"\nport = 1\nmethod = "push"\n')
    bad = await anyio.run_process(
        [sys.executable, "-m", "aiodicom", "pull", str(manifest), "-o", str(tmp_path / "o"),
         "--config", str(config)], env=_env(), check=False)
    assert bad.returncode == 2
    assert "method must be 'get' or 'move'" in bad.stderr.decode()
