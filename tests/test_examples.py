"""The README's code blocks and examples/ run as written against real peers, and against the
embedded Q/R SCP started as a user would start it: ``python -m aiodicom qrscp PORT DIR
--synthetic --move-dest AIOSCU=127.0.0.1:PORT`` in a subprocess.

Only the site-specific values change: the PACS address and AE title, the Patient ID, and the
port of our embedded Storage SCP.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from peers import free_port
from peers.aiodicom_cli import CliServer, qrscp
from peers.corpus import Corpus

ROOT = Path(__file__).resolve().parent.parent
PATIENT = "AIO0001"  # two studies in January 2024, series "AX CT", "AX T1" and "SAG T2"


EmbeddedFactory = Callable[..., CliServer]


@pytest.fixture
def embedded_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedFactory]:
    """``embedded_factory(files=None, our_port=None)``: ``python -m aiodicom qrscp`` in a
    subprocess, on a new directory holding copies of ``files`` (of one tree), or filled by
    ``--synthetic`` when none are given; AIOSCU at ``our_port`` is its move destination."""
    started: list[CliServer] = []

    def start(files: list[Path] | None = None, our_port: int | None = None) -> CliServer:
        directory = tmp_path_factory.mktemp("embedded") / "archive"
        if files:
            root = Path(os.path.commonpath([str(f) for f in files]))
            shutil.copytree(root, directory, ignore=shutil.ignore_patterns(".*"))
        destinations = [("AIOSCU", "127.0.0.1", our_port)] if our_port else []
        server = qrscp(directory, directory.parent, move_destinations=destinations).start()
        started.append(server)
        return server

    yield start
    for server in started:
        assert server.stop() == 0, server.log_text()


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
    # The first: a series found by Patient ID, date and Series Description, as an image.
    assert "to_sitk" in programs[0]
    assert "async for match in client.find(" in programs[0]
    assert "retrieve_series" in programs[0]


@pytest.mark.parametrize("peer_kind", ["orthanc", "dcmqrscp", "embedded"])
def test_readme_programs_run(
    peer_kind: str,
    orthanc_factory: Callable[..., object],
    dcmqrscp_factory: Callable[..., object],
    embedded_factory: EmbeddedFactory,
    corpus: Corpus,
    tmp_path: Path,
) -> None:
    pytest.importorskip("SimpleITK")
    our_port = free_port()
    if peer_kind == "embedded":
        pacs: Any = embedded_factory(corpus.files, our_port)
        ae_title = "AIOQR"
    elif peer_kind == "orthanc":
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


@pytest.mark.interop
def test_echo_example_embedded(embedded_factory: EmbeddedFactory, tmp_path: Path) -> None:
    server = embedded_factory()
    out = run([sys.executable, str(ROOT / "examples" / "echo.py"), server.host,
               str(server.port), server.ae_title], tmp_path)
    assert "success" in out


@pytest.mark.interop
@pytest.mark.parametrize("method", ["get", "move"])
def test_find_and_retrieve_example_embedded(
    method: str, embedded_factory: EmbeddedFactory, tmp_path: Path
) -> None:
    pytest.importorskip("SimpleITK")
    our_port = free_port()
    server = embedded_factory(None, our_port)  # --synthetic: 64 x 64 pixels, 12 slices
    out = run(
        [sys.executable, str(ROOT / "examples" / "find_and_retrieve.py"), server.host,
         str(server.port), server.ae_title, "AIO-0001", "20240301-20240331", "AX*",
         "--method", method, "--our-port", str(our_port)],
        tmp_path,
    )
    assert "12 instances" in out and out.count("SimpleITK image") == 1


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


# --- the examples on the synthetic studies ----------------------------------------------------
#
# Patient AIO-0001 (aiodicom.testing.synthetic): a CT chest on 20240105 (axial, stored in
# descending order) and an MR brain on 20240312 ("AX T1", "SAG T2", "COR T1").

SYNTHETIC_PATIENT = "AIO-0001"


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from aiodicom.testing.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synthetic"), rows=32, columns=32, slices=8)


def synthetic_pacs(
    kind: str, files: list[Path], our_port: int | None,
    dcmqrscp_factory: Callable[..., Any], orthanc_factory: Callable[..., Any],
    embedded_factory: EmbeddedFactory | None = None,
) -> str:
    """A PACS holding the synthetic studies, knowing AIOSCU at ``our_port``: its HOST:PORT:AE."""
    destinations = [("AIOSCU", "127.0.0.1", our_port)] if our_port else []
    if kind == "embedded":
        assert embedded_factory is not None
        return embedded_factory(files, our_port).address
    if kind == "dcmqrscp":
        server = dcmqrscp_factory(load_corpus=False, move_destinations=destinations)
        server.load(files)
    else:
        server = orthanc_factory(load_corpus=False, modalities=dict(
            (ae, (ae, host, port)) for ae, host, port in destinations
        ))
        server.upload(files)
    return f"{server.host}:{server.port}:{server.ae_title}"


def example(name: str, *args: str, cwd: Path) -> str:
    return run([sys.executable, str(ROOT / "examples" / name), *args], cwd)


@pytest.mark.parametrize(("kind", "method"), [
    ("dcmqrscp", "move"), ("orthanc", "get"), ("embedded", "move"), ("embedded", "get"),
])
def test_retrieve_series_example(
    kind: str, method: str, synthetic_files: list[Path], dcmqrscp_factory: Callable[..., Any],
    orthanc_factory: Callable[..., Any], embedded_factory: EmbeddedFactory, tmp_path: Path,
) -> None:
    pytest.importorskip("SimpleITK")
    our_port = free_port()
    pacs = synthetic_pacs(kind, synthetic_files, our_port, dcmqrscp_factory, orthanc_factory,
                          embedded_factory)
    out = example(
        "retrieve_series.py", SYNTHETIC_PATIENT, "20240312", "AX*", "--method", method,
        "--pacs", pacs, "--our-port", str(our_port), cwd=tmp_path,
    )
    assert "'AX T1': selected" in out and out.count("image (32, 32, 8)") == 1
    if kind == "dcmqrscp":  # it ignores Series Description: the others were probed, rejected
        assert "'SAG T2': rejected" in out and "'COR T1': rejected" in out


@pytest.mark.parametrize("kind", ["dcmqrscp", "embedded"])
def test_find_levels_example(
    kind: str, synthetic_files: list[Path], dcmqrscp_factory: Callable[..., Any],
    orthanc_factory: Callable[..., Any], embedded_factory: EmbeddedFactory, tmp_path: Path,
) -> None:
    pacs = synthetic_pacs(kind, synthetic_files, None, dcmqrscp_factory, orthanc_factory,
                          embedded_factory)
    out = example("find_levels.py", SYNTHETIC_PATIENT, "--pacs", pacs, cwd=tmp_path)
    tables = dict(re.findall(r"\n(PATIENT|STUDY|SERIES|IMAGE)\n[^\n]*\n((?:.+\n?)*)", out))
    counts = {level: len(rows.strip().splitlines()) for level, rows in tables.items()}
    assert counts == {"PATIENT": 1, "STUDY": 2, "SERIES": 4, "IMAGE": 4 * 8}


@pytest.mark.parametrize("kind", ["orthanc", "embedded"])
def test_move_and_get_example(
    kind: str, synthetic_files: list[Path], dcmqrscp_factory: Callable[..., Any],
    orthanc_factory: Callable[..., Any], embedded_factory: EmbeddedFactory, tmp_path: Path,
) -> None:
    our_port = free_port()
    pacs = synthetic_pacs(kind, synthetic_files, our_port, dcmqrscp_factory, orthanc_factory,
                          embedded_factory)
    out = example(
        "move_and_get.py", SYNTHETIC_PATIENT, "--pacs", pacs, "--our-port", str(our_port),
        "--out", str(tmp_path / "received"), cwd=tmp_path,
    )
    # CT: one series of 8; MR: three series of 8; each study moved, then got again.
    for what in ("C-MOVE", "C-GET"):
        assert f"{what} 20240105: 8 instances" in out
        assert f"{what} 20240312: 24 instances" in out
        assert re.search(rf"{what} 20240312: \d+ done, \d+ remaining", out)
    assert len(list((tmp_path / "received").rglob("*.dcm"))) == 32


@pytest.mark.parametrize(("first_kind", "second_kind"), [
    ("dcmqrscp", "orthanc"), ("dcmqrscp", "embedded"),
])
def test_two_pacs_example(
    first_kind: str, second_kind: str, synthetic_files: list[Path],
    dcmqrscp_factory: Callable[..., Any], orthanc_factory: Callable[..., Any],
    embedded_factory: EmbeddedFactory, tmp_path: Path,
) -> None:
    first = synthetic_pacs(first_kind, synthetic_files, None, dcmqrscp_factory, orthanc_factory,
                           embedded_factory)
    second = synthetic_pacs(second_kind, synthetic_files, None, dcmqrscp_factory,
                            orthanc_factory, embedded_factory)
    out = example("two_pacs.py", SYNTHETIC_PATIENT, first, second, cwd=tmp_path)
    second_ae = second.rsplit(":", 1)[1]
    assert "QRSCP: 2 studies" in out and f"{second_ae}: 2 studies" in out
    assert out.count("20240312") == 2


@pytest.mark.parametrize("kind", ["orthanc", "embedded"])
async def test_web_studies_example_streams_dicom_json(
    kind: str, synthetic_files: list[Path], dcmqrscp_factory: Callable[..., Any],
    orthanc_factory: Callable[..., Any], embedded_factory: EmbeddedFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("starlette")
    import importlib.util

    pacs = synthetic_pacs(kind, synthetic_files, None, dcmqrscp_factory, orthanc_factory,
                          embedded_factory)
    monkeypatch.setenv("PACS", pacs)
    spec = importlib.util.spec_from_file_location("web_studies", ROOT / "examples/web_studies.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.app

    async def call(query_string: str) -> tuple[int, dict[str, str], list[bytes]]:
        # Driven as raw ASGI, so that each body message the app sends is seen on its own
        # (httpx's ASGITransport would join them).
        messages: list[dict[str, Any]] = []
        done = anyio.Event()

        async def receive() -> dict[str, Any]:
            if not messages and not done.is_set():
                done.set()
                return {"type": "http.request", "body": b"", "more_body": False}
            await anyio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/studies", "raw_path": b"/studies",
            "query_string": query_string.encode(), "headers": [], "root_path": "",
            "server": ("web", 80), "client": ("127.0.0.1", 1234), "app": app,
        }
        await app(scope, receive, send)
        start = messages[0]
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], headers, [m.get("body", b"") for m in messages[1:]]

    async with app.router.lifespan_context(app):
        status, headers, pieces = await call(f"PatientID={SYNTHETIC_PATIENT}")
        bad_status, _, bad_body = await call("NoSuchKeyword=1")
    assert status == 200 and headers["content-type"].startswith("application/dicom+json")
    studies = json.loads(b"".join(pieces))
    assert sorted(s["00080020"]["Value"][0] for s in studies) == ["20240105", "20240312"]
    assert all(s["00100020"]["Value"] == [SYNTHETIC_PATIENT] for s in studies)
    # One body message per match (and one to close the array): streamed, not buffered.
    assert len([piece for piece in pieces if piece]) == len(studies) + 1
    assert bad_status == 400 and b"NoSuchKeyword" in b"".join(bad_body)
