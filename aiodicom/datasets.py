"""Data sets as they travel in DIMSE messages: bytes in a transfer syntax <-> pydicom Dataset.

A DIMSE data set has no preamble and no File Meta Information, so pydicom's ``dcmread`` and
``dcmwrite`` do not fit; ``read_dataset`` and ``write_dataset`` do, given the encoding, which
is worked out here from the transfer syntax UID.

Every standard transfer syntax other than Implicit VR Little Endian and Explicit VR Big Endian
encodes the data set in Explicit VR Little Endian (compressed ones only encapsulate the pixel
data), and a few deflate the whole of it. A private transfer syntax this module cannot know is
assumed to be plain Explicit VR Little Endian, which is what vendors' private syntaxes use in
practice.
"""

from __future__ import annotations

import zlib
from io import BytesIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from aiodicom.errors import DicomError, DimseError

__all__ = [
    "DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN",
    "EXPLICIT_VR_BIG_ENDIAN",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "NATIVE_TRANSFER_SYNTAXES",
    "DatasetDecodeError",
    "DatasetEncodeError",
    "decode_dataset",
    "encode_dataset",
    "is_deflated",
    "is_encapsulated",
    "transfer_syntax_name",
]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

NATIVE_TRANSFER_SYNTAXES = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
    }
)
"""Transfer syntaxes whose pixel data (if any) is not encapsulated."""

# The JPIP Referenced Deflate syntaxes deflate the data set like 1.2.840.10008.1.2.1.99 does;
# pydicom's UID.is_deflated only knows the latter.
_DEFLATED = frozenset(
    {
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
        "1.2.840.10008.1.2.4.205",  # JPIP HTJ2K Referenced Deflate
    }
)
# Syntaxes that carry no pixel data of their own (it is referenced by URL) or whose pixel data
# is native although pydicom would call them compressed.
_NOT_ENCAPSULATED = NATIVE_TRANSFER_SYNTAXES | {
    "1.2.840.10008.1.2.4.94",  # JPIP Referenced
    "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
    "1.2.840.10008.1.2.4.204",  # JPIP HTJ2K Referenced
    "1.2.840.10008.1.2.4.205",  # JPIP HTJ2K Referenced Deflate
}


class DatasetDecodeError(DimseError):
    """Data set bytes received from a peer could not be decoded in their transfer syntax."""


class DatasetEncodeError(DicomError):
    """A data set could not be encoded in the requested transfer syntax."""


def _encoding(transfer_syntax_uid: str) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) for a transfer syntax."""
    if transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN:
        return True, True, False
    if transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN:
        return False, False, False
    return False, True, transfer_syntax_uid in _DEFLATED


def is_deflated(transfer_syntax_uid: str) -> bool:
    """True when the whole data set is deflated (PS3.5 A.5) in this transfer syntax."""
    return transfer_syntax_uid in _DEFLATED


def is_encapsulated(transfer_syntax_uid: str) -> bool:
    """True for a standard transfer syntax whose pixel data is encapsulated (PS3.5 A.4).

    False for the native ones, the JPIP referenced ones and any private syntax.
    """
    return (
        transfer_syntax_uid.startswith("1.2.840.10008.")
        and transfer_syntax_uid not in _NOT_ENCAPSULATED
        and UID(transfer_syntax_uid).is_transfer_syntax
    )


def transfer_syntax_name(uid: str) -> str:
    """``"Explicit VR Little Endian"`` etc.; the UID itself when pydicom does not know it."""
    return str(UID(uid).name)


def encode_dataset(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Encode ``ds`` (without preamble or File Meta Information) in a transfer syntax.

    Group 0002 elements found in ``ds`` itself are left out: PS3.7 forbids File Meta Information
    in a DIMSE data set and some peers reject it. For an encapsulated syntax, Pixel Data must
    already hold the encapsulated fragments; its element is marked undefined length, as
    ``dcmwrite`` does.
    """
    implicit_vr, little_endian, deflated = _encoding(transfer_syntax_uid)
    # keys(), not iteration: iterating a Dataset converts every raw element to a DataElement.
    tags = ds.keys()
    if any(tag >> 16 == 0x0002 for tag in tags):
        stripped = Dataset()
        for tag in tags:
            if tag >> 16 != 0x0002:
                stripped[tag] = ds.get_item(tag)
        original_implicit_vr, original_little_endian = ds.original_encoding
        stripped.set_original_encoding(
            original_implicit_vr, original_little_endian, ds.original_character_set
        )
        ds = stripped
    if "PixelData" in ds and transfer_syntax_uid.startswith("1.2.840.10008."):
        encapsulated = is_encapsulated(transfer_syntax_uid)
        pixel_data = ds["PixelData"]
        if pixel_data.is_undefined_length != encapsulated:
            pixel_data.is_undefined_length = encapsulated

    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit_vr
    fp.is_little_endian = little_endian
    try:
        write_dataset(fp, ds)
    except Exception as exc:
        raise DatasetEncodeError(
            f"cannot encode the data set in {transfer_syntax_name(transfer_syntax_uid)}: {exc}"
        ) from exc
    encoded: bytes = fp.getvalue()
    if deflated:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        encoded = compressor.compress(encoded) + compressor.flush()
        # PS3.5 A.5: the deflated stream is padded to even length.
        if len(encoded) & 1:
            encoded += b"\x00"
    return encoded


def decode_dataset(data: bytes | bytearray | memoryview, transfer_syntax_uid: str) -> Dataset:
    """Decode data set bytes received in ``transfer_syntax_uid``.

    Values are decoded lazily by pydicom, on first access, so a malformed value may only raise
    then; a malformed structure (lengths, tags, a broken deflate stream) raises
    :class:`DatasetDecodeError` here.
    """
    implicit_vr, little_endian, deflated = _encoding(transfer_syntax_uid)
    try:
        if deflated:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            # unused_data (the even-length pad) is ignored on purpose.
            data = inflater.decompress(data)
            if not inflater.eof:
                raise DatasetDecodeError("the deflated data set is truncated")
        ds = read_dataset(BytesIO(data), implicit_vr, little_endian)
    except DatasetDecodeError:
        raise
    except Exception as exc:
        raise DatasetDecodeError(
            f"cannot decode the data set as {transfer_syntax_name(transfer_syntax_uid)}: {exc}"
        ) from exc
    # pydicom accepts a value cut short by the end of the buffer, and drops a partial element
    # header there, without a word: catch both before a truncated identifier passes for a valid
    # one. Only the element read last can be cut short, so only it is checked (checking every
    # element cost a third of a C-FIND's time per match).
    if not ds:
        if len(data):
            raise DatasetDecodeError(f"{len(data)} bytes that hold no whole element")
        return ds
    last_tag = list(ds.keys())[-1]  # insertion order is the order read
    # keep_deferred: an empty raw value would otherwise be converted and lose value_tell.
    elem = ds.get_item(last_tag, keep_deferred=True)
    if isinstance(elem, RawDataElement) and elem.length != 0xFFFFFFFF:
        if isinstance(elem.value, bytes) and len(elem.value) != elem.length:
            raise DatasetDecodeError(
                f"element {elem.tag} is truncated: {len(elem.value)} of its {elem.length} bytes "
                "present"
            )
        last_end = elem.value_tell + elem.length
        if last_end != len(data):
            raise DatasetDecodeError(
                f"{len(data) - last_end} bytes after the last element at offset {last_end}: "
                "a truncated element header"
            )
    return ds
