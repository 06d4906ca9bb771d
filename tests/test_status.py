"""Status categories (PS3.7 Annex C) and meanings (PS3.4) per service."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodicom.status import (
    SERVICES,
    StatusCategory,
    describe_status,
    status_category,
    status_meaning,
)

S = StatusCategory


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (0x0000, S.SUCCESS),
        (0xFF00, S.PENDING),
        (0xFF01, S.PENDING),
        (0xFE00, S.CANCEL),
        (0x0001, S.WARNING),
        (0x0107, S.WARNING),
        (0x0116, S.WARNING),
        (0xB000, S.WARNING),
        (0xB006, S.WARNING),
        (0xB007, S.WARNING),
        (0xB123, S.WARNING),
        (0xA700, S.FAILURE),
        (0xA701, S.FAILURE),
        (0xA702, S.FAILURE),
        (0xA801, S.FAILURE),
        (0xA900, S.FAILURE),
        (0xA9FF, S.FAILURE),
        (0xAA00, S.FAILURE),
        (0xAA04, S.FAILURE),
        (0xC000, S.FAILURE),
        (0xCFFF, S.FAILURE),
        (0x0105, S.FAILURE),
        (0x0110, S.FAILURE),
        (0x0122, S.FAILURE),
        (0x0124, S.FAILURE),
        (0x0210, S.FAILURE),
        (0x0213, S.FAILURE),
        # Codes no standard defines must never pass for success, pending or cancel.
        (0x0002, S.FAILURE),
        (0x1234, S.FAILURE),
        (0xD000, S.FAILURE),
        (0xFE01, S.FAILURE),
        (0xFF02, S.FAILURE),
        (0xFFFF, S.FAILURE),
    ],
)
def test_categories(code: int, category: StatusCategory) -> None:
    assert status_category(code) is category


@pytest.mark.parametrize(
    ("code", "service", "meaning"),
    [
        # Query/Retrieve (PS3.4 C.4)
        (0xA801, "move", "Refused: move destination unknown"),
        (0xA801, None, "Refused: move destination unknown"),
        (0xA700, "find", "Refused: out of resources"),
        (0xA701, "move", "Refused: out of resources, unable to calculate number of matches"),
        (0xA702, "get", "Refused: out of resources, unable to perform sub-operations"),
        (0xA900, "find", "Error: identifier does not match SOP class"),
        (0xA900, "move", "Error: identifier does not match SOP class"),
        (0xC000, "find", "Failed: unable to process"),
        (0xC123, "move", "Failed: unable to process"),
        (0xC000, None, "Failed: unable to process"),
        (0xFE00, "move", "Cancel: sub-operations terminated"),
        (0xFE00, "get", "Cancel: sub-operations terminated"),
        (0xFE00, None, "Cancel: sub-operations terminated"),
        (0xFE00, "find", "Cancel: matching terminated due to cancel request"),
        (0xFF00, "find", "Pending: matches are continuing"),
        (
            0xFF01,
            "find",
            "Pending: matches are continuing, one or more optional keys were not supported",
        ),
        (0xFF00, "move", "Pending: sub-operations are continuing"),
        (0xB000, "move", "Warning: sub-operations complete, one or more failures or warnings"),
        (0xB000, "get", "Warning: sub-operations complete, one or more failures or warnings"),
        (0xAA00, "get", "Failed: none of the frames requested were found in the SOP instance"),
        (0xAA01, "move", "Failed: unable to create new object for this SOP class"),
        (0xAA02, "move", "Failed: unable to extract frames"),
        (
            0xAA03,
            "get",
            "Failed: time-based request received for a non-time-based original SOP instance",
        ),
        (0xAA04, "move", "Failed: invalid request"),
        (0x0000, "move", "Success: sub-operations complete, no failures or warnings"),
        (0x0000, "find", "Success: matching is complete"),
        # Storage (PS3.4 B.2.3)
        (0xA700, "store", "Refused: out of resources"),
        (0xA7FF, "store", "Refused: out of resources"),
        (0xA900, "store", "Error: data set does not match SOP class"),
        (0xA9AB, "store", "Error: data set does not match SOP class"),
        (0xC000, "store", "Error: cannot understand"),
        (0xCABC, "store", "Error: cannot understand"),
        (0xB000, "store", "Warning: coercion of data elements"),
        (0xB006, "store", "Warning: elements discarded"),
        (0xB007, "store", "Warning: data set does not match SOP class"),
        # General (PS3.7 Annex C), whatever the service
        (0x0000, None, "Success"),
        (0x0000, "echo", "Success"),
        (0x0122, "echo", "Refused: SOP class not supported"),
        (0x0122, "find", "Refused: SOP class not supported"),
        (0x0124, "move", "Refused: not authorized"),
        (0x0210, "echo", "Failure: duplicate invocation"),
        (0x0211, "echo", "Failure: unrecognized operation"),
        (0x0212, "echo", "Failure: mistyped argument"),
        (0x0213, "get", "Failure: resource limitation"),
        (0x0105, None, "Failure: no such attribute"),
        (0x0106, None, "Failure: invalid attribute value"),
        (0x0107, None, "Warning: attribute list error"),
        (0x0110, None, "Failure: processing failure"),
        (0x0111, "store", "Failure: duplicate SOP instance"),
        (0x0112, None, "Failure: no such SOP instance"),
        (0x0116, None, "Warning: attribute value out of range"),
        (0x0117, "store", "Failure: invalid SOP instance"),
        (0x0118, None, "Failure: no such SOP class"),
        (0x0119, None, "Failure: class-instance conflict"),
        (0x0120, None, "Failure: missing attribute"),
        (0x0121, None, "Failure: missing attribute value"),
        (0x0123, None, "Failure: no such action"),
        (0x0001, None, "Warning: requested optional attributes are not supported"),
        # Unknown codes
        (0x1234, None, "unknown failure status"),
        (0xD000, "find", "unknown failure status"),
        (0xB123, "store", "unknown warning status"),
        (0xAB00, "move", "unknown failure status"),
    ],
)
def test_meanings(code: int, service: str | None, meaning: str) -> None:
    assert status_meaning(code, service) == meaning


def test_service_names_are_normalized() -> None:
    assert status_meaning(0xA801, "C-MOVE") == status_meaning(0xA801, "move")
    assert status_meaning(0xFE00, "Find") == "Cancel: matching terminated due to cancel request"


def test_unknown_service() -> None:
    with pytest.raises(ValueError, match="unknown service"):
        status_meaning(0x0000, "n-get")


def test_b000_without_a_service_names_both_readings() -> None:
    meaning = status_meaning(0xB000)
    assert "coercion" in meaning
    assert "sub-operations" in meaning


def test_describe_status() -> None:
    assert describe_status(0xA801, "move") == "0xA801 (Refused: move destination unknown)"
    assert describe_status(0x00AB) == "0x00AB (unknown failure status)"


@given(st.integers(0, 0xFFFF), st.sampled_from([None, *SERVICES]))
def test_every_code_has_a_category_and_a_meaning(code: int, service: str | None) -> None:
    category = status_category(code)
    meaning = status_meaning(code, service)
    assert meaning
    # The words never contradict the category.
    prefix = meaning.split(":")[0].lower()
    expected_prefixes = {
        S.SUCCESS: {"success"},
        S.PENDING: {"pending"},
        S.CANCEL: {"cancel"},
        S.WARNING: {"warning", "unknown warning status"},
        S.FAILURE: {"failure", "refused", "error", "failed", "unknown failure status"},
    }[category]
    assert prefix in expected_prefixes, (hex(code), service, meaning)


def test_category_values() -> None:
    assert [c.value for c in StatusCategory] == [
        "success",
        "pending",
        "cancel",
        "warning",
        "failure",
    ]
    assert isinstance(StatusCategory.FAILURE, str)
    assert f"{StatusCategory.FAILURE.value}" == "failure"
