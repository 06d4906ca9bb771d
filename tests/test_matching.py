"""Local C-FIND matching (PS3.4 C.2.2.2): contradictions and ignored matching keys."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from aiodicom.matching import contradictions, missing_matching_keys
from aiodicom.query import Query

UID_A = "1.2.826.0.1.3680043.8.498.10"
UID_B = "1.2.826.0.1.3680043.8.498.11"
UID_C = "1.2.826.0.1.3680043.8.498.12"


def response(**values: object) -> Dataset:
    # Peers send malformed values too; build them without pydicom's validation warnings.
    ds = Dataset()
    for keyword, value in values.items():
        vr = dictionary_VR(keyword).split(" or ")[0]
        ds.add(DataElement(keyword, vr, value, validation_mode=config.IGNORE))
    return ds


def study(**keys: Any) -> Dataset:
    return Query.study(required_keys=False, **keys).to_dataset()


def contradicts(identifier: Dataset, resp: Dataset, **options: bool) -> bool:
    return bool(contradictions(identifier, resp, **options))


# -- single value -----------------------------------------------------------------------------


def test_single_value_match_and_contradiction() -> None:
    identifier = study(PatientID="123", AccessionNumber="A1")
    assert contradictions(identifier, response(PatientID="123", AccessionNumber="A1")) == []
    assert contradictions(identifier, response(PatientID="124", AccessionNumber="A1")) == [
        "PatientID"
    ]
    both = contradictions(identifier, response(PatientID="124", AccessionNumber="A2"))
    assert sorted(both) == ["AccessionNumber", "PatientID"]


def test_single_value_ignores_padding() -> None:
    assert not contradicts(study(PatientID="123"), response(PatientID=" 123 "))


def test_single_value_is_case_sensitive_outside_pn() -> None:
    assert contradicts(study(StudyDescription="CHEST"), response(StudyDescription="Chest"))


def test_pn_is_case_and_accent_tolerant_by_default() -> None:
    identifier = study(PatientName="MULLER^JURGEN")
    assert not contradicts(identifier, response(PatientName="Müller^Jürgen"))
    assert contradicts(identifier, response(PatientName="Müller^Jürgen"), case_sensitive_pn=True)
    assert not contradicts(
        study(PatientName="Müller^Jürgen"),
        response(PatientName="Müller^Jürgen"),
        case_sensitive_pn=True,
    )
    assert contradicts(identifier, response(PatientName="MEIER^JURGEN"))


def test_pn_trailing_delimiters_and_groups() -> None:
    assert not contradicts(study(PatientName="DOE^JOHN"), response(PatientName="DOE^JOHN^^^"))
    assert not contradicts(
        study(PatientName="Yamada^Tarou"), response(PatientName="Yamada^Tarou=山田^太郎")
    )
    assert not contradicts(
        study(PatientName="*^Tarou"), response(PatientName="Yamada^Tarou=山田^太郎")
    )
    assert contradicts(
        study(PatientName="Suzuki^Tarou"), response(PatientName="Yamada^Tarou=山田^太郎")
    )


def test_numbers_compare_as_numbers() -> None:
    identifier = Query.series(StudyInstanceUID=UID_A, SeriesNumber=5, required_keys=False)
    ds = identifier.to_dataset()
    assert not contradicts(ds, response(StudyInstanceUID=UID_A, SeriesNumber="05"))
    assert contradicts(ds, response(StudyInstanceUID=UID_A, SeriesNumber="6"))


# -- universal, wildcard ----------------------------------------------------------------------


def test_universal_matching_matches_anything() -> None:
    identifier = study(PatientName=None, StudyDate=None, StudyInstanceUID=None)
    assert contradictions(identifier, response(PatientName="X", StudyDate="20240101")) == []
    assert missing_matching_keys(identifier, response()) == []


def test_lone_star_is_universal() -> None:
    identifier = study(PatientName="*")
    assert contradictions(identifier, response(PatientName="ANY")) == []
    assert missing_matching_keys(identifier, response()) == []


def test_wildcards_star_and_question_mark() -> None:
    identifier = study(PatientID="AB?D*")
    for value in ("ABCD", "ABXD", "ABCDEFG", "AB?D"):
        assert not contradicts(identifier, response(PatientID=value)), value
    for value in ("ABD", "ABCE", "XABCD", "abcd"):
        assert contradicts(identifier, response(PatientID=value)), value


def test_wildcard_escapes_regex_characters() -> None:
    identifier = study(StudyDescription="A.B(C)*")
    assert not contradicts(identifier, response(StudyDescription="A.B(C) more"))
    assert contradicts(identifier, response(StudyDescription="AxB(C)"))


def test_pn_wildcard_case_insensitive() -> None:
    identifier = study(PatientName="doe^j*")
    assert not contradicts(identifier, response(PatientName="DOE^JOHN"))
    assert contradicts(identifier, response(PatientName="DOE^JOHN"), case_sensitive_pn=True)


def test_cs_wildcards() -> None:
    identifier = Query.series(StudyInstanceUID=UID_A, Modality="M?", required_keys=False)
    ds = identifier.to_dataset()
    assert not contradicts(ds, response(StudyInstanceUID=UID_A, Modality="MR"))
    assert contradicts(ds, response(StudyInstanceUID=UID_A, Modality="CT"))


# -- ranges -----------------------------------------------------------------------------------


def test_date_ranges_with_open_ends() -> None:
    closed = study(StudyDate=(dt.date(2024, 1, 10), dt.date(2024, 1, 20)))
    from_start = study(StudyDate=(dt.date(2024, 1, 10), None))
    until = study(StudyDate=(None, dt.date(2024, 1, 20)))
    cases = {
        "20240109": (True, True, False),
        "20240110": (False, False, False),
        "20240115": (False, False, False),
        "20240120": (False, False, False),
        "20240121": (True, False, True),
    }
    for value, expected in cases.items():
        got = tuple(
            contradicts(identifier, response(StudyDate=value))
            for identifier in (closed, from_start, until)
        )
        assert got == expected, value


def test_single_date() -> None:
    identifier = study(StudyDate=dt.date(2024, 1, 10))
    assert not contradicts(identifier, response(StudyDate="20240110"))
    assert contradicts(identifier, response(StudyDate="20240111"))
    # ACR-NEMA style dates still come back from old archives.
    assert not contradicts(identifier, response(StudyDate="2024.01.10"))


def test_time_ranges_and_partial_times() -> None:
    identifier = study(StudyTime=(dt.time(8), dt.time(12)))
    assert not contradicts(identifier, response(StudyTime="080000"))
    assert not contradicts(identifier, response(StudyTime="1000"))
    assert not contradicts(identifier, response(StudyTime="120000.000000"))
    assert contradicts(identifier, response(StudyTime="120001"))
    assert contradicts(identifier, response(StudyTime="075959.999"))
    assert contradicts(identifier, response(StudyTime="07"))
    assert contradicts(identifier, response(StudyTime="13"))
    # An hour as upper bound covers the whole hour, an hour as value the whole hour too.
    assert not contradicts(study(StudyTime="-12"), response(StudyTime="125959"))
    assert not contradicts(study(StudyTime="0830-"), response(StudyTime="08"))
    # Identifiers built elsewhere may use the old "HH:MM" form.
    legacy = response(StudyTime="10:00-11:00")
    assert not contradicts(legacy, response(StudyTime="1030"))
    assert contradicts(legacy, response(StudyTime="1130"))


def test_datetime_ranges_with_offsets() -> None:
    identifier = Query.image(
        StudyInstanceUID=UID_A,
        SeriesInstanceUID=UID_B,
        AcquisitionDateTime=(dt.datetime(2024, 1, 1, 12), dt.datetime(2024, 1, 1, 13)),
        required_keys=False,
    ).to_dataset()

    def check(value: str) -> bool:
        return contradicts(identifier, response(AcquisitionDateTime=value))

    assert not check("20240101123000")
    assert check("20240101140000")
    assert not check("2024")  # a year overlaps the hour
    assert check("2023")
    with_offset = study(AcquisitionDateTime="20240101120000+0100-20240101130000+0100")
    assert not contradicts(with_offset, response(AcquisitionDateTime="20240101113000+0000"))
    assert contradicts(with_offset, response(AcquisitionDateTime="20240101123000+0000"))
    negative = study(AcquisitionDateTime="20240101120000-0500")
    assert not contradicts(negative, response(AcquisitionDateTime="20240101170000+0000"))


def test_unparseable_values_are_not_contradictions() -> None:
    assert not contradicts(study(StudyDate=dt.date(2024, 1, 1)), response(StudyDate="garbage"))
    assert not contradicts(study(StudyDate=dt.date(2024, 1, 1)), response(StudyDate="20241301"))


# -- UID lists, multi-valued attributes -------------------------------------------------------


def test_uid_list() -> None:
    identifier = study(StudyInstanceUID=[UID_A, UID_B])
    assert not contradicts(identifier, response(StudyInstanceUID=UID_A))
    assert not contradicts(identifier, response(StudyInstanceUID=UID_B))
    assert contradicts(identifier, response(StudyInstanceUID=UID_C))


def test_multi_valued_response_matches_if_any_value_does() -> None:
    identifier = study(ModalitiesInStudy="MR")
    assert not contradicts(identifier, response(ModalitiesInStudy=["CT", "MR"]))
    assert contradicts(identifier, response(ModalitiesInStudy=["CT", "PT"]))
    wildcard = study(ModalitiesInStudy="P?")
    assert not contradicts(wildcard, response(ModalitiesInStudy=["CT", "PT"]))


def test_multi_valued_identifier_from_elsewhere_is_read_as_any() -> None:
    identifier = Dataset()
    identifier.ModalitiesInStudy = ["CT", "MR"]
    assert not contradicts(identifier, response(ModalitiesInStudy="MR"))
    assert contradicts(identifier, response(ModalitiesInStudy="US"))


# -- sequences --------------------------------------------------------------------------------


def _worklist_item(**values: object) -> Dataset:
    return response(**values)


def test_sequence_matching_any_item() -> None:
    identifier = Query.worklist(
        ScheduledProcedureStepSequence={"Modality": "MR", "ScheduledStationAETitle": "MR*"},
        required_keys=False,
    ).to_dataset()
    good = response(
        ScheduledProcedureStepSequence=Sequence(
            [
                _worklist_item(Modality="CT", ScheduledStationAETitle="CT1"),
                _worklist_item(Modality="MR", ScheduledStationAETitle="MR2"),
            ]
        )
    )
    assert contradictions(identifier, good) == []
    assert missing_matching_keys(identifier, good) == []
    bad = response(
        ScheduledProcedureStepSequence=Sequence(
            [_worklist_item(Modality="MR", ScheduledStationAETitle="CT1")]
        )
    )
    assert contradictions(identifier, bad) == ["ScheduledProcedureStepSequence"]


def test_sequence_missing_item_keys() -> None:
    identifier = Query.worklist(
        ScheduledProcedureStepSequence={"Modality": "MR", "ScheduledStationAETitle": None},
        required_keys=False,
    ).to_dataset()
    without_modality = response(
        ScheduledProcedureStepSequence=Sequence([_worklist_item(ScheduledStationAETitle="MR1")])
    )
    assert missing_matching_keys(identifier, without_modality) == ["ScheduledProcedureStepSequence"]
    assert contradictions(identifier, without_modality) == []
    assert missing_matching_keys(
        identifier, response(ScheduledProcedureStepSequence=Sequence())
    ) == ["ScheduledProcedureStepSequence"]


def test_sequence_return_key_is_not_matching() -> None:
    identifier = Query.worklist(required_keys=True).to_dataset()
    assert missing_matching_keys(identifier, response()) == []


# -- missing keys -----------------------------------------------------------------------------


def test_missing_matching_keys() -> None:
    identifier = Query.study(
        PatientID="123", StudyDescription="CHEST*", PatientName="Müller*"
    ).to_dataset()
    assert identifier.SpecificCharacterSet == "ISO_IR 192"
    resp = response(PatientID="123", StudyDescription="", PatientName="Müller^Hans")
    assert missing_matching_keys(identifier, resp) == ["StudyDescription"]
    assert sorted(missing_matching_keys(identifier, response(PatientName="Müller"))) == [
        "PatientID",
        "StudyDescription",
    ]


def test_level_and_character_set_are_never_keys() -> None:
    identifier = Query.study(PatientName="Müller", required_keys=False).to_dataset()
    assert "QueryRetrieveLevel" in identifier
    assert missing_matching_keys(identifier, response(PatientName="Müller")) == []
    assert contradictions(identifier, response(PatientName="Müller", QueryRetrieveLevel="X")) == []


def test_empty_value_matching() -> None:
    identifier = study(StudyDescription='""')
    assert missing_matching_keys(identifier, response(StudyDescription="")) == []
    assert not contradicts(identifier, response(StudyDescription=""))
    assert contradicts(identifier, response(StudyDescription="CHEST"))


def test_absent_key_is_missing_not_contradicting() -> None:
    identifier = study(PatientID="123")
    assert contradictions(identifier, response()) == []
    assert missing_matching_keys(identifier, response()) == ["PatientID"]


# -- property tests ---------------------------------------------------------------------------

_DATE = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2999, 12, 31))


@given(value=_DATE, start=st.none() | _DATE, end=st.none() | _DATE)
def test_date_range_matching_agrees_with_python(
    value: dt.date, start: dt.date | None, end: dt.date | None
) -> None:
    if start is not None and end is not None and start > end:
        start, end = end, start
    identifier = study(StudyDate=(start, end))
    inside = (start is None or start <= value) and (end is None or value <= end)
    assert contradicts(identifier, response(StudyDate=value.strftime("%Y%m%d"))) == (not inside)


_TEXT = st.text(alphabet="ABCXYZ019^.()", min_size=1, max_size=12)


@given(text=_TEXT, data=st.data())
def test_wildcard_pattern_from_a_value_matches_it(text: str, data: st.DataObject) -> None:
    # Replace characters with "?" and runs with "*": the pattern must still match its source.
    pattern = []
    i = 0
    while i < len(text):
        choice = data.draw(st.sampled_from(["keep", "?", "*"]))
        if choice == "keep":
            pattern.append(text[i])
            i += 1
        elif choice == "?":
            pattern.append("?")
            i += 1
        else:
            pattern.append("*")
            i += data.draw(st.integers(min_value=0, max_value=len(text) - i))
    identifier = study(StudyDescription="".join(pattern))
    assert not contradicts(identifier, response(StudyDescription=text))


@given(
    text=st.text(alphabet="ABC", min_size=1, max_size=8),
    other=st.text(alphabet="ABC", min_size=1, max_size=8),
)
def test_wildcard_free_values_match_only_themselves(text: str, other: str) -> None:
    identifier = study(StudyDescription=text)
    assert contradicts(identifier, response(StudyDescription=other)) == (text != other)


def test_identifier_values_may_be_pydicom_typed() -> None:
    # Responses read with datetime conversion on carry DA objects rather than strings.
    from pydicom.valuerep import DA

    identifier = study(StudyDate=(dt.date(2024, 1, 1), dt.date(2024, 1, 31)))
    resp = Dataset()
    resp.StudyDate = DA("20240115")
    assert not contradicts(identifier, resp)
    assert re.fullmatch(r"\d{8}-\d{8}", identifier.StudyDate)
