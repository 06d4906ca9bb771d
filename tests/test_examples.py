"""The README's code blocks and examples/ run as written against real peers.

Only the site-specific values change: the PACS address and AE title, the Patient ID, and the
port of our embedded Storage SCP.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from peers import free_port
from peers.corpus import Corpus

ROOT = Path(__file__).resolve().parent.parent
PATIENT = "AIO0001"  # two studies in January 2024, series "AX CT", "AX T1" and "SAG T2"


def readme_programs() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [block for block in blocks if "anyio.run(main)" in block]


def localise(program: str, host: str, port: int, ae_title: str, our_port: int) -> str:
    for address in ('"pacs.example", 11112', '"127.0.0.1", 11112'):
        program = program.replace(address, f'"{host}", {port}')
    program = program.replace('ae_title="PACS"', f'ae_title="{ae_title}"')
    program = program.replace(f'{port}, "PACS")', f'{port}, "{ae_title}")')
    program = program.replace('"99999"', f'"{PATIENT}"')
    return program.replace("port=11113", f"port={our_port}")


def run(args: list[str], cwd: Path) -> str:
    # The library of this checkout, not whichever copy the interpreter has installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_readme_has_the_programs_this_file_runs() -> None:
    programs = readme_programs()
    assert len(programs) == 3
    assert "find_series" in programs[0] and "to_sitk" in programs[0]


@pytest.mark.parametrize("peer_kind", ["orthanc", "dcmqrscp"])
def test_readme_programs_run(
    peer_kind: str,
    orthanc_factory: Callable[..., object],
    dcmqrscp_factory: Callable[..., object],
    corpus: Corpus,
    tmp_path: Path,
) -> None:
    pytest.importorskip("SimpleITK")
    our_port = free_port()
    if peer_kind == "orthanc":
        pacs = orthanc_factory(modalities={"AIOSCU": ("AIOSCU", "127.0.0.1", our_port)})
        ae_title = "ORTHANC"
    else:
        pacs = dcmqrscp_factory(move_destinations=[("AIOSCU", "127.0.0.1", our_port)])
        ae_title = "QRSCP"
    outputs = []
    for index, program in enumerate(readme_programs()):
        script = tmp_path / f"readme_{index}.py"
        script.write_text(localise(program, "127.0.0.1", pacs.port, ae_title, our_port))  # type: ignore[attr-defined]
        outputs.append(run([sys.executable, str(script)], tmp_path))
    patient = corpus.patient(PATIENT)
    received = list((tmp_path / "received").rglob("*.dcm"))
    assert len(received) == len(patient.instances)
    # the quick start printed one line per series it fetched, each with its instance count
    fetched = re.findall(r"(\d+) instances, (\d+) bytes", outputs[1])
    assert fetched and all(int(count) > 0 for count, _ in fetched)


def test_echo_example(dcmqrscp: object, tmp_path: Path) -> None:
    out = run(
        [sys.executable, str(ROOT / "examples" / "echo.py"), "127.0.0.1",
         str(dcmqrscp.port), "QRSCP"],  # type: ignore[attr-defined]
        tmp_path,
    )
    assert "success" in out


@pytest.mark.parametrize("method", ["get", "move"])
def test_find_and_retrieve_example(
    method: str, orthanc_factory: Callable[..., object], corpus: Corpus, tmp_path: Path
) -> None:
    pytest.importorskip("SimpleITK")
    our_port = free_port()
    pacs = orthanc_factory(modalities={"AIOSCU": ("AIOSCU", "127.0.0.1", our_port)})
    out = run(
        [sys.executable, str(ROOT / "examples" / "find_and_retrieve.py"), "127.0.0.1",
         str(pacs.port), "ORTHANC", PATIENT, "20240101-20240131", "AX*",  # type: ignore[attr-defined]
         "--method", method, "--our-port", str(our_port)],
        tmp_path,
    )
    wanted = [s for s in corpus.patient(PATIENT).series if s.series_description.startswith("AX")]
    for series in wanted:
        assert f"{len(series.instances)} instances" in out
    assert out.count("SimpleITK image") == len(wanted)
