"""The query model: builders, typed values, hierarchical rules, character sets, identifiers."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Any, cast

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from aiodicom.errors import DicomError
from aiodicom.query import Level, Query, QueryError, QueryModel, key_level

PR = QueryModel.PATIENT_ROOT
SR = QueryModel.STUDY_ROOT
PSO = QueryModel.PATIENT_STUDY_ONLY
MWL = QueryModel.WORKLIST

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.2"


def encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


def error_of(call: object) -> QueryError:
    assert callable(call)
    with pytest.raises(QueryError) as info:
        call()
    return info.value


# -- enums ------------------------------------------------------------------------------------


def test_query_error_is_a_dicom_error_and_a_value_error() -> None:
    assert issubclass(QueryError, DicomError)
    assert issubclass(QueryError, ValueError)


def test_level_values_are_the_wire_strings() -> None:
    assert [lvl.value for lvl in Level] == ["PATIENT", "STUDY", "SERIES", "IMAGE"]


@pytest.mark.parametrize(
    ("model", "find", "move", "get"),
    [
        (
            PR,
            "1.2.840.10008.5.1.4.1.2.1.1",
            "1.2.840.10008.5.1.4.1.2.1.2",
            "1.2.840.10008.5.1.4.1.2.1.3",
        ),
        (
            SR,
            "1.2.840.10008.5.1.4.1.2.2.1",
            "1.2.840.10008.5.1.4.1.2.2.2",
            "1.2.840.10008.5.1.4.1.2.2.3",
        ),
        (
            PSO,
            "1.2.840.10008.5.1.4.1.2.3.1",
            "1.2.840.10008.5.1.4.1.2.3.2",
            "1.2.840.10008.5.1.4.1.2.3.3",
        ),
        (MWL, "1.2.840.10008.5.1.4.31", None, None),
    ],
)
def test_sop_classes(model: QueryModel, find: str, move: str | None, get: str | None) -> None:
    assert (model.find_sop_class, model.move_sop_class, model.get_sop_class) == (find, move, get)


def test_sop_class_uid_by_service() -> None:
    query = Query.study(model=PR, PatientID="1")
    assert query.sop_class_uid("find") == "1.2.840.10008.5.1.4.1.2.1.1"
    assert query.sop_class_uid("move") == "1.2.840.10008.5.1.4.1.2.1.2"
    assert query.sop_class_uid("get") == "1.2.840.10008.5.1.4.1.2.1.3"
    assert "C-MOVE" in str(error_of(lambda: Query.worklist().sop_class_uid("move")))
    error_of(lambda: query.sop_class_uid("store"))


# -- builders ---------------------------------------------------------------------------------


def test_patient_builder_defaults_to_patient_root() -> None:
    query = Query.patient(PatientName="DOE^*")
    assert query.level is Level.PATIENT
    assert query.model is PR
    assert dict(query.keys) == {"PatientName": "DOE^*", "PatientID": None}


def test_study_builder_in_study_root_adds_patient_keys() -> None:
    query = Query.study()
    assert (query.level, query.model) == (Level.STUDY, SR)
    assert set(query.keys) == {
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
    }
    assert all(value is None for value in query.keys.values())


def test_study_builder_in_patient_root_follows_its_table() -> None:
    query = Query.study(model=PR, PatientID="123")
    assert set(query.keys) == {
        "PatientID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyInstanceUID",
    }
    assert query.keys["PatientID"] == "123"


def test_series_and_image_builders_add_their_required_keys() -> None:
    series = Query.series(StudyInstanceUID=STUDY_UID)
    assert {"Modality", "SeriesNumber", "SeriesInstanceUID"} <= set(series.keys)
    image = Query.image(StudyInstanceUID=STUDY_UID, SeriesInstanceUID=SERIES_UID)
    assert {"InstanceNumber", "SOPInstanceUID", "SOPClassUID"} <= set(image.keys)
    assert image.level is Level.IMAGE


def test_required_keys_opt_out() -> None:
    query = Query.series(StudyInstanceUID=STUDY_UID, required_keys=False)
    assert dict(query.keys) == {"StudyInstanceUID": STUDY_UID}


def test_given_values_win_over_required_return_keys() -> None:
    query = Query.study(StudyDate=dt.date(2024, 1, 2))
    assert query.keys["StudyDate"] == dt.date(2024, 1, 2)


def test_worklist_builder() -> None:
    query = Query.worklist(ScheduledProcedureStepSequence={"Modality": "MR"})
    assert query.level is None
    assert query.model is MWL
    step = query.keys["ScheduledProcedureStepSequence"]
    assert isinstance(step, dict) or hasattr(step, "keys")
    assert step["Modality"] == "MR"  # type: ignore[index]
    assert step["ScheduledStationAETitle"] is None  # type: ignore[index]
    assert {"PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"} <= set(query.keys)


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: Query.patient(model=SR), "PATIENT_ROOT"),
        (lambda: Query.series(model=PSO), "no SERIES level"),
        (lambda: Query.image(model=PSO), "no IMAGE level"),
        (lambda: Query.study(model=MWL), "Query.worklist"),
        (lambda: Query.worklist(model=SR), "WORKLIST"),
    ],
)
def test_level_must_exist_in_the_model(build: object, needle: str) -> None:
    assert needle in str(error_of(build))


def test_direct_construction_normalizes_and_checks() -> None:
    query = Query(Level.STUDY, SR, {"StudyDate": "20240101"})
    assert query.keys["StudyDate"] == "20240101"
    error_of(lambda: Query(None, SR, {}))
    error_of(lambda: Query(Level.STUDY, MWL, {}))


# -- keywords ---------------------------------------------------------------------------------


def test_unknown_keyword_names_it_and_suggests() -> None:
    error = error_of(lambda: Query.study(PatientsName="DOE"))
    assert error.key == "PatientsName"
    assert "PatientsName" in str(error)
    assert "'PatientName'" in str(error)


def test_unknown_keyword_suggests_the_query_key() -> None:
    assert "StudyInstanceUID" in str(error_of(lambda: Query.study(StudyUID=STUDY_UID)))


def test_keyword_case_is_pointed_out() -> None:
    assert "case-sensitive" in str(error_of(lambda: Query.study(patientname="DOE")))


def test_unknown_keyword_without_anything_close() -> None:
    assert "did you mean" not in str(error_of(lambda: Query.study(Xyzzy=None)))


@pytest.mark.parametrize("keyword", ["QueryRetrieveLevel", "SpecificCharacterSet"])
def test_reserved_keywords_are_refused(keyword: str) -> None:
    assert error_of(lambda: Query.study(**{keyword: cast(Any, "X")})).key == keyword


def test_command_and_meta_keywords_are_refused() -> None:
    error_of(lambda: Query.study(TransferSyntaxUID="1.2.840.10008.1.2"))
    error_of(lambda: Query.study(CommandField=32))


def test_unknown_keyword_inside_a_sequence_names_the_path() -> None:
    error = error_of(lambda: Query.worklist(ScheduledProcedureStepSequence={"Modalty": "CT"}))
    assert error.key == "ScheduledProcedureStepSequence.Modalty"
    assert "'Modality'" in str(error)


# -- typed values -> exact strings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("StudyDate", dt.date(2024, 3, 7), "20240307"),
        ("StudyDate", (dt.date(2024, 1, 1), dt.date(2024, 1, 31)), "20240101-20240131"),
        ("StudyDate", (None, dt.date(2024, 1, 31)), "-20240131"),
        ("StudyDate", (dt.date(2024, 1, 1), None), "20240101-"),
        ("StudyDate", "20240101-20240131", "20240101-20240131"),
        ("StudyDate", " 20240101- ", "20240101-"),
        ("StudyTime", dt.time(8, 5, 9), "080509"),
        ("StudyTime", dt.time(8, 5, 9, 120000), "080509.120000"),
        ("StudyTime", (dt.time(8), dt.time(17, 30)), "080000-173000"),
        ("StudyTime", "0800-", "0800-"),
        ("AcquisitionDateTime", dt.datetime(2024, 1, 2, 3, 4, 5), "20240102030405"),
        (
            "AcquisitionDateTime",
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            "20240102030405-0500",
        ),
        (
            "AcquisitionDateTime",
            (dt.datetime(2024, 1, 2, 3, 4, 5), None),
            "20240102030405-",
        ),
        ("AcquisitionDateTime", dt.date(2024, 1, 2), "20240102"),
        ("AcquisitionDateTime", "2024-2025", "2024-2025"),
        ("AcquisitionDateTime", "20240101120000-0500", "20240101120000-0500"),
        ("PatientName", "DOE^J*", "DOE^J*"),
        ("PatientID", 1234, "1234"),
        ("Modality", "C?", "C?"),
    ],
)
def test_typed_values_encode_to_exact_strings(keyword: str, value: object, expected: str) -> None:
    ds = Query.study(required_keys=False, **{keyword: cast(Any, value)}).to_dataset()
    assert str(ds[keyword].value) == expected


def test_uid_list_encodes_multi_valued() -> None:
    ds = Query.series(StudyInstanceUID=[STUDY_UID, SERIES_UID], required_keys=False).to_dataset()
    assert list(ds.StudyInstanceUID) == [STUDY_UID, SERIES_UID]
    assert f"{STUDY_UID}\\{SERIES_UID}".encode() in encode(ds)


def test_uid_list_from_a_backslash_string() -> None:
    query = Query.study(StudyInstanceUID=f"{STUDY_UID}\\{SERIES_UID}")
    assert query.keys["StudyInstanceUID"] == (STUDY_UID, SERIES_UID)


def test_integers_and_decimals() -> None:
    ds = Query.image(
        StudyInstanceUID=STUDY_UID,
        SeriesInstanceUID=SERIES_UID,
        InstanceNumber=7,
        SliceThickness=0.1 + 0.2,
        Rows="512",
        required_keys=False,
    ).to_dataset()
    assert ds.InstanceNumber == 7
    assert ds.Rows == 512
    assert len(str(ds["SliceThickness"].value)) <= 16
    encode(ds)


def test_return_keys_are_empty_in_the_identifier() -> None:
    ds = Query.study(StudyDescription="", PatientBirthDate=None).to_dataset()
    assert ds.QueryRetrieveLevel == "STUDY"
    for keyword in ("StudyDescription", "PatientBirthDate", "StudyInstanceUID", "PatientName"):
        assert ds[keyword].value in (None, "")
        assert keyword in ds
    assert "SpecificCharacterSet" not in ds


def test_both_ends_open_is_universal() -> None:
    query = Query.study(StudyDate=(None, None))
    assert query.keys["StudyDate"] is None
    assert "StudyDate" in query.return_keys


@pytest.mark.parametrize(
    ("keys", "key"),
    [
        ({"StudyDate": "2024*"}, "StudyDate"),
        ({"StudyTime": "10?000"}, "StudyTime"),
        ({"AcquisitionDateTime": "2024*"}, "AcquisitionDateTime"),
        ({"StudyInstanceUID": "1.2.*"}, "StudyInstanceUID"),
        ({"StudyInstanceUID": ["1.2.3", "1.2.*"]}, "StudyInstanceUID"),
        ({"NumberOfStudyRelatedSeries": "1*"}, "NumberOfStudyRelatedSeries"),
        ({"PatientAge": "04?Y"}, "PatientAge"),
    ],
)
def test_wildcards_refused_where_the_vr_forbids_them(keys: dict[str, Any], key: str) -> None:
    error = error_of(lambda: Query.study(**keys))
    assert error.key == key
    assert "wildcard" in str(error) or "not" in str(error)


@pytest.mark.parametrize(
    ("keys", "key"),
    [
        ({"StudyDate": "2024-01-01"}, "StudyDate"),
        ({"StudyDate": "20240231x"}, "StudyDate"),
        ({"StudyDate": "-"}, "StudyDate"),
        ({"StudyDate": "20240201-20240101"}, "StudyDate"),
        ({"StudyDate": (dt.date(2024, 2, 1), dt.date(2024, 1, 1))}, "StudyDate"),
        ({"StudyDate": (dt.date(2024, 2, 1),)}, "StudyDate"),
        ({"StudyDate": dt.datetime(2024, 2, 1, 10)}, "StudyDate"),
        ({"StudyDate": 20240201}, "StudyDate"),
        ({"StudyTime": "10:00"}, "StudyTime"),
        ({"StudyTime": dt.time(10, tzinfo=dt.timezone.utc)}, "StudyTime"),
        ({"StudyTime": dt.date(2024, 1, 1)}, "StudyTime"),
        ({"StudyInstanceUID": "not-a-uid"}, "StudyInstanceUID"),
        ({"StudyInstanceUID": []}, "StudyInstanceUID"),
        ({"StudyInstanceUID": 123}, "StudyInstanceUID"),
        ({"ModalitiesInStudy": ["CT", "MR"]}, "ModalitiesInStudy"),
        ({"ModalitiesInStudy": "ct"}, "ModalitiesInStudy"),
        ({"ModalitiesInStudy": "CT\\MR"}, "ModalitiesInStudy"),
        ({"NumberOfStudyRelatedSeries": "many"}, "NumberOfStudyRelatedSeries"),
        ({"NumberOfStudyRelatedSeries": True}, "NumberOfStudyRelatedSeries"),
        ({"PatientWeight": "heavy"}, "PatientWeight"),
        ({"PatientAge": "45 years"}, "PatientAge"),
        ({"PatientName": 3.5}, "PatientName"),
        ({"StudyID": "Café"}, None),  # SH may carry it: this one is fine
    ],
)
def test_values_the_vr_cannot_carry(keys: dict[str, Any], key: str | None) -> None:
    if key is None:
        Query.study(**keys)
        return
    assert error_of(lambda: Query.study(**keys)).key == key


def test_default_repertoire_vrs_refuse_non_ascii() -> None:
    assert "ASCII" in str(error_of(lambda: Query.study(ModalitiesInStudy="CTÉ")))


def test_bulk_data_only_as_return_key() -> None:
    Query.image(
        StudyInstanceUID=STUDY_UID, SeriesInstanceUID=SERIES_UID, PixelData=None
    ).to_dataset()
    error_of(lambda: Query.image(PixelData=b"\0"))


def test_empty_value_matching_passes_through() -> None:
    ds = Query.study(StudyDescription='""', StudyDate='""', required_keys=False).to_dataset()
    assert ds.StudyDescription == '""'
    assert ds.StudyDate == '""'


# -- matching and return keys -----------------------------------------------------------------


def test_matching_and_return_keys() -> None:
    query = Query.study(
        PatientID="123", StudyDescription=None, StudyDate=(dt.date(2024, 1, 1), None)
    )
    assert query.matching_keys == {"PatientID": "123", "StudyDate": (dt.date(2024, 1, 1), None)}
    assert "StudyDescription" in query.return_keys
    assert "PatientID" not in query.return_keys
    assert set(query.matching_keys) | set(query.return_keys) == set(query.keys)


def test_sequence_is_matching_only_with_an_item_value() -> None:
    empty = Query.worklist()
    assert "ScheduledProcedureStepSequence" in empty.return_keys
    ct = Query.worklist(ScheduledProcedureStepSequence={"Modality": "CT"})
    assert "ScheduledProcedureStepSequence" in ct.matching_keys


# -- with_keys, equality ----------------------------------------------------------------------


def test_with_keys_returns_a_new_query() -> None:
    base = Query.study(PatientID="1")
    derived = base.with_keys(PatientID="2", StudyDescription="CHEST*")
    assert base.keys["PatientID"] == "1"
    assert "StudyDescription" not in base.keys
    assert derived.keys["PatientID"] == "2"
    assert derived.keys["StudyDescription"] == "CHEST*"
    assert (derived.level, derived.model) == (base.level, base.model)


def test_with_keys_checks_new_keys() -> None:
    error_of(lambda: Query.study().with_keys(StudyDate="yesterday"))


def test_queries_are_immutable_hashable_values() -> None:
    a = Query.study(PatientID="1", StudyInstanceUID=[STUDY_UID])
    b = Query.study(PatientID="1", StudyInstanceUID=(STUDY_UID,))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.level = Level.SERIES  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.keys["PatientID"] = "2"  # type: ignore[index]


# -- hierarchical rules (PS3.4 C.4.1.2.1) -----------------------------------------------------


def test_valid_hierarchical_queries() -> None:
    Query.patient(PatientName="DOE*").validate()
    Query.study(PatientName="DOE*", StudyDate=(dt.date(2024, 1, 1), None)).validate()
    Query.study(model=PR, PatientID="123", StudyDescription="CHEST*").validate()
    Query.series(StudyInstanceUID=STUDY_UID, Modality="CT").validate()
    Query.series(model=PR, PatientID="1", StudyInstanceUID=STUDY_UID).validate()
    Query.image(StudyInstanceUID=STUDY_UID, SeriesInstanceUID=SERIES_UID).validate()
    Query.image(
        model=PR, PatientID="1", StudyInstanceUID=STUDY_UID, SeriesInstanceUID=SERIES_UID
    ).validate()
    Query.study(model=PSO, PatientID="1").validate()
    # The unique key of the query level itself may be a list or a wildcard.
    Query.series(StudyInstanceUID=STUDY_UID, SeriesInstanceUID=[SERIES_UID, "1.2.3"]).validate()
    Query.patient(PatientID="12*").validate()


def test_patient_root_study_query_needs_patient_id() -> None:
    error = error_of(lambda: Query.study(model=PR, PatientName="DOE*").validate())
    assert error.key == "PatientID"
    assert "PatientID is missing" in str(error)
    assert "PATIENT" in str(error) or "patient" in str(error)


def test_study_root_series_query_needs_study_uid_and_mentions_find_series() -> None:
    query = Query.series(PatientID="123", StudyDate=dt.date(2024, 1, 1), SeriesDescription="T1*")
    error = error_of(query.validate)
    assert error.key == "StudyInstanceUID"
    message = str(error)
    assert "StudyInstanceUID is missing" in message
    assert "peer.find_series(" in message
    assert "relational" in message
    # The study-level matching keys are named too: a hierarchical SCP would not match on them.
    assert "PatientID is a STUDY-level key" in message
    assert "StudyDate is a STUDY-level key" in message


def test_image_query_needs_study_and_series_uids() -> None:
    message = str(error_of(Query.image().validate))
    assert "StudyInstanceUID is missing" in message
    assert "SeriesInstanceUID is missing" in message
    only_study = Query.image(StudyInstanceUID=STUDY_UID)
    assert error_of(only_study.validate).key == "SeriesInstanceUID"


def test_patient_root_image_query_needs_all_three() -> None:
    message = str(error_of(Query.image(model=PR).validate))
    for key in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert f"{key} is missing" in message


def test_unique_keys_above_must_be_single_values() -> None:
    query = Query.series(StudyInstanceUID=[STUDY_UID, "1.2.3"])
    error = error_of(query.validate)
    assert error.key == "StudyInstanceUID"
    assert "single value" in str(error)


def test_wildcard_patient_id_above_is_refused() -> None:
    query = Query.study(model=PR, PatientID="12*")
    assert "single value" in str(error_of(query.validate))


def test_keys_below_the_level_are_refused() -> None:
    error = error_of(Query.study(SeriesDescription="T1*").validate)
    assert error.key == "SeriesDescription"
    assert "SERIES-level key" in str(error)
    error = error_of(Query.study(SOPClassUID=None).validate)
    assert error.key == "SOPClassUID"
    patient = error_of(Query.patient(StudyDate=None).validate)
    assert patient.key == "StudyDate"


def test_patient_study_only_has_no_series_keys() -> None:
    error = error_of(Query.study(model=PSO, PatientID="1", Modality="CT").validate)
    assert "no SERIES level" in str(error)


def test_return_keys_of_levels_above_are_allowed() -> None:
    Query.series(StudyInstanceUID=STUDY_UID, StudyDate=None, PatientName=None).validate()


def test_patient_keys_are_study_level_in_study_root() -> None:
    # PatientBirthDate belongs to the PATIENT level, which Study Root folds into STUDY.
    Query.study(PatientBirthDate=dt.date(1970, 1, 1)).validate()
    error = error_of(Query.series(StudyInstanceUID=STUDY_UID, PatientSex="F").validate)
    assert "STUDY-level" in str(error)


def test_relational_relaxes_the_levels_above() -> None:
    query = Query.series(PatientID="123", StudyDate=dt.date(2024, 1, 1), SeriesDescription="T1*")
    query.validate(relational=True)
    Query.image(model=PR, SOPClassUID="1.2.840.10008.5.1.4.1.1.2").validate(relational=True)
    Query.series(StudyInstanceUID=[STUDY_UID, "1.2.3"]).validate(relational=True)


def test_relational_still_refuses_keys_below() -> None:
    error = error_of(lambda: Query.study(SeriesDescription="T1*").validate(relational=True))
    assert error.key == "SeriesDescription"


def test_worklist_step_keys_at_top_level_are_refused() -> None:
    error = error_of(Query.worklist(Modality="CT").validate)
    assert error.key == "Modality"
    assert "ScheduledProcedureStepSequence" in str(error)
    Query.worklist(ScheduledProcedureStepSequence={"Modality": "CT"}).validate()


def test_unknown_level_keys_are_not_judged() -> None:
    Query.study(
        RetrieveAETitle=None, InstanceAvailability=None, TimezoneOffsetFromUTC=None
    ).validate()


# -- worklist ---------------------------------------------------------------------------------


def test_worklist_identifier_with_step_sequence() -> None:
    query = Query.worklist(
        ScheduledProcedureStepSequence={
            "Modality": "MR",
            "ScheduledStationAETitle": "MR1",
            "ScheduledProcedureStepStartDate": (dt.date(2024, 5, 1), dt.date(2024, 5, 2)),
        },
        PatientName="DOE*",
    )
    query.validate()
    ds = query.to_dataset()
    assert "QueryRetrieveLevel" not in ds
    assert ds.PatientName == "DOE*"
    steps = ds.ScheduledProcedureStepSequence
    assert isinstance(steps, Sequence)
    assert len(steps) == 1
    item = steps[0]
    assert item.Modality == "MR"
    assert item.ScheduledStationAETitle == "MR1"
    assert item.ScheduledProcedureStepStartDate == "20240501-20240502"
    assert "ScheduledPerformingPhysicianName" in item
    assert "SpecificCharacterSet" not in item
    assert query.sop_class_uid("find") == "1.2.840.10008.5.1.4.31"
    encode(ds)


def test_worklist_step_as_dataset_or_one_item_list() -> None:
    item = Dataset()
    item.Modality = "CT"
    from_ds = Query.worklist(ScheduledProcedureStepSequence=item, required_keys=False)
    from_list = Query.worklist(
        ScheduledProcedureStepSequence=[{"Modality": "CT"}], required_keys=False
    )
    assert from_ds == from_list
    assert dict(from_ds.keys["ScheduledProcedureStepSequence"]) == {"Modality": "CT"}  # type: ignore[call-overload]


def test_sequence_takes_one_item() -> None:
    error = error_of(lambda: Query.worklist(ScheduledProcedureStepSequence=[{}, {}]))
    assert "single item" in str(error)
    error_of(lambda: Query.worklist(ScheduledProcedureStepSequence="CT"))


def test_empty_sequence_return_key() -> None:
    ds = Query.study(ProcedureCodeSequence=None, required_keys=False).to_dataset()
    assert "ProcedureCodeSequence" in ds
    assert len(ds.ProcedureCodeSequence) == 0
    encode(ds)


def test_nested_sequences() -> None:
    query = Query.study(
        ProcedureCodeSequence={"CodeValue": "CT-CHEST", "CodingSchemeDesignator": None},
        required_keys=False,
    )
    item = query.to_dataset().ProcedureCodeSequence[0]
    assert item.CodeValue == "CT-CHEST"
    assert "CodingSchemeDesignator" in item


# -- character sets ---------------------------------------------------------------------------


def test_ascii_values_need_no_character_set() -> None:
    query = Query.study(PatientName="DOE^JOHN")
    assert query.effective_character_set is None
    assert "SpecificCharacterSet" not in query.to_dataset()


def test_non_ascii_selects_utf8_and_pydicom_writes_utf8() -> None:
    query = Query.study(PatientName="Müller^Jürgen", StudyDescription="Schädel")
    ds = query.to_dataset()
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    raw = encode(ds)
    assert "Müller^Jürgen".encode() in raw
    assert "Schädel".encode() in raw
    assert "Müller".encode("latin-1") not in raw


def test_non_ascii_inside_a_sequence_item_selects_utf8() -> None:
    query = Query.worklist(
        ScheduledProcedureStepSequence={"ScheduledPerformingPhysicianName": "Çelik^Ayşe"}
    )
    ds = query.to_dataset()
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert "Çelik^Ayşe".encode() in encode(ds)


def test_caller_character_set_is_used() -> None:
    query = Query.study(PatientName="Müller", character_set="ISO_IR 100")
    ds = query.to_dataset()
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    raw = encode(ds)
    assert "Müller".encode("latin-1") in raw
    assert "Müller".encode() not in raw


def test_caller_character_set_sent_even_for_ascii() -> None:
    assert (
        Query.study(PatientName="DOE", character_set="ISO_IR 100").to_dataset().SpecificCharacterSet
        == "ISO_IR 100"
    )


def test_caller_character_set_that_cannot_encode_is_refused() -> None:
    error = error_of(lambda: Query.study(PatientName="Дмитрий", character_set="ISO_IR 100"))
    assert error.key == "PatientName"
    assert "ISO_IR 100" in str(error)
    error_of(lambda: Query.study(PatientName="Müller", character_set="ISO_IR 6"))
    Query.study(PatientName="Дмитрий", character_set="ISO_IR 144")


def test_code_extensions_take_characters_from_any_repertoire() -> None:
    charset = "\\ISO 2022 IR 87"
    query = Query.study(PatientName="Yamada^Tarou=山田^太郎", character_set=charset)
    assert list(query.to_dataset().SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
    error_of(lambda: Query.study(PatientName="Müller", character_set=charset))


def test_unknown_character_set_is_refused() -> None:
    assert "defined term" in str(error_of(lambda: Query.study(character_set="UTF-8")))
    error_of(lambda: Query.study(character_set=""))


# -- from_dataset -----------------------------------------------------------------------------


def test_from_dataset_reads_level_and_model() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = STUDY_UID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = ""
    query = Query.from_dataset(ds)
    assert (query.level, query.model) == (Level.SERIES, SR)
    assert dict(query.keys) == {
        "StudyInstanceUID": STUDY_UID,
        "Modality": "CT",
        "SeriesInstanceUID": None,
    }
    assert Query.from_dataset(ds, PR).model is PR


def test_from_dataset_patient_level_defaults_to_patient_root() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "PATIENT"
    ds.PatientName = "DOE*"
    assert Query.from_dataset(ds).model is PR


def test_from_dataset_round_trips_to_dataset() -> None:
    original = Query.worklist(
        ScheduledProcedureStepSequence={
            "Modality": "MR",
            "ScheduledProcedureStepStartDate": dt.date(2024, 5, 1),
        },
        PatientName="Müller*",
    )
    again = Query.from_dataset(original.to_dataset(), MWL)
    assert again.to_dataset() == original.to_dataset()
    assert again.character_set == "ISO_IR 192"

    study = Query.study(
        StudyDate=(dt.date(2024, 1, 1), None), StudyInstanceUID=[STUDY_UID, SERIES_UID]
    )
    assert Query.from_dataset(study.to_dataset()).to_dataset() == study.to_dataset()


def test_from_dataset_required_keys_on_request() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "1"
    assert set(Query.from_dataset(ds).keys) == {"PatientID"}
    assert "StudyInstanceUID" in Query.from_dataset(ds, required_keys=True).keys


def test_from_dataset_errors() -> None:
    ds = Dataset()
    ds.PatientName = "DOE"
    assert "WORKLIST" in str(error_of(lambda: Query.from_dataset(ds)))
    ds.QueryRetrieveLevel = "FRAME"
    error_of(lambda: Query.from_dataset(ds))
    ds.QueryRetrieveLevel = "STUDY"
    error_of(lambda: Query.from_dataset(ds, MWL))
    del ds.QueryRetrieveLevel
    ds.add_new(0x00091010, "LO", "private")
    error_of(lambda: Query.from_dataset(ds, MWL))


def test_key_level_in_a_model() -> None:
    assert key_level("PatientName") is Level.PATIENT
    assert key_level("PatientName", QueryModel.PATIENT_ROOT) is Level.PATIENT
    # Study Root has no PATIENT level: its STUDY level carries the patient (PS3.4 C.6-5).
    assert key_level("PatientName", QueryModel.STUDY_ROOT) is Level.STUDY
    assert key_level("Modality", QueryModel.STUDY_ROOT) is Level.SERIES
    assert key_level("NotAKeyword") is None


# -- retrieve identifier ----------------------------------------------------------------------


def test_retrieve_identifier_carries_unique_keys_only() -> None:
    query = Query.series(
        StudyInstanceUID=STUDY_UID, SeriesInstanceUID=[SERIES_UID, "1.2.3"], Modality="CT"
    )
    ds = query.retrieve_identifier()
    assert ds.QueryRetrieveLevel == "SERIES"
    assert ds.StudyInstanceUID == STUDY_UID
    assert list(ds.SeriesInstanceUID) == [SERIES_UID, "1.2.3"]
    assert "Modality" not in ds
    error_of(Query.series(StudyInstanceUID=STUDY_UID).retrieve_identifier)
    error_of(Query.worklist().retrieve_identifier)


# -- property tests ---------------------------------------------------------------------------

_DATE = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2999, 12, 31))
_DA_RANGE = re.compile(r"(\d{8})?-(\d{8})?")


def _parse_da(text: str | None) -> dt.date | None:
    return dt.datetime.strptime(text, "%Y%m%d").date() if text else None


@given(start=st.none() | _DATE, end=st.none() | _DATE)
def test_date_range_formatting_round_trips(start: dt.date | None, end: dt.date | None) -> None:
    if start is not None and end is not None and start > end:
        start, end = end, start
    query = Query.study(StudyDate=(start, end), required_keys=False)
    text = query.to_dataset().StudyDate
    if start is None and end is None:
        assert text in (None, "")
        return
    match = _DA_RANGE.fullmatch(text)
    assert match is not None
    assert (_parse_da(match[1]), _parse_da(match[2])) == (start, end)
    # The string form is accepted back as given.
    assert Query.study(StudyDate=text, required_keys=False).to_dataset().StudyDate == text


@given(
    moment=st.datetimes(
        min_value=dt.datetime(1900, 1, 1),
        max_value=dt.datetime(2999, 12, 31),
        timezones=st.none() | st.timezones(),
    )
)
# The second 22:00 of the night DST ends (fold=1) is at UTC-3, the first at UTC-2: the offset
# must be the one of the moment given, not of the first occurrence of its wall-clock time.
@example(moment=dt.datetime(2008, 10, 25, 22, tzinfo=zoneinfo.ZoneInfo("America/Godthab"), fold=1))
def test_datetime_formatting_round_trips(moment: dt.datetime) -> None:
    text = (
        Query.study(AcquisitionDateTime=moment, required_keys=False)
        .to_dataset()
        .AcquisitionDateTime
    )
    match = re.fullmatch(r"(\d{14})(\.\d{6})?([+-]\d{4})?", text)
    assert match is not None
    parsed = dt.datetime.strptime(match[1] + (match[2] or ".000000"), "%Y%m%d%H%M%S.%f")
    assert parsed == moment.replace(tzinfo=None)
    offset = moment.utcoffset()
    if offset is None:
        assert match[3] is None
    else:
        sign = -1 if match[3][0] == "-" else 1
        minutes = sign * (int(match[3][1:3]) * 60 + int(match[3][3:5]))
        # DT offsets are whole minutes; sub-minute offsets are truncated toward zero.
        assert abs(offset.total_seconds() / 60 - minutes) < 1
