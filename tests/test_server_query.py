"""The embedded SCP's query engine: PS3.4 C.2.2.2 matching at every level of both models,
hierarchical refusals, return keys, character sets, batches, and retrieval selection."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from pydicom.dataset import Dataset

from aiodicom.query import QueryModel
from aiodicom.server import (
    HierarchyError,
    IdentifierError,
    InstanceIndex,
    count_for_retrieve,
    find,
    instances_for_retrieve,
    syntaxes_for_retrieve,
)
from aiodicom.testing import DEFAULT_PATIENTS, synthetic_instances

# Wildcards in a CS key and in a UID key (to see them refused) are what these tests send.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")

PR = QueryModel.PATIENT_ROOT
SR = QueryModel.STUDY_ROOT
PSO = QueryModel.PATIENT_STUDY_ONLY
SLICES = 3


@pytest.fixture(scope="module")
def index() -> Iterator[InstanceIndex]:
    with InstanceIndex() as index:
        for instance in synthetic_instances(rows=8, columns=8, slices=SLICES):
            index.store(instance)
        yield index


def identifier(level: str, keys: Mapping[str, object]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            items = []
            for item_keys in value:
                item = Dataset()
                for k, v in item_keys.items():
                    setattr(item, k, v)
                items.append(item)
            value = items
        setattr(ds, keyword, value)
    return ds


def run(
    index: InstanceIndex, model: QueryModel, level: str, batch_size: int = 32, **keys: object
) -> list[Dataset]:
    return [
        r for batch in find(index, identifier(level, keys), model, batch_size=batch_size)
        for r in batch
    ]


def uids(index: InstanceIndex, model: QueryModel, level: str, key: str, **keys: object) -> set[str]:
    return {str(r.get(key)) for r in run(index, model, level, **{key: "", **keys})}


def study_uid(index: InstanceIndex, patient_id: str, date: str) -> str:
    (uid,) = uids(index, SR, "STUDY", "StudyInstanceUID", PatientID=patient_id, StudyDate=date)
    return uid


def series_uid(index: InstanceIndex, study: str, description: str) -> str:
    (uid,) = uids(
        index, SR, "SERIES", "SeriesInstanceUID", StudyInstanceUID=study,
        SeriesDescription=description,
    )
    return uid


N_STUDIES = sum(len(p.studies) for p in DEFAULT_PATIENTS)


# -- universal matching and derived keys at every level ------------------------------------


def test_universal_matching_finds_every_entity_at_every_level(index: InstanceIndex) -> None:
    assert len(run(index, PR, "PATIENT", PatientID="")) == len(DEFAULT_PATIENTS)
    assert len(run(index, PR, "STUDY", PatientID="AIO-0001", StudyInstanceUID="")) == 2
    assert len(run(index, SR, "STUDY", StudyInstanceUID="")) == N_STUDIES
    brain = study_uid(index, "AIO-0001", "20240312")
    assert len(run(index, SR, "SERIES", StudyInstanceUID=brain, SeriesInstanceUID="")) == 3
    assert len(
        run(index, PR, "SERIES", PatientID="AIO-0001", StudyInstanceUID=brain, SeriesInstanceUID="")
    ) == 3
    ax = series_uid(index, brain, "AX T1")
    image = {"StudyInstanceUID": brain, "SeriesInstanceUID": ax, "SOPInstanceUID": ""}
    assert len(run(index, SR, "IMAGE", **image)) == SLICES
    assert len(run(index, PR, "IMAGE", PatientID="AIO-0001", **image)) == SLICES
    # A lone "*" is universal matching too.
    assert len(run(index, SR, "STUDY", StudyInstanceUID="", StudyDescription="*")) == N_STUDIES


def test_patient_study_only_model_has_two_levels(index: InstanceIndex) -> None:
    assert len(run(index, PSO, "PATIENT", PatientID="")) == len(DEFAULT_PATIENTS)
    assert len(run(index, PSO, "STUDY", PatientID="AIO-0004", StudyInstanceUID="")) == 2
    with pytest.raises(IdentifierError):
        run(index, PSO, "SERIES", StudyInstanceUID="1.2", SeriesInstanceUID="")


def test_derived_keys_count_and_list_what_is_below(index: InstanceIndex) -> None:
    (patient,) = run(
        index, PR, "PATIENT", PatientID="AIO-0001", NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedSeries="", NumberOfPatientRelatedInstances="",
    )
    assert (
        patient.NumberOfPatientRelatedStudies,
        patient.NumberOfPatientRelatedSeries,
        patient.NumberOfPatientRelatedInstances,
    ) == (2, 4, 4 * SLICES)
    (study,) = run(
        index, SR, "STUDY", StudyInstanceUID=study_uid(index, "AIO-0001", "20240312"),
        ModalitiesInStudy="", SOPClassesInStudy="", NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
    )
    assert study.ModalitiesInStudy == "MR"
    assert study.SOPClassesInStudy == "1.2.840.10008.5.1.4.1.1.4"
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (3, 9)
    (series,) = run(
        index, SR, "SERIES", StudyInstanceUID=study.StudyInstanceUID,
        SeriesDescription="SAG T2", NumberOfSeriesRelatedInstances="",
    )
    assert series.NumberOfSeriesRelatedInstances == SLICES


def test_modalities_in_study_is_matched_as_a_derived_key(index: InstanceIndex) -> None:
    found = run(index, SR, "STUDY", StudyInstanceUID="", ModalitiesInStudy="CT", StudyDate="")
    assert {r.StudyDate for r in found} == {"20240105", "20231120", "20240620"}
    assert [r.ModalitiesInStudy for r in found] == ["CT"] * 3


# -- single value, wildcard, range, UID list, empty value, sequence ------------------------


@pytest.mark.parametrize(
    ("model", "level", "keys", "expected"),
    [
        (PR, "PATIENT", {"PatientID": "AIO-0002"}, 1),
        (PR, "PATIENT", {"PatientSex": "F"}, 1),
        (PR, "PATIENT", {"PatientBirthDate": "19700101"}, 1),
        (PR, "STUDY", {"PatientID": "AIO-0004", "AccessionNumber": "ACC4002"}, 1),
        (SR, "STUDY", {"StudyDate": "20240105"}, 2),
        (SR, "STUDY", {"StudyID": "S1002"}, 1),
        (SR, "STUDY", {"PatientID": "AIO-0004"}, 2),
        (SR, "STUDY", {"StudyDescription": "MR BRAIN"}, 2),
        (SR, "STUDY", {"StudyDescription": "mr brain"}, 0),  # not PN: case matters
        (SR, "STUDY", {"StudyTime": "083000"}, 1),
    ],
)
def test_single_value_matching(
    index: InstanceIndex, model: QueryModel, level: str, keys: dict[str, str], expected: int
) -> None:
    unique = "PatientID" if level == "PATIENT" else "StudyInstanceUID"
    found = run(index, model, level, **{unique: "", **keys})
    assert len(found) == expected
    for response in found:
        for keyword, value in keys.items():
            assert str(response.get(keyword)) == value or keyword == "StudyDescription"


def test_single_value_matching_below_the_study(index: InstanceIndex) -> None:
    brain = study_uid(index, "AIO-0001", "20240312")
    assert len(run(index, SR, "SERIES", StudyInstanceUID=brain, Modality="MR")) == 3
    assert len(run(index, SR, "SERIES", StudyInstanceUID=brain, Modality="CT")) == 0
    (second,) = run(index, SR, "SERIES", StudyInstanceUID=brain, SeriesNumber="2",
                    SeriesDescription="")
    assert second.SeriesDescription == "SAG T2"
    # IS compares as a number.
    assert len(run(index, SR, "SERIES", StudyInstanceUID=brain, SeriesNumber="02")) == 1
    ax = series_uid(index, brain, "AX T1")
    (image,) = run(index, SR, "IMAGE", StudyInstanceUID=brain, SeriesInstanceUID=ax,
                   InstanceNumber="2", SOPInstanceUID="")
    assert image.InstanceNumber == 2


@pytest.mark.parametrize(
    ("model", "level", "keys", "expected"),
    [
        (PR, "PATIENT", {"PatientName": "S*"}, 1),
        (PR, "PATIENT", {"PatientName": "?oe^J*"}, 1),
        (PR, "PATIENT", {"PatientID": "AIO-000*"}, 4),
        (PR, "PATIENT", {"PatientID": "AIO-000?"}, 4),
        (PR, "PATIENT", {"PatientID": "AIO-00*1"}, 1),
        (SR, "STUDY", {"StudyDescription": "MR*"}, 3),
        (SR, "STUDY", {"AccessionNumber": "ACC?00?"}, 6),
        (SR, "STUDY", {"AccessionNumber": "ACC[1]*"}, 0),  # "[" is no wildcard in DICOM
        (SR, "STUDY", {"ReferringPhysicianName": "*Marcus"}, 2),
    ],
)
def test_wildcard_matching(
    index: InstanceIndex, model: QueryModel, level: str, keys: dict[str, str], expected: int
) -> None:
    unique = "PatientID" if level == "PATIENT" else "StudyInstanceUID"
    assert len(run(index, model, level, **{unique: "", **keys})) == expected


def test_wildcard_matching_below_the_study(index: InstanceIndex) -> None:
    brain = study_uid(index, "AIO-0001", "20240312")
    found = run(index, SR, "SERIES", StudyInstanceUID=brain, SeriesDescription="AX*")
    assert [r.SeriesDescription for r in found] == ["AX T1"]
    assert len(run(index, SR, "SERIES", StudyInstanceUID=brain, SeriesDescription="*T?")) == 3
    ax = series_uid(index, brain, "AX T1")
    # ImageType has no column: matched from the kept attributes, any of its values.
    images = {"StudyInstanceUID": brain, "SeriesInstanceUID": ax, "SOPInstanceUID": ""}
    assert len(run(index, SR, "IMAGE", ImageType="AXIAL", **images)) == SLICES
    assert len(run(index, SR, "IMAGE", ImageType="AX*", **images)) == SLICES
    assert len(run(index, SR, "IMAGE", ImageType="OTHER", **images)) == 0


def test_person_names_match_case_and_accent_insensitively(index: InstanceIndex) -> None:
    def names(pattern: str) -> list[str]:
        found = run(index, PR, "PATIENT", PatientID="", PatientName=pattern)
        return [str(r.PatientName) for r in found]

    assert names("doe^john") == ["Doe^John"]
    assert names("MULLER*") == ["Müller^Jürgen"]
    assert names("Müller^Jürgen") == ["Müller^Jürgen"]
    assert names("山田*") == ["山田^太郎"]


@pytest.mark.parametrize(
    ("value", "dates"),
    [
        ("20240105-20240312", {"20240105", "20240312"}),
        ("20240106-", {"20240312", "20240620"}),
        ("-20240105", {"20231120", "20240105"}),
        ("20240312", {"20240312"}),
        ("20250101-", set()),
    ],
)
def test_date_range_matching(index: InstanceIndex, value: str, dates: set[str]) -> None:
    found = run(index, SR, "STUDY", StudyInstanceUID="", StudyDate=value)
    assert {r.StudyDate for r in found} == dates
    counts = {"20240105": 2, "20240312": 2, "20240620": 1, "20231120": 1}
    assert len(found) == sum(counts[d] for d in dates)


def test_time_and_birth_date_ranges(index: InstanceIndex) -> None:
    morning = run(index, SR, "STUDY", StudyInstanceUID="", StudyTime="0800-1100")
    assert sorted(r.StudyTime for r in morning) == ["083000", "090000", "101500"]
    assert len(run(index, SR, "STUDY", StudyInstanceUID="", StudyTime="1400-")) == 2
    older = run(index, PR, "PATIENT", PatientID="", PatientBirthDate="-19751231")
    assert sorted(str(r.PatientID) for r in older) == ["AIO-0001", "AIO-0002"]


def test_uid_list_matching(index: InstanceIndex) -> None:
    all_studies = sorted(uids(index, SR, "STUDY", "StudyInstanceUID"))
    chosen = all_studies[:2]
    assert uids(index, SR, "STUDY", "StudyInstanceUID", StudyInstanceUID=chosen) == set(chosen)
    brain = study_uid(index, "AIO-0001", "20240312")
    series = sorted(uids(index, SR, "SERIES", "SeriesInstanceUID", StudyInstanceUID=brain))
    found = uids(index, SR, "SERIES", "SeriesInstanceUID", StudyInstanceUID=brain,
                 SeriesInstanceUID=[series[0], series[2], "1.2.3.4"])
    assert found == {series[0], series[2]}
    images = sorted(uids(index, SR, "IMAGE", "SOPInstanceUID", StudyInstanceUID=brain,
                         SeriesInstanceUID=series[1]))
    found = uids(index, SR, "IMAGE", "SOPInstanceUID", StudyInstanceUID=brain,
                 SeriesInstanceUID=series[1], SOPInstanceUID=images[1:])
    assert found == set(images[1:])
    # A list longer than what goes into one SQL statement still matches.
    many = [f"1.2.3.{n}" for n in range(500)] + all_studies[2:4]
    assert uids(index, SR, "STUDY", "StudyInstanceUID", StudyInstanceUID=many) == set(
        all_studies[2:4]
    )
    # A UID list at the patient level of Patient Root uses the patient's unique key.
    assert uids(index, PR, "PATIENT", "PatientID", PatientID=["AIO-0001", "AIO-0003"]) == {
        "AIO-0001",
        "AIO-0003",
    }


def test_empty_value_matching(index: InstanceIndex) -> None:
    found = run(index, SR, "STUDY", StudyInstanceUID="", ReferringPhysicianName='""')
    assert len(found) == 1
    assert "PatientID" not in found[0]  # not asked for: not returned
    (study,) = run(index, SR, "STUDY", StudyInstanceUID="", PatientID="",
                   ReferringPhysicianName='""')
    assert study.PatientID == "AIO-0003"
    assert study.ReferringPhysicianName == ""


def test_sequence_matching_on_one_item(index: InstanceIndex) -> None:
    found = run(index, SR, "STUDY", StudyInstanceUID="",
                ProcedureCodeSequence=[{"CodeValue": "MRBRAIN", "CodeMeaning": ""}])
    assert len(found) == 2
    for response in found:
        (item,) = response.ProcedureCodeSequence
        assert (item.CodeValue, item.CodeMeaning) == ("MRBRAIN", "MR BRAIN")
        assert "CodingSchemeDesignator" not in item  # only the keys the item asked for
    assert run(index, SR, "STUDY", StudyInstanceUID="",
               ProcedureCodeSequence=[{"CodeValue": "NOSUCH"}]) == []
    wildcard = run(index, SR, "STUDY", StudyInstanceUID="",
                   ProcedureCodeSequence=[{"CodeValue": "CT*"}])
    assert len(wildcard) == 3


# -- return keys and character sets --------------------------------------------------------


def test_responses_carry_exactly_the_asked_keys(index: InstanceIndex) -> None:
    (study,) = run(index, SR, "STUDY", StudyInstanceUID="", AccessionNumber="ACC1002",
                   PatientName="", StudyDescription="", PatientComments="", StudyDate="")
    assert set(study.dir()) == {
        "QueryRetrieveLevel", "StudyInstanceUID", "AccessionNumber", "PatientName",
        "StudyDescription", "PatientComments", "StudyDate",
    }
    assert study.QueryRetrieveLevel == "STUDY"
    assert study.PatientComments in ("", None)  # unknown to the index: returned empty
    assert (study.PatientName, study.StudyDescription, study.StudyDate) == (
        "Doe^John", "MR BRAIN", "20240312"
    )


def test_specific_character_set_only_when_a_value_needs_it(index: InstanceIndex) -> None:
    found = {str(r.PatientID): r for r in run(index, PR, "PATIENT", PatientID="", PatientName="")}
    assert "SpecificCharacterSet" not in found["AIO-0001"]
    assert found["AIO-0002"].SpecificCharacterSet == "ISO_IR 192"
    assert found["AIO-0003"].SpecificCharacterSet == "ISO_IR 192"
    # Encodable as sent: UTF-8 holds both names.
    from aiodicom.datasets import decode_dataset, encode_dataset

    encoded = encode_dataset(found["AIO-0003"], "1.2.840.10008.1.2.1")
    assert "山田^太郎".encode() in encoded
    assert decode_dataset(encoded, "1.2.840.10008.1.2.1").PatientName == "山田^太郎"


def test_retrieve_ae_title_and_availability_are_filled_when_asked(index: InstanceIndex) -> None:
    ds = identifier("PATIENT", {"PatientID": "AIO-0001", "RetrieveAETitle": "",
                                "InstanceAvailability": ""})
    (response,) = [r for b in find(index, ds, PR, retrieve_ae_title="AIOPACS") for r in b]
    assert response.RetrieveAETitle == "AIOPACS"
    assert response.InstanceAvailability == "ONLINE"
    (plain,) = run(index, PR, "PATIENT", PatientID="AIO-0001")
    assert "RetrieveAETitle" not in plain and "InstanceAvailability" not in plain


# -- hierarchical refusals -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "level", "keys", "error", "status"),
    [
        (SR, "", {"StudyInstanceUID": ""}, IdentifierError, 0xA900),
        (SR, "PATIENT", {"PatientID": ""}, IdentifierError, 0xA900),
        (SR, "FRAME", {"StudyInstanceUID": ""}, IdentifierError, 0xA900),
        (QueryModel.WORKLIST, "STUDY", {}, IdentifierError, 0xA900),
        (SR, "SERIES", {"SeriesInstanceUID": ""}, HierarchyError, 0xC000),
        (SR, "SERIES", {"StudyInstanceUID": "1.2*"}, HierarchyError, 0xC000),
        (SR, "SERIES", {"StudyInstanceUID": ["1.2", "1.3"]}, HierarchyError, 0xC000),
        (SR, "IMAGE", {"StudyInstanceUID": "1.2", "SOPInstanceUID": ""}, HierarchyError, 0xC000),
        (PR, "STUDY", {"StudyInstanceUID": ""}, HierarchyError, 0xC000),
        (PR, "IMAGE", {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.3"},
         HierarchyError, 0xC000),
        (SR, "STUDY", {"SeriesDescription": "AX*"}, HierarchyError, 0xC000),
        (PR, "PATIENT", {"StudyDate": "20240105"}, HierarchyError, 0xC000),
        (SR, "SERIES", {"StudyInstanceUID": "1.2", "InstanceNumber": "1"}, HierarchyError, 0xC000),
        # A DA is no wildcard VR: refused rather than matched against everything.
        (SR, "STUDY", {"StudyInstanceUID": "", "StudyDate": "2024*"}, IdentifierError, 0xA900),
        (SR, "STUDY", {"StudyInstanceUID": "", "StudyTime": "25"}, IdentifierError, 0xA900),
    ],
)
def test_refusals_before_any_response(
    index: InstanceIndex,
    model: QueryModel,
    level: str,
    keys: dict[str, object],
    error: type[Exception],
    status: int,
) -> None:
    with pytest.raises(error) as raised:
        find(index, identifier(level, keys), model)  # raises at the call, not on next()
    assert raised.value.status == status  # type: ignore[attr-defined]


# -- batches -------------------------------------------------------------------------------


def test_batches_are_bounded_and_walk_even_when_nothing_matches(index: InstanceIndex) -> None:
    batches = list(find(index, identifier("STUDY", {"StudyInstanceUID": ""}), SR, batch_size=2))
    assert [len(b) for b in batches] == [2] * (N_STUDIES // 2) + [1] * (N_STUDIES % 2)
    none = list(find(index, identifier("STUDY", {"StudyDescription": "NOSUCH"}), SR,
                     batch_size=2))
    assert none == [[]] * -(-N_STUDIES // 2)


def test_batched_results_equal_unbatched(index: InstanceIndex) -> None:
    keys = {"StudyInstanceUID": "", "ModalitiesInStudy": "MR", "PatientName": ""}
    one = [r.StudyInstanceUID for b in find(index, identifier("STUDY", keys), SR, batch_size=1)
           for r in b]
    many = [r.StudyInstanceUID for b in find(index, identifier("STUDY", keys), SR) for r in b]
    assert one == many and len(one) == 3


# -- retrieval -----------------------------------------------------------------------------


def selected(index: InstanceIndex, model: QueryModel, level: str, batch_size: int = 64,
             **keys: object) -> list[str]:
    ds = identifier(level, keys)
    batches = list(instances_for_retrieve(index, ds, model, batch_size=batch_size))
    assert all(len(b) <= batch_size for b in batches)
    found = [s.sop_instance_uid for b in batches for s in b]
    assert count_for_retrieve(index, ds, model) == len(found)
    # What a C-MOVE proposes: exactly the pairs of what it sends, in the order first met.
    pairs = [(s.sop_class_uid, s.transfer_syntax_uid) for b in batches for s in b]
    assert sorted(syntaxes_for_retrieve(index, ds, model)) == sorted(set(pairs))
    return found


def test_retrieve_selects_by_unique_keys_at_every_level(index: InstanceIndex) -> None:
    brain = study_uid(index, "AIO-0001", "20240312")
    ct = study_uid(index, "AIO-0001", "20240105")
    assert len(selected(index, PR, "PATIENT", PatientID="AIO-0001")) == 4 * SLICES
    assert len(selected(index, SR, "STUDY", batch_size=2, StudyInstanceUID=brain)) == 9
    assert len(selected(index, SR, "STUDY", StudyInstanceUID=[brain, ct])) == 12
    assert len(selected(index, PR, "STUDY", PatientID="AIO-0001", StudyInstanceUID=brain)) == 9
    ax = series_uid(index, brain, "AX T1")
    sag = series_uid(index, brain, "SAG T2")
    assert len(selected(index, SR, "SERIES", StudyInstanceUID=brain,
                        SeriesInstanceUID=[ax, sag])) == 6
    # Lenient: the study may be left out, the series UID is unique on its own...
    assert len(selected(index, SR, "SERIES", SeriesInstanceUID=ax)) == SLICES
    # ...but a study given restricts.
    assert selected(index, SR, "SERIES", StudyInstanceUID=ct, SeriesInstanceUID=ax) == []
    images = selected(index, SR, "SERIES", batch_size=1, SeriesInstanceUID=ax)
    assert len(set(images)) == SLICES
    assert sorted(selected(index, SR, "IMAGE", SOPInstanceUID=images[:2])) == sorted(images[:2])


def test_retrieve_yields_what_the_index_can_send(index: InstanceIndex) -> None:
    brain = study_uid(index, "AIO-0001", "20240312")
    ds = identifier("STUDY", {"StudyInstanceUID": brain})
    for batch in instances_for_retrieve(index, ds, SR):
        for stored in batch:
            instance = index.load(stored)
            assert instance.dataset.StudyInstanceUID == brain
            assert instance.sop_instance_uid == stored.sop_instance_uid


@pytest.mark.parametrize(
    ("level", "keys"),
    [
        ("STUDY", {}),
        ("STUDY", {"StudyInstanceUID": ""}),
        ("STUDY", {"StudyInstanceUID": "1.2*"}),
        ("SERIES", {"StudyInstanceUID": ["1.2", "1.3"], "SeriesInstanceUID": "1.4"}),
    ],
)
def test_retrieve_refuses_identifiers_without_unique_keys(
    index: InstanceIndex, level: str, keys: dict[str, object]
) -> None:
    with pytest.raises(HierarchyError):
        instances_for_retrieve(index, identifier(level, keys), SR)
    with pytest.raises(HierarchyError):
        count_for_retrieve(index, identifier(level, keys), SR)


def test_identifier_decoded_from_the_wire_in_its_own_character_set(index: InstanceIndex) -> None:
    from aiodicom.datasets import decode_dataset, encode_dataset

    ds = identifier("PATIENT", {"PatientID": "", "PatientName": "Müller*"})
    ds.SpecificCharacterSet = "ISO_IR 100"
    wire = encode_dataset(ds, "1.2.840.10008.1.2")
    assert "Müller".encode("latin-1") in wire
    decoded = decode_dataset(wire, "1.2.840.10008.1.2")
    found = [r for b in find(index, decoded, PR) for r in b]
    assert [str(r.PatientID) for r in found] == ["AIO-0002"]
    assert found[0].SpecificCharacterSet == "ISO_IR 192"  # answered in UTF-8 whatever it asked
