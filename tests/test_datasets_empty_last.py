"""Regression: an empty last element (a return key such as SeriesNumber) must decode."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from aiodicom.datasets import decode_dataset, encode_dataset
from aiodicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE


@pytest.mark.parametrize("syntax", [IMPLICIT_VR_LE, EXPLICIT_VR_LE])
@pytest.mark.parametrize("keyword", ["SeriesNumber", "InstanceNumber", "SeriesDescription"])
def test_empty_last_element_decodes(syntax: str, keyword: str) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.SeriesInstanceUID = "1.2.3"
    setattr(ds, keyword, None)
    decoded = decode_dataset(encode_dataset(ds, syntax), syntax)
    assert decoded.SeriesInstanceUID == "1.2.3"
    assert keyword in decoded
    assert decoded[keyword].value in (None, "")
