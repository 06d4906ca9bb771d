"""MatchingKeys (aiodicom.matching): checking many responses against one identifier, with UID
keys compared as raw bytes; the raw path must agree with the general one."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.matching import MatchingKeys, contradictions, missing_matching_keys
from aiodicom.query import Query
from aiodicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE

STUDY = "1.2.840.113619.2.1"
SERIES = "1.2.840.113619.2.1.7"


def response(**values: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    # Last by tag and never empty: decode_dataset refuses a response whose last element is
    # empty in some VRs (always in Implicit VR); reported, not the subject here.
    ds.InstanceNumber = 1
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def as_received(ds: Dataset, transfer_syntax: str = EXPLICIT_VR_LE) -> Dataset:
    """The response as it comes off the wire: raw, undecoded elements."""
    return decode_dataset(encode_dataset(ds, transfer_syntax), transfer_syntax)


IDENTIFIER = Query.image(
    StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID=["1.2.3", "1.2.4"]
).to_dataset()

CASES = [
    (response(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID="1.2.4"), [], []),
    (
        response(StudyInstanceUID="1.2.9", SeriesInstanceUID=SERIES, SOPInstanceUID="1.2.5"),
        [],
        ["SOPInstanceUID", "StudyInstanceUID"],  # in tag order
    ),
    (
        response(StudyInstanceUID=STUDY, SeriesInstanceUID="", SOPInstanceUID="1.2.3"),
        ["SeriesInstanceUID"],
        [],
    ),
    (response(StudyInstanceUID=STUDY, SOPInstanceUID="1.2.3"), ["SeriesInstanceUID"], []),
    (  # a multi-valued response matches if any value does
        response(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID=["9.9", "1.2.3"]),
        [],
        [],
    ),
]


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
@pytest.mark.parametrize(("ds", "missing", "contradicting"), CASES)
def test_raw_uid_path_agrees_with_the_general_one(
    ds: Dataset, missing: list[str], contradicting: list[str], transfer_syntax: str
) -> None:
    keys = MatchingKeys(IDENTIFIER)
    raw = as_received(ds, transfer_syntax)
    assert keys.missing(raw) == missing
    assert keys.contradictions(raw) == contradicting
    converted = as_received(ds, transfer_syntax)
    for elem in converted:  # iterating converts every raw element: the general path
        assert elem.value is not None or elem.is_empty
    assert keys.missing(converted) == missing == missing_matching_keys(IDENTIFIER, converted)
    assert keys.contradictions(converted) == contradicting == contradictions(IDENTIFIER, converted)


def test_uid_padding_is_not_a_difference() -> None:
    keys = MatchingKeys(IDENTIFIER)
    ds = response(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID="1.2.3")
    data = encode_dataset(ds, EXPLICIT_VR_LE)
    assert b"1.2.3\x00" in data  # odd-length UIDs are padded with NUL on the wire
    assert keys.contradictions(decode_dataset(data, EXPLICIT_VR_LE)) == []


def test_unjudged_keys_are_left_alone_but_still_seen_missing() -> None:
    identifier = Query.study(PatientName="Doe^J*", StudyTime="1000-").to_dataset()
    keys = MatchingKeys(identifier, unjudged=frozenset({"PatientName", "StudyTime"}))
    ds = as_received(response(PatientName="Roe^Richard", StudyTime="0800"))
    assert keys.contradictions(ds) == []
    assert MatchingKeys(identifier).contradictions(ds) == ["StudyTime", "PatientName"]
    assert keys.missing(as_received(response(PatientName="Roe"))) == ["StudyTime"]


def test_no_matching_keys_is_falsy() -> None:
    assert not MatchingKeys(Query.study().to_dataset())
    assert MatchingKeys(IDENTIFIER)
