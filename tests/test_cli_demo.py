"""``python -m aiodicom demo``: the embedded Q/R SCP and a client on one loop, in a subprocess;
and the demo's NumPy description of a volume agrees with SimpleITK's."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from peers import LOOPBACK, free_port
from peers.dcmtk import DcmQrScp

from aiodicom.cli_demo import _describe, _describe_numpy
from aiodicom.series import Series
from aiodicom.testing.synthetic import synthetic_instances, write_synthetic

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_the_volume_retrieved_by_move_and_get() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiodicom", "demo"], capture_output=True, text=True,
        cwd=ROOT, timeout=120, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"C-FIND: \d+ series of AIO-0001 on 20240312 \(1 matching 'AX\*'\)", output)
    assert "'AX T1': selected" in output
    volumes = re.findall(r"volume \(C-(MOVE|GET), \w+, \d+ ms\): (.*)", output)
    assert [kind for kind, _ in volumes] == ["MOVE", "GET"], output
    # The axial T1 of the synthetic brain MR: 64 x 64 pixels of 0.5 mm, 12 slices 2 mm apart,
    # axial (identity direction).
    for _, text in volumes:
        assert text.startswith("size 64 x 64 x 12, spacing (0.5, 0.5, 2), "), text
        assert text.endswith("direction (1, 0, 0, 0, 1, 0, 0, 0, 1)"), text
    assert "C-MOVE and C-GET volumes agree" in output


def test_demo_help_names_the_real_pacs_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiodicom", "demo", "--help"], capture_output=True, text=True,
        cwd=ROOT, timeout=60, check=False,
    )
    assert done.returncode == 0
    for option in ("--host", "--port", "--aec", "--our-port"):
        assert option in done.stdout


@pytest.mark.parametrize("description", ["AX T1", "SAG T2", "COR T1", "AX CT CHEST"])
def test_numpy_geometry_agrees_with_simpleitk(description: str) -> None:
    pytest.importorskip("SimpleITK")
    instances = [
        i for i in synthetic_instances(rows=16, columns=12, slices=5)
        if i.dataset.SeriesDescription == description and i.dataset.PatientID == "AIO-0001"
    ]
    series = Series(instances)
    ours, theirs = _describe_numpy(series), _describe(series)
    assert ours["size"] == theirs["size"] == (12, 16, 5)
    for key in ("spacing", "origin", "direction"):
        assert ours[key] == pytest.approx(theirs[key]), key


@pytest.mark.interop
def test_demo_against_a_real_pacs(
    tmp_path: Path, dcmqrscp_factory: Callable[..., DcmQrScp]
) -> None:
    # dcmqrscp neither matches nor returns SeriesDescription: retrieve_series checks it on one
    # instance of each candidate, and only the axial series is retrieved whole.
    our_port = free_port()
    server = dcmqrscp_factory(
        load_corpus=False, move_destinations=[("AIODEMO", LOOPBACK, our_port)]
    )
    server.load(write_synthetic(tmp_path / "files", rows=16, columns=16, slices=6))
    done = subprocess.run(
        [sys.executable, "-m", "aiodicom", "demo", "--host", server.host, "--port",
         str(server.port), "--aec", server.ae_title, "--our-port", str(our_port)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "embedded" not in output
    assert re.search(r"C-MOVE: 6 instances", output) and re.search(r"C-GET: 6 instances", output)
    assert "(1 matching 'AX*')" in output and "'AX T1': selected" in output
    assert "size 16 x 16 x 6" in output and "C-MOVE and C-GET volumes agree" in output


def test_demo_on_the_core_install_describes_the_volume_from_its_headers() -> None:
    # The core install has neither NumPy nor SimpleITK: the demo must still run to the end.
    hide_extras = (
        "import sys; sys.modules['numpy'] = None; sys.modules['SimpleITK'] = None; "
        "from aiodicom.__main__ import main; sys.exit(main(['demo']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_extras], capture_output=True, text=True,
        cwd=ROOT, timeout=120, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "pip install 'aiodicom[itk]' for the pixels" in output
    assert "size 64 x 64 x 12, spacing (0.5, 0.5, 2), " in output
    assert "C-MOVE and C-GET volumes agree" in output
