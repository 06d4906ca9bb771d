"""C-FIND against the real peers, DCMTK ``dcmqrscp`` and Orthanc, loaded with the corpus (the
acceptance tests of C-FIND): every level of Patient Root and Study Root with wildcard, range and
UID-list matching, counted against DCMTK ``findscu`` on the same peer; non-ASCII names; keys a peer
ignores; the hierarchy helper; cancel; Modality Worklist; results cut by the peer.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from peers import in_thread
from peers.corpus import Corpus, generate_worklist
from peers.dcmtk import find_datasets
from pydicom import Dataset
from pydicom.multival import MultiValue

import aiodicom
from aiodicom.negotiation import ContextProposal
from aiodicom.query import Level, Query, QueryModel
from aiodicom.uids import STUDY_ROOT_FIND, UNCOMPRESSED_TRANSFER_SYNTAXES

PEERS = ["dcmqrscp", "orthanc"]
JANUARY = (datetime.date(2024, 1, 1), datetime.date(2024, 1, 31))


def findscu_keys(query: Query) -> list[str]:
    """The identifier of ``query`` as findscu ``-k`` arguments (one sequence item at most)."""
    keys: list[str] = []

    def add(prefix: str, ds: Dataset) -> None:
        for elem in ds:
            name = prefix + elem.keyword
            if elem.VR == "SQ":
                if elem.value:
                    add(f"{name}[0].", elem.value[0])
                else:
                    keys.append(name)
                continue
            value = elem.value
            if value is None or value == "":
                keys.append(name)
            elif isinstance(value, (list, MultiValue)):
                keys.append(f"{name}=" + "\\".join(str(v) for v in value))
            else:
                keys.append(f"{name}={value}")

    add("", query.to_dataset())
    return keys


async def compare_with_findscu(
    server: Any, query: Query, tmp_path: Path
) -> tuple[list[Dataset], list[Dataset]]:
    """(aiodicom's matches, findscu's) for the same query on the same peer."""
    async with aiodicom.Client("AIOSCU") as client:
        ours = await client.peer(server.host, server.port, server.ae_title).find(query).all()
    model = {
        QueryModel.PATIENT_ROOT: "patient",
        QueryModel.STUDY_ROOT: "study",
        QueryModel.WORKLIST: "worklist",
    }[query.model]
    theirs = await in_thread(
        find_datasets, server.host, server.port, server.ae_title, findscu_keys(query),
        extract_dir=tmp_path / "findscu", model=model,
    )
    return ours, theirs


# --------------------------------------------------------------------------------------------
# Every level of both models, wildcard / range / UID list, counted against findscu
# --------------------------------------------------------------------------------------------

Case = Callable[[Corpus], tuple[Query, int]]


def _doe_mr(corpus: Corpus) -> Any:
    return corpus.patient("AIO0001").studies[1]  # MR HEAD, two series


CASES: dict[str, Case] = {
    "study-wildcard": lambda c: (Query.study(PatientName="D*"), 2),
    "study-range": lambda c: (
        Query.study(StudyDate=JANUARY), len(c.studies_between("20240101", "20240131"))
    ),
    "study-open-range": lambda c: (Query.study(StudyDate=(None, datetime.date(2023, 12, 31))), 1),
    "study-uid-list": lambda c: (
        Query.study(StudyInstanceUID=[s.study_instance_uid for s in c.studies[::2]]),
        len(c.studies[::2]),
    ),
    "study-non-ascii": lambda c: (Query.study(PatientName="Müller^Jürgen"), 1),
    "series-wildcard": lambda c: (
        Query.series(StudyInstanceUID=_doe_mr(c).study_instance_uid, Modality="M?"), 2
    ),
    "series-uid-list": lambda c: (
        Query.series(
            StudyInstanceUID=_doe_mr(c).study_instance_uid,
            SeriesInstanceUID=[_doe_mr(c).series[1].series_instance_uid, "1.2.3.4.5"],
        ),
        1,
    ),
    "series-range": lambda c: (
        Query.series(StudyInstanceUID=_doe_mr(c).study_instance_uid, SeriesDate=JANUARY), 2
    ),
    "image-uid-list": lambda c: (
        Query.image(
            StudyInstanceUID=c.studies[0].study_instance_uid,
            SeriesInstanceUID=c.studies[0].series[0].series_instance_uid,
            SOPInstanceUID=[i.sop_instance_uid for i in c.studies[0].instances[1:4:2]],
        ),
        2,
    ),
    "image-single": lambda c: (
        Query.image(
            StudyInstanceUID=c.studies[0].study_instance_uid,
            SeriesInstanceUID=c.studies[0].series[0].series_instance_uid,
            InstanceNumber=2,
        ),
        1,
    ),
    "image-range": lambda c: (
        Query.image(
            StudyInstanceUID=c.studies[0].study_instance_uid,
            SeriesInstanceUID=c.studies[0].series[0].series_instance_uid,
            ContentDate=(datetime.date(2024, 1, 1), None),
        ),
        len(c.studies[0].series[0].instances),
    ),
    "patient-wildcard-name": lambda c: (Query.patient(PatientName="*^J*"), 3),
    "patient-wildcard-id": lambda c: (Query.patient(PatientID="AIO000?"), 5),
    "patient-range": lambda c: (
        Query.patient(PatientBirthDate=(datetime.date(1960, 1, 1), datetime.date(1985, 12, 31))),
        4,
    ),
    "patient-study-range": lambda c: (
        Query.study(
            model=QueryModel.PATIENT_ROOT, PatientID="AIO0004",
            StudyDate=(datetime.date(2024, 1, 1), None),
        ),
        1,
    ),
    "patient-study-uid-list": lambda c: (
        Query.study(
            model=QueryModel.PATIENT_ROOT, PatientID="AIO0001",
            StudyInstanceUID=[s.study_instance_uid for s in c.patient("AIO0001").studies],
        ),
        2,
    ),
    "patient-series-wildcard": lambda c: (
        Query.series(
            model=QueryModel.PATIENT_ROOT, PatientID="AIO0001",
            StudyInstanceUID=_doe_mr(c).study_instance_uid, Modality="M*",
        ),
        2,
    ),
    "patient-image-uid-list": lambda c: (
        Query.image(
            model=QueryModel.PATIENT_ROOT, PatientID="AIO0001",
            StudyInstanceUID=_doe_mr(c).study_instance_uid,
            SeriesInstanceUID=_doe_mr(c).series[0].series_instance_uid,
            SOPInstanceUID=[i.sop_instance_uid for i in _doe_mr(c).series[0].instances[:3]],
        ),
        3,
    ),
}


@pytest.mark.interop
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("peer_name", PEERS)
async def test_match_counts_equal_findscu(
    request: pytest.FixtureRequest, corpus: Corpus, tmp_path: Path, peer_name: str, case: str
) -> None:
    server = request.getfixturevalue(peer_name)
    query, expected = CASES[case](corpus)
    query.validate()  # every case is a hierarchical query: both peers must take it as it is
    ours, theirs = await compare_with_findscu(server, query, tmp_path)
    assert query.level is not None
    unique = query.level.unique_key
    assert len(ours) == len(theirs) == expected
    assert sorted(str(m[unique].value) for m in ours) == sorted(
        str(m[unique].value) for m in theirs
    )
    for match in ours:
        assert match.QueryRetrieveLevel == query.level.value


# --------------------------------------------------------------------------------------------
# Non-ASCII patient names, as query values and in responses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "character_set"),
    [
        ("Müller^Jürgen", None),
        ("山田^太郎", None),
        ("Lindqvist^Åsa", None),  # stored in ISO_IR 100, asked in UTF-8
        ("Lindqvist^Åsa", "ISO_IR 100"),
        ("Müller*", None),
    ],
)
@pytest.mark.interop
@pytest.mark.parametrize("peer_name", PEERS)
async def test_non_ascii_patient_name_round_trips(
    request: pytest.FixtureRequest, corpus: Corpus, peer_name: str, name: str,
    character_set: str | None,
) -> None:
    server = request.getfixturevalue(peer_name)
    wanted = [p for p in corpus.patients if p.patient_name.startswith(name.rstrip("*"))]
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer(server.host, server.port, server.ae_title)
        query = Query.patient(PatientName=name, character_set=character_set)
        matches = await peer.find(query).all()
    assert [str(m.PatientName) for m in matches] == [p.patient_name for p in wanted]
    assert [m.PatientID for m in matches] == [p.patient_id for p in wanted]
    if peer_name == "dcmqrscp":
        # dcmqrscp answers in the query's character set (peers.md)
        assert matches[0].SpecificCharacterSet == (character_set or "ISO_IR 192")


# --------------------------------------------------------------------------------------------
# Keys a peer ignores
# --------------------------------------------------------------------------------------------


async def test_dcmqrscp_ignoring_series_description_is_reported(
    dcmqrscp: Any, orthanc: Any, corpus: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    study = _doe_mr(corpus)
    query = Query.series(StudyInstanceUID=study.study_instance_uid, SeriesDescription="AX T1")
    async with aiodicom.Client("AIOSCU") as client:
        ignoring = client.peer(dcmqrscp.host, dcmqrscp.port, dcmqrscp.ae_title).find(query)
        assert len(await ignoring.all()) == len(study.series)  # nothing was filtered
        honouring = client.peer(orthanc.host, orthanc.port, orthanc.ae_title).find(query)
        assert [m.SeriesDescription for m in await honouring.all()] == ["AX T1"]
    assert ignoring.result is not None and ignoring.result.ignored_keys == ("SeriesDescription",)
    assert any("SeriesDescription" in w for w in ignoring.result.warnings)
    assert "ignored matching key(s) SeriesDescription" in caplog.text
    assert honouring.result is not None and honouring.result.ignored_keys == ()


# --------------------------------------------------------------------------------------------
# The hierarchy helper
# --------------------------------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("peer_name", PEERS)
async def test_find_series_against_real_peers(
    request: pytest.FixtureRequest, corpus: Corpus, peer_name: str
) -> None:
    server = request.getfixturevalue(peer_name)
    january = corpus.studies_between("20240101", "20240131")
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer(server.host, server.port, server.ae_title)
        mr = await peer.find_series(PatientID="AIO0001", Modality="MR", StudyDescription=None).all()
        helper = peer.find_series(StudyDate=JANUARY, SeriesDescription="AX T1")
        ax_t1 = await helper.all()
    doe_mr = _doe_mr(corpus)
    assert sorted(m.SeriesInstanceUID for m in mr) == sorted(
        s.series_instance_uid for s in doe_mr.series
    )
    for match in mr:  # the study's attributes came along
        assert match.StudyInstanceUID == doe_mr.study_instance_uid
        assert match.StudyDescription == doe_mr.study_description
        assert match.StudyDate == doe_mr.study_date
        assert match.AccessionNumber == doe_mr.accession_number
        assert str(match.PatientName) == "Doe^John"
    assert helper.result is not None and helper.result.queries == 1 + len(january)
    if peer_name == "dcmqrscp":  # it ignores SeriesDescription: every series comes back
        assert len(ax_t1) == sum(len(s.series) for s in january)
        assert helper.result.ignored_keys == ("SeriesDescription",)
    else:
        expected = [s for st in january for s in st.series if s.series_description == "AX T1"]
        assert sorted(m.SeriesInstanceUID for m in ax_t1) == sorted(
            s.series_instance_uid for s in expected
        )
        assert helper.result.ignored_keys == ()
    names = {m.StudyInstanceUID: str(m.PatientName) for m in ax_t1}
    assert names == {st.study_instance_uid: st.patient_name for st in january
                     if st.study_instance_uid in names}


# --------------------------------------------------------------------------------------------
# Cancel on a real peer, then the same association again
# --------------------------------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("peer_name", PEERS)
async def test_cancel_then_reuse_association(
    request: pytest.FixtureRequest, corpus: Corpus, peer_name: str
) -> None:
    server = request.getfixturevalue(peer_name)
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer(server.host, server.port, server.ae_title)
        context = ContextProposal(STUDY_ROOT_FIND, UNCOMPRESSED_TRANSFER_SYNTAXES)
        async with peer.associate([context]) as session:
            find = session.find(Query.image(
                StudyInstanceUID=corpus.studies[0].study_instance_uid,
                SeriesInstanceUID=corpus.studies[0].series[0].series_instance_uid,
            ))
            async with find:
                async for _ in find:
                    break
            assert find.result is not None and find.result.cancelled
            # However the peer ended it (FE00, or success if it had already finished)...
            assert find.result.status in (0xFE00, 0x0000)
            # ...the association carries the next C-FIND.
            studies = await session.find(Query.study()).all()
            assert len(studies) == len(corpus.studies)
            assert session.usable


# --------------------------------------------------------------------------------------------
# Orthanc: Modality Worklist, and results cut by its limits
# --------------------------------------------------------------------------------------------


async def test_modality_worklist_against_orthanc(
    orthanc_factory: Callable[..., Any], tmp_path: Path
) -> None:
    items = generate_worklist(tmp_path / "worklist", station_ae="AIOSCU")
    server = orthanc_factory(worklist_dir=tmp_path / "worklist", load_corpus=False)
    mr = Query.worklist(ScheduledProcedureStepSequence={"Modality": "MR"})
    ours, theirs = await compare_with_findscu(server, mr, tmp_path)
    expected = sorted(i.accession_number for i in items if i.modality == "MR")
    assert sorted(m.AccessionNumber for m in ours) == expected
    assert len(theirs) == len(ours)
    for match in ours:
        step = match.ScheduledProcedureStepSequence[0]
        assert step.Modality == "MR" and step.ScheduledStationAETitle == "AIOSCU"
    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer(server.host, server.port, server.ae_title)
        named = await peer.find(Query.worklist(PatientName="Müller^Jürgen")).all()
        first_day = await peer.find(Query.worklist(ScheduledProcedureStepSequence={
            "ScheduledProcedureStepStartDate": (datetime.date(2024, 3, 1),) * 2,
        })).all()
    assert [str(m.PatientName) for m in named] == ["Müller^Jürgen"]
    assert sorted(m.AccessionNumber for m in first_day) == sorted(
        i.accession_number for i in items if i.scheduled_date == "20240301"
    )


async def test_orthanc_result_limit_is_reported_as_truncation(
    orthanc_factory: Callable[..., Any], corpus: Corpus
) -> None:
    server = orthanc_factory(extra_config={"LimitFindResults": 3})
    async with aiodicom.Client("AIOSCU") as client:
        find = client.peer(server.host, server.port, server.ae_title).find(Query.study())
        matches = await find.all()
    assert len(matches) == 3 < len(corpus.studies)
    assert find.result is not None
    assert find.result.truncated and not find.result.cancelled
    assert find.result.status == 0xFE00


def test_levels_have_their_unique_keys() -> None:
    assert [lvl.unique_key for lvl in Level] == [
        "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    ]
