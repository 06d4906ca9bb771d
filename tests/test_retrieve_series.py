"""retrieve_series against DCMTK dcmqrscp (which ignores SeriesDescription) and Orthanc (which
matches it), by C-MOVE and by C-GET: exactly the series asked for, geometry equal to SimpleITK's
ImageSeriesReader on the source files, and no more bytes than the series plus one probe
instance per rejected candidate.

The data are aiodicom's synthetic studies: patient AIO-0001 has an MR brain study on 20240312
(series "AX T1", "SAG T2", "COR T1") and a CT chest on 20240105 whose axial series is stored in
descending slice order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from peers import LOOPBACK
from pydicom import Dataset, dcmread

import aiodicom
from aiodicom.fileio import split_part10
from aiodicom.services.series_selection import CheckedBy, SeriesSelection
from aiodicom.sinks import DirectorySink
from aiodicom.testing.synthetic import write_synthetic

pytestmark = pytest.mark.interop

AE = "AIOSCU"
PATIENT = "AIO-0001"


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_synthetic(tmp_path_factory.mktemp("synthetic"), rows=32, columns=32, slices=10)


def series_files(files: list[Path], description: str, date: str) -> list[Path]:
    out = []
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        if (ds.PatientID, ds.StudyDate, ds.SeriesDescription) == (PATIENT, date, description):
            out.append(path)
    return out


def data_set_bytes(path: Path) -> int:
    return len(split_part10(path.read_bytes())[1])


@asynccontextmanager
async def pacs(
    kind: str, method: str, files: list[Path],
    dcmqrscp_factory: Callable[..., Any], orthanc_factory: Callable[..., Any],
) -> AsyncIterator[aiodicom.Peer]:
    listen = 0 if method == "move" else None
    async with aiodicom.Client(AE, listen_port=listen) as client:
        destinations = [(AE, LOOPBACK, client.listen_port)] if client.listen_port else []
        if kind == "dcmqrscp":
            server = dcmqrscp_factory(load_corpus=False, move_destinations=destinations)
            server.load(files)
        else:
            modalities = {AE: destinations[0]} if destinations else {}
            server = orthanc_factory(load_corpus=False, modalities=modalities)
            server.upload(files)
        yield client.peer(server.host, server.port, server.ae_title)


def assert_same_image(image: Any, files: list[Path]) -> None:
    sitk = pytest.importorskip("SimpleITK")
    np = pytest.importorskip("numpy")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(files[0].parent)))
    expected = reader.Execute()
    assert image.GetSize() == expected.GetSize()
    assert np.allclose(image.GetOrigin(), expected.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetSpacing(), expected.GetSpacing(), atol=1e-4)
    assert np.allclose(image.GetDirection(), expected.GetDirection(), atol=1e-6)
    assert np.array_equal(
        sitk.GetArrayFromImage(image).astype(np.float64),
        sitk.GetArrayFromImage(expected).astype(np.float64),
    )


def check_selection(
    selection: SeriesSelection, kind: str, files: list[Path], wanted: str, date: str,
    others: tuple[str, ...],
) -> None:
    source = series_files(files, wanted, date)
    assert [c.description for c in selection.selected] == [wanted]
    assert sorted(c.description for c in selection.rejected) == sorted(others)
    (series,) = selection.series
    assert len(series.instances) == len(source)
    assert_same_image(series.to_sitk(), source)
    series_bytes = sum(map(data_set_bytes, source))
    probe_size = max(map(data_set_bytes, files))
    # The series once, plus at most one instance of each rejected candidate.
    assert series_bytes <= selection.bytes_received
    assert selection.bytes_received <= series_bytes + probe_size * len(selection.rejected)
    (chosen,) = selection.selected
    checks = {check.keyword: check for check in chosen.checks}
    if kind == "dcmqrscp":
        # dcmqrscp neither matches nor returns SeriesDescription: checked on a probe's header,
        # whose instance is kept, not fetched twice.
        assert checks["SeriesDescription"].checked_by is CheckedBy.PROBE_HEADER
        assert "SeriesDescription" in selection.ignored_keys
        assert all(c.probe_sop_instance_uid for c in selection.candidates)
        assert all(c.probe_bytes > 0 for c in selection.rejected)
        assert selection.bytes_received == series_bytes + selection.probe_bytes
    else:
        assert checks["SeriesDescription"].checked_by is CheckedBy.PEER
        assert not selection.rejected
        assert selection.bytes_received == series_bytes
    assert checks["SeriesDescription"].value == wanted
    assert checks["PatientID"].checked_by is CheckedBy.PEER


@pytest.mark.parametrize("method", ["move", "get"])
@pytest.mark.parametrize("kind", ["dcmqrscp", "orthanc"])
async def test_retrieve_series_selects_exactly_the_series_asked_for(
    kind: str, method: str, synthetic_files: list[Path],
    dcmqrscp_factory: Callable[..., Any], orthanc_factory: Callable[..., Any],
) -> None:
    mr = ("AX T1", "SAG T2", "COR T1")
    async with pacs(kind, method, synthetic_files, dcmqrscp_factory, orthanc_factory) as peer:
        for wanted, pattern in (("AX T1", "AX*"), ("SAG T2", "SAG*"), ("COR T1", "*COR T?")):
            selection = await peer.retrieve_series(
                PatientID=PATIENT, StudyDate="20240312", SeriesDescription=pattern
            )
            assert selection.method == method
            others = tuple(d for d in mr if d != wanted) if kind == "dcmqrscp" else ()
            check_selection(selection, kind, synthetic_files, wanted, "20240312", others)
        # The axial CT stored in descending order, in a date range.
        selection = await peer.retrieve_series(
            PatientID=PATIENT, StudyDate="20240101-20240131", SeriesDescription="AX*"
        )
        check_selection(selection, kind, synthetic_files, "AX CT CHEST", "20240105", ())


async def test_retrieve_series_into_a_directory_sink_and_report(
    synthetic_files: list[Path], dcmqrscp_factory: Callable[..., Any],
    orthanc_factory: Callable[..., Any], tmp_path: Path,
) -> None:
    async with pacs("dcmqrscp", "get", synthetic_files, dcmqrscp_factory, orthanc_factory) as peer:
        sink = DirectorySink(tmp_path / "out")
        selection = await peer.retrieve_series(
            sink=sink, PatientID=PATIENT, StudyDate="20240312", SeriesDescription="AX*"
        )
        source = series_files(synthetic_files, "AX T1", "20240312")
        # Only the selected series was written: the rejected probes stayed out of the sink.
        assert len(list((tmp_path / "out").rglob("*.dcm"))) == len(source)
        (series,) = selection
        assert_same_image(series.to_sitk(), source)
        report = selection.report()
        assert "'SAG T2': rejected" in report and "'AX T1': selected" in report
        assert "checked on a probe instance's header" in report
        with pytest.raises(aiodicom.QueryError, match="at least one matching key"):
            await peer.retrieve_series()


async def test_keys_returned_but_not_matched_are_checked_on_the_returned_value(
    pynetdicom_find_scp_factory: Callable[..., Any],
) -> None:
    # A peer that returns SeriesDescription but answers every series whatever it is asked.
    def responder(identifier: Any) -> Any:
        answer = Dataset()
        answer.QueryRetrieveLevel = identifier.QueryRetrieveLevel
        answer.PatientID, answer.StudyDate, answer.StudyInstanceUID = PATIENT, "20240312", "1.2"
        if identifier.QueryRetrieveLevel == "STUDY":
            yield 0xFF00, answer
            return
        for number, description in enumerate(("AX T1", "SAG T2", "COR T1"), start=1):
            series = Dataset()
            series.update(answer)
            series.SeriesInstanceUID = f"1.2.{number}"
            series.SeriesDescription = description
            yield 0xFF00, series

    scp = pynetdicom_find_scp_factory(responder=responder)
    async with aiodicom.Client(AE) as client:
        peer = client.peer(LOOPBACK, scp.port, scp.ae_title)
        selection = await peer.retrieve_series(
            PatientID=PATIENT, StudyDate="20240312", SeriesDescription="FLAIR*"
        )
    assert len(selection) == 0 and len(selection.rejected) == 3
    assert selection.bytes_received == 0  # rejected on what the peer returned: nothing fetched
    assert selection.ignored_keys == ("SeriesDescription",)
    for candidate in selection.candidates:
        (check,) = candidate.rejected_by
        assert check.checked_by is CheckedBy.RETURNED_VALUE
        assert check.value == candidate.description and candidate.probe_sop_instance_uid is None


async def test_retrieve_series_on_one_session(
    synthetic_files: list[Path], dcmqrscp_factory: Callable[..., Any],
    orthanc_factory: Callable[..., Any],
) -> None:
    # Everything (both C-FIND levels, probes, retrievals) on the one association, in turn.
    plain = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    async with pacs("dcmqrscp", "move", synthetic_files, dcmqrscp_factory, orthanc_factory) as peer:
        proposals = [
            aiodicom.ContextProposal(aiodicom.QueryModel.STUDY_ROOT.find_sop_class, plain),
            aiodicom.ContextProposal(aiodicom.QueryModel.STUDY_ROOT.move_sop_class, plain),
        ]
        async with peer.associate(proposals) as session:
            selection = await session.retrieve_series(
                PatientID=PATIENT, StudyDate="20240312", SeriesDescription="AX*"
            )
    assert selection.method == "move"
    check_selection(selection, "dcmqrscp", synthetic_files, "AX T1", "20240312",
                    ("SAG T2", "COR T1"))
