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

import struct
import zlib
from collections.abc import MutableSequence
from io import BytesIO
from typing import cast

from pydicom import config as pydicom_config
from pydicom.charset import convert_encodings, default_encoding, python_encoding
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_string

import aiodicom.uids as uids
from aiodicom.errors import DicomError, DimseError
from aiodicom.uids import encoding_of

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

# Longer names of the uids module's constants, kept because callers know them from here.
IMPLICIT_VR_LITTLE_ENDIAN = uids.IMPLICIT_VR_LE
EXPLICIT_VR_LITTLE_ENDIAN = uids.EXPLICIT_VR_LE
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = uids.DEFLATED_EXPLICIT_VR_LE
EXPLICIT_VR_BIG_ENDIAN = uids.EXPLICIT_VR_BE

NATIVE_TRANSFER_SYNTAXES = frozenset(uids.UNCOMPRESSED_TRANSFER_SYNTAXES)
"""Transfer syntaxes whose pixel data (if any) is not encapsulated."""

# Syntaxes that carry no pixel data of their own (it is referenced by URL) or whose pixel data
# is native although pydicom would call them compressed.
_NOT_ENCAPSULATED = NATIVE_TRANSFER_SYNTAXES | {
    uids.JPIP_REFERENCED,
    uids.JPIP_REFERENCED_DEFLATE,
    uids.JPIP_HTJ2K_REFERENCED,
    uids.JPIP_HTJ2K_REFERENCED_DEFLATE,
}


class DatasetDecodeError(DimseError):
    """Data set bytes received from a peer could not be decoded in their transfer syntax."""


class DatasetEncodeError(DicomError):
    """A data set could not be encoded in the requested transfer syntax."""


def is_deflated(transfer_syntax_uid: str) -> bool:
    """True when the whole data set is deflated (PS3.5 A.5) in this transfer syntax."""
    return encoding_of(transfer_syntax_uid).deflated


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
    implicit_vr, little_endian, deflated = encoding_of(transfer_syntax_uid)
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
    implicit_vr, little_endian, deflated = encoding_of(transfer_syntax_uid)
    if deflated:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            # unused_data (the even-length pad) is ignored on purpose.
            data = inflater.decompress(data)
        except Exception as exc:
            raise DatasetDecodeError(
                f"cannot decode the data set as {transfer_syntax_name(transfer_syntax_uid)}: "
                f"{exc}"
            ) from exc
        if not inflater.eof:
            raise DatasetDecodeError("the deflated data set is truncated")
    if type(data) is not bytes:
        # One copy, as BytesIO would make: values must be bytes, not views of a buffer the
        # receive path may reuse.
        data = bytes(data)
    if little_endian and not pydicom_config.debugging:
        elements = _read_flat(data, implicit_vr)
        if elements is not None:
            encoding = _character_encoding(elements)
            if encoding is not None:
                return _new_dataset(elements, implicit_vr, little_endian, encoding)
    return _decode_with_pydicom(data, implicit_vr, little_endian, transfer_syntax_uid)


def _decode_with_pydicom(
    data: bytes, implicit_vr: bool, little_endian: bool, transfer_syntax_uid: str
) -> Dataset:
    """The general path: anything :func:`_read_flat` leaves alone, and every malformed
    data set (whose errors are worded here)."""
    try:
        ds = read_dataset(BytesIO(data), implicit_vr, little_endian)
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


# --- the fast path -------------------------------------------------------------------------------
#
# C-FIND identifiers are small flat data sets, one per match, and pydicom's general reader
# (a generator with a branch per encoding, sequence and deferred-read case, a BytesIO) was most of
# the CPU aiodicom spent per match. _read_flat builds the very RawDataElements read_dataset would
# build for a little endian data set without undefined lengths, and gives up (returns None) on
# anything else, malformed data included, so that pydicom and the checks above decide those
# exactly as before.

_Elements = dict[BaseTag, "DataElement | RawDataElement"]  # what Dataset keeps
# The tag read as one little endian 32-bit number is (element << 16 | group).
_EXPLICIT_HEADER = struct.Struct("<L2sH").unpack_from
_IMPLICIT_HEADER = struct.Struct("<LL").unpack_from
_LONG_LENGTH = struct.Struct("<L").unpack_from
# Explicit VR bytes -> (the str pydicom gives RawDataElement.VR, the value it gives an empty
# element, whether a 4-byte length follows). Only real two-letter VRs: pydicom guesses at any
# other (an implicit VR switch, or a 2-byte length), and those guesses stay its own.
_EXPLICIT_VRS: dict[bytes, tuple[str, bytes | None, bool]] = {
    str(vr).encode("ascii"): (
        str(vr),
        cast("bytes | None", empty_value_for_VR(str(vr), raw=True)),
        vr in EXPLICIT_VR_LENGTH_32,
    )
    for vr in VR
    if len(str(vr)) == 2
}
_IMPLICIT_EMPTY = cast("bytes | None", empty_value_for_VR(None, raw=True))
# Tags recur from one identifier to the next: share their BaseTag objects (immutable ints), by
# the tag as read.
_TAGS: dict[int, BaseTag] = {}
_MAX_CACHED_TAGS = 4096
_new_raw = tuple.__new__  # RawDataElement(...) without its Python-level __new__


def shared_tag(tag: int) -> BaseTag:
    """The BaseTag the fast path keys decoded data sets with, for ``tag``.

    A dict lookup that finds the very key object skips ``BaseTag.__eq__`` (a Python method):
    code that looks up the same tags in many decoded data sets should use these.
    """
    swapped = (tag & 0xFFFF) << 16 | tag >> 16
    cached = _TAGS.get(swapped)
    if cached is None:
        cached = _tag(swapped)  # None for group FFFE, never cached
    return BaseTag(tag) if cached is None else cached


def _tag(swapped: int) -> BaseTag | None:
    """The BaseTag of a tag read as ``element << 16 | group``; ``None`` for the item and
    sequence delimiters (group FFFE), which are pydicom's to handle."""
    group = swapped & 0xFFFF
    if group == 0xFFFE:
        return None
    tag = BaseTag(group << 16 | swapped >> 16)
    if len(_TAGS) < _MAX_CACHED_TAGS:
        _TAGS[swapped] = tag
    return tag


def _read_flat(data: bytes, implicit_vr: bool) -> _Elements | None:
    """The raw elements of a well-formed little endian data set without undefined lengths;
    ``None`` when pydicom's reader must decide."""
    end = len(data)
    if end >= 6:
        # pydicom's _is_implicit_vr: two capital letters where an explicit VR goes decide
        # the encoding, whatever the transfer syntax says; its warning and switch are its own.
        looks_explicit = 0x40 < data[4] < 0x5B and 0x40 < data[5] < 0x5B
        if looks_explicit == implicit_vr:
            return None
    if implicit_vr:
        return _read_flat_implicit(data, end)
    elements: _Elements = {}
    tags = _TAGS
    vrs = _EXPLICIT_VRS
    header = _EXPLICIT_HEADER
    position = 0
    read = 0
    while position < end:
        if end - position < 8:
            return None  # truncated: the general path says how
        swapped, raw_vr, length = header(data, position)
        known = vrs.get(raw_vr)
        if known is None:
            return None
        vr, empty, long_length = known
        if long_length:
            if end - position < 12:
                return None
            (length,) = _LONG_LENGTH(data, position + 8)
            if length == 0xFFFFFFFF:
                return None  # sequences, encapsulated pixel data
            value_at = position + 12
        else:
            value_at = position + 8
        tag = tags.get(swapped)
        if tag is None:
            tag = _tag(swapped)
            if tag is None:
                return None
        position = value_at + length
        if position > end:
            return None
        elements[tag] = _new_raw(RawDataElement, (
            tag, vr, length, data[value_at:position] if length else empty, value_at, False,
            True, True, False,
        ))
        read += 1
    # A tag twice: pydicom keeps the first one's place in the data set (and its own checks
    # look at the element it placed last), so such a data set is its to decide.
    return elements if len(elements) == read else None


def _read_flat_implicit(data: bytes, end: int) -> _Elements | None:
    elements: _Elements = {}
    tags = _TAGS
    header = _IMPLICIT_HEADER
    empty = _IMPLICIT_EMPTY
    position = 0
    read = 0
    while position < end:
        if end - position < 8:
            return None
        swapped, length = header(data, position)
        if length == 0xFFFFFFFF:
            return None
        tag = tags.get(swapped)
        if tag is None:
            tag = _tag(swapped)
            if tag is None:
                return None
        value_at = position + 8
        position = value_at + length
        if position > end:
            return None
        elements[tag] = _new_raw(RawDataElement, (
            tag, None, length, data[value_at:position] if length else empty, value_at, True,
            True, True, False,
        ))
        read += 1
    return elements if len(elements) == read else None  # a tag twice: see _read_flat


def _character_encoding(elements: _Elements) -> str | MutableSequence[str] | None:
    """The Python encodings of the Specific Character Set, as read_dataset works them out;
    ``None`` when that fails (a malformed value), which read_dataset reports its own way."""
    charset = elements.get(_SPECIFIC_CHARACTER_SET)
    if not isinstance(charset, RawDataElement):
        return default_encoding
    key = (charset.VR, charset.value)
    known = _ENCODINGS.get(key)
    if known is not None:
        return list(known)  # each Dataset its own list, as read_dataset gives
    try:
        # The two conversions read_dataset makes (its element generator, then itself), with
        # their warnings and errors.
        convert_encodings(convert_string(charset.value or b"", True))
        encoding: str | MutableSequence[str] = convert_encodings(
            convert_raw_data_element(charset).value
        )
    except Exception:
        return None
    # Peers repeat the same character set in every match, and converting it cost 7 us of the
    # 13 us a match took to decode: remember single defined terms, which convert without a
    # warning (anything else goes through pydicom each time, warnings included).
    if isinstance(charset.value, bytes) and len(_ENCODINGS) < 64:
        term = charset.value.rstrip(b" ").decode("latin-1")
        if term and term == term.strip() and "\\" not in term and term in python_encoding:
            _ENCODINGS[key] = list(encoding)
    return encoding


_ENCODINGS: dict[tuple[str | None, bytes | None], list[str]] = {}


def _new_dataset(
    elements: _Elements, implicit_vr: bool, little_endian: bool,
    encoding: str | MutableSequence[str],
) -> Dataset:
    """The Dataset read_dataset makes of these elements."""
    if _BLANK is None:
        ds = Dataset(elements, parent_encoding=default_encoding)
        ds.set_original_encoding(implicit_vr, little_endian, encoding)
        return ds
    shared, fresh = _BLANK
    state = shared.copy()
    for name, value in fresh:
        state[name] = value.copy()
    state["_dict"] = elements
    state["_read_implicit"] = implicit_vr
    state["_read_little"] = little_endian
    state["_read_charset"] = encoding
    ds = object.__new__(Dataset)
    object.__setattr__(ds, "__dict__", state)
    return ds


_SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
_Scalar = (bool, int, str, type(None))
_BlankState = tuple[dict[str, object], tuple[tuple[str, dict[str, object]], ...]]


def _blank_dataset_state() -> _BlankState | None:
    """The instance state ``Dataset.__init__`` gives a new Dataset, taken from a real one:
    (attributes to share, dicts to copy per instance). ``None`` (construct each Dataset the
    ordinary way) unless that state is plain scalars and dicts of scalars, and
    ``set_original_encoding`` sets exactly the three attributes ``_new_dataset`` sets.

    ``Dataset.__init__`` routes a dozen attributes through ``Dataset.__setattr__``: it cost
    6 us of every C-FIND match, copying its result 0.7 us.
    """
    probe = Dataset({}, parent_encoding=default_encoding)
    state = dict(vars(probe))
    shared: dict[str, object] = {}
    fresh: list[tuple[str, dict[str, object]]] = []
    for name, value in state.items():
        if name == "_dict":
            continue
        if isinstance(value, _Scalar):
            shared[name] = value
        elif type(value) is dict and all(isinstance(v, _Scalar) for v in value.values()):
            fresh.append((name, value))
        else:
            return None
    probe.set_original_encoding(True, False, ["ISO_IR 100"])
    changed = {
        name: value for name, value in vars(probe).items()
        if name not in state or state[name] is not value
    }
    expected = {"_read_implicit": True, "_read_little": False, "_read_charset": ["ISO_IR 100"]}
    if "_dict" not in state or changed != expected:
        return None
    return shared, tuple(fresh)


_BLANK = _blank_dataset_state()
