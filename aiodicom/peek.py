"""Reading a few elements of data set bytes without decoding the data set.

Element headers are scanned from the start (PS3.5 7.1: implicit VR, explicit VR little and big
endian, deflated), skipping values and sequences, stopping past the highest tag asked for: a
receiver reads the four identifying UIDs of every instance this way, and never the pixel data.
:mod:`aiodicom.fileio` re-exports what is public here.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Literal

from pydicom.datadict import dictionary_VR
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from aiodicom.errors import DicomError
from aiodicom.uids import Encoding, encoding_of

__all__ = [
    "IDENTIFYING_TAGS",
    "MAX_INFLATED_PEEK",
    "UNDEFINED_LENGTH",
    "MalformedDataSetError",
    "Scanner",
    "Source",
    "inflate",
    "peek_elements",
    "peek_prefix",
]


class MalformedDataSetError(DicomError, ValueError):
    """Data set bytes could not be scanned: truncated, bad lengths, or a corrupt deflate stream."""


UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITATION = 0xFFFEE00D
_SEQUENCE_DELIMITATION = 0xFFFEE0DD
# Explicit VRs whose header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2), as the
# bytes a header carries; pydicom's set is the one datasets.py reads with too.
_LONG_VRS = frozenset(vr.value.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
# Element headers: implicit VR (also every item and delimiter), explicit VR with a 2-byte
# length, and the 4-byte length that follows the reserved bytes of the long explicit form.
_LE_IMPLICIT = struct.Struct("<HHI")
_BE_IMPLICIT = struct.Struct(">HHI")
_LE_EXPLICIT = struct.Struct("<HH2sH")
_BE_EXPLICIT = struct.Struct(">HH2sH")
_LE_LENGTH = struct.Struct("<I")
_BE_LENGTH = struct.Struct(">I")


_ExplicitHeader = Callable[[bytes | memoryview, int], tuple[int, int, int, int]]


def _vr_codes(
    byteorder: Literal["little", "big"],
) -> tuple[_ExplicitHeader, frozenset[int], int, int]:
    """For reading explicit VR element headers with the VR as a number (no bytes object to
    hash): the header reader, the VRs with a 4-byte length (_LONG_VRS), SQ and UN."""

    def code(vr: bytes) -> int:
        return int.from_bytes(vr, byteorder)

    header = struct.Struct(("<" if byteorder == "little" else ">") + "HHHH").unpack_from
    return header, frozenset(map(code, _LONG_VRS)), code(b"SQ"), code(b"UN")


_LE_VR_CODES = _vr_codes("little")
_BE_VR_CODES = _vr_codes("big")
# Deliberately nested data sets deeper than this are treated as hostile rather than recursed.
_MAX_DEPTH = 64
_INFLATE_CHUNK = 16384
MAX_INFLATED_PEEK = 1 << 20
"""The most a deflated data set is inflated to peek at its elements (see :func:`peek_elements`);
Study and Series Instance UIDs come within the first kilobytes of any real data set. Small, as
the inflating runs on the event loop: 1 MiB is about a millisecond."""


class Source:
    """Random access to data set bytes, inflating a deflated stream only as far as needed.

    Reads go forward only (a scan): inflated bytes before the latest read are dropped, so that
    skipping a large element costs time, never memory; and no more than ``max_inflated`` bytes
    are ever inflated (a deflate stream can inflate a thousandfold).
    """

    def __init__(
        self, data: bytes | memoryview, deflated: bool, max_inflated: int = MAX_INFLATED_PEEK
    ) -> None:
        view = memoryview(data).cast("B")
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflated else None
        self._compressed = view
        self._fed = 0
        self._max_inflated = max_inflated
        self._produced = 0
        # The stream offset of self._buffer[0] (dropped bytes before it, when inflating).
        self._base = 0
        self._inflated = bytearray()
        self._buffer: memoryview | bytearray = self._inflated if deflated else view

    def _available(self, start: int, end: int) -> bool:
        inflater = self._inflater
        if inflater is None:
            return len(self._buffer) >= end
        inflated = self._inflated
        self._drop_before(start)
        while self._base + len(inflated) < end:
            if inflater.eof:
                return False
            pending: bytes | memoryview = inflater.unconsumed_tail
            if not pending:
                if self._fed >= self._compressed.nbytes:
                    return False
                pending = self._compressed[self._fed : self._fed + _INFLATE_CHUNK]
                self._fed += len(pending)
            room = self._max_inflated - self._produced
            if room <= 0:
                raise MalformedDataSetError(
                    f"the deflated data set inflates to more than {self._max_inflated} bytes "
                    "before the elements sought"
                )
            try:
                out = inflater.decompress(pending, min(room, _INFLATE_CHUNK * 4))
            except zlib.error as exc:
                raise MalformedDataSetError(f"corrupt deflated data set: {exc}") from None
            self._produced += len(out)
            inflated += out
            self._drop_before(start)  # a skipped value is never kept
        return True

    def _drop_before(self, start: int) -> None:
        if start > self._base:
            drop = min(start - self._base, len(self._inflated))
            del self._inflated[:drop]
            self._base += drop

    def at_end(self, position: int) -> bool:
        return not self._available(position, position + 1)

    def read(self, position: int, length: int) -> bytes:
        if not self._available(position, position + length):
            raise MalformedDataSetError(f"data set ends inside an element at offset {position}")
        start = position - self._base
        return bytes(self._buffer[start : start + length])


def inflate(data: bytes | memoryview, max_inflated: int) -> bytes:
    """A whole deflated data set (PS3.5 A.5) inflated, in bounded steps; past ``max_inflated``
    bytes :class:`MalformedDataSetError` (a deflate stream can inflate a thousandfold)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    pending: bytes | memoryview = memoryview(data).cast("B")
    try:
        while pending and not inflater.eof:
            room = max_inflated - len(out)
            if room <= 0:
                raise MalformedDataSetError(
                    f"the deflated data set inflates to more than {max_inflated} bytes"
                )
            out += inflater.decompress(pending, min(room, 1 << 20))
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise MalformedDataSetError(f"corrupt deflated data set: {exc}") from None
    return bytes(out)


class Scanner:
    def __init__(self, source: Source, little_endian: bool) -> None:
        self._source = source
        order = "<" if little_endian else ">"
        self._implicit_header = struct.Struct(order + "HHI")
        self._explicit_header = struct.Struct(order + "HH2sH")
        self._long_length = struct.Struct(order + "I")

    def header(self, position: int, implicit_vr: bool) -> tuple[int, bytes, int, int]:
        """Return (tag, VR or b"", value length, value position) of the element at position."""
        head = self._source.read(position, 8)
        group, element, vr, short_length = self._explicit_header.unpack(head)
        # Item and delimiter tags never carry a VR, whatever the transfer syntax.
        if implicit_vr or group == 0xFFFE:
            (_, _, length) = self._implicit_header.unpack(head)
            return group << 16 | element, b"", length, position + 8
        if vr in _LONG_VRS:
            (length,) = self._long_length.unpack(self._source.read(position + 8, 4))
            return group << 16 | element, vr, length, position + 12
        return group << 16 | element, vr, short_length, position + 8

    def skip_undefined(self, position: int, implicit_vr: bool, depth: int = 0) -> int:
        """Skip the items of an undefined-length value; return the position after its end."""
        if depth > _MAX_DEPTH:
            raise MalformedDataSetError(f"sequences nested deeper than {_MAX_DEPTH} levels")
        while True:
            tag, _, length, position = self.header(position, True)
            if tag == _SEQUENCE_DELIMITATION:
                return position
            if tag != _ITEM:
                raise MalformedDataSetError(f"expected an item tag, found {tag:08X}")
            if length != UNDEFINED_LENGTH:
                position += length
                continue
            # An undefined-length item is a data set that runs to its Item Delimitation.
            while True:
                tag, vr, length, position = self.header(position, implicit_vr)
                if tag == _ITEM_DELIMITATION:
                    break
                if length == UNDEFINED_LENGTH:
                    position = self.skip_undefined(position, implicit_vr or vr == b"UN", depth + 1)
                else:
                    position += length


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def peek_elements(
    data: bytes | memoryview, transfer_syntax_uid: str, tags: Iterable[int],
    max_inflated: int = MAX_INFLATED_PEEK,
) -> dict[int, str]:
    """Read the values of a few top-level elements without decoding the data set.

    Scans element headers from the start and stops past the highest requested tag (data sets
    are sorted by tag), so asking for (0020,000D) and (0020,000E) never touches pixel data.
    Handles implicit VR LE, explicit VR LE and BE, and deflated data sets (inflated only as
    far as the scan goes, and never more than ``max_inflated`` bytes: past them
    :class:`MalformedDataSetError`). Values are returned as text with trailing NUL/space padding
    removed, decoded as ISO 8859-1 so no byte is lost: meant for UIDs, codes and other
    default-repertoire values; read :attr:`Instance.dataset` where Specific Character Set
    matters. Tags absent from the data set, and sequences, are left out.

    Raises :class:`MalformedDataSetError` when the bytes cannot be scanned that far.
    """
    wanted = frozenset(tags)
    if not wanted:
        return {}
    encoding = encoding_of(transfer_syntax_uid)
    last, values = _peek_plan(wanted, encoding.implicit_vr)
    if encoding.deflated:
        return _peek_inflating(data, encoding, len(wanted), last, values, max_inflated)
    # unpack_from and slicing work on bytes as they are; anything else is viewed as bytes.
    view = data if type(data) is bytes else memoryview(data).cast("B")
    end = len(view)
    little_endian = encoding.little_endian
    found: dict[int, str] = {}
    position = 0
    # One loop per encoding, every header read with one unpack_from and no copy: this runs
    # for every instance a DirectorySink writes.
    if encoding.implicit_vr:
        implicit_header = (_LE_IMPLICIT if little_endian else _BE_IMPLICIT).unpack_from
        while position < end:
            if position + 8 > end:
                raise _truncated(position)
            group, element, length = implicit_header(view, position)
            position += 8
            tag = group << 16 | element
            if tag > last:
                break
            if length == UNDEFINED_LENGTH:
                position = _skip_undefined(view, position, True, little_endian)
                continue
            if tag in values:
                if position + length > end:
                    raise _truncated(position)
                found[tag] = str(view[position : position + length], "latin-1").rstrip("\0 ")
                if len(found) == len(wanted):
                    break
            position += length
        return found
    explicit_header, long_vrs, sq, un = _LE_VR_CODES if little_endian else _BE_VR_CODES
    long_length = (_LE_LENGTH if little_endian else _BE_LENGTH).unpack_from
    # The header decoding below is also in _skip_undefined: inlined on purpose, a call per
    # element would cost a quarter of this loop, which runs for every instance received. The
    # VR is read as a number (no bytes object to hash), and a header running past the end is
    # caught by unpack_from rather than checked before each element.
    try:
        while position < end:
            group, element, vr, length = explicit_header(view, position)
            if group == 0xFFFE:
                # Item and delimiter tags never carry a VR, whatever the transfer syntax.
                (length,) = long_length(view, position + 4)
                vr = 0
                position += 8
            elif vr in long_vrs:
                position += 8  # a truncated length is reported where it starts
                (length,) = long_length(view, position)
                position += 4
            else:
                position += 8
            tag = group << 16 | element
            if tag > last:
                break
            if length == UNDEFINED_LENGTH:
                # CP-246: an undefined-length UN holds implicit VR little endian items.
                position = _skip_undefined(view, position, vr == un, little_endian)
                continue
            if tag in values and vr != sq:
                if position + length > end:
                    raise _truncated(position)
                found[tag] = str(view[position : position + length], "latin-1").rstrip("\0 ")
                if len(found) == len(wanted):
                    break
            position += length
    except struct.error:  # a header running past the end of the data
        raise _truncated(position) from None
    return found


#: What a receiver reads from every data set it stores, in one scan: whether the data set is
#: what its command says (SOP Class and SOP Instance UID) and where a DirectorySink files it
#: (Study and Series Instance UID).
IDENTIFYING_TAGS = (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)


def peek_prefix(
    prefix: bytes | memoryview, transfer_syntax_uid: str, tags: Iterable[int]
) -> dict[int, str] | None:
    """:func:`peek_elements` over the first bytes of a data set still arriving: the values when
    every one of ``tags`` is within them, else ``None`` (the rest of the data set may hold
    them, or a tag is absent: only the whole data set can tell). Deflated data sets give
    ``None``: they are inflated only under the receiver's own limit, once whole."""
    wanted = frozenset(tags)
    if encoding_of(transfer_syntax_uid).deflated:
        return None
    try:
        found = peek_elements(prefix, transfer_syntax_uid, wanted)
    except MalformedDataSetError:
        return None
    return found if len(found) == len(wanted) else None


@functools.lru_cache(maxsize=64)
def _peek_plan(wanted: frozenset[int], implicit_vr: bool) -> tuple[int, frozenset[int]]:
    """Return the highest wanted tag and the wanted tags whose values are to be read."""
    if not implicit_vr:
        return max(wanted), wanted
    # Implicit VR gives no hint that a defined-length value is a sequence: ask the dictionary.
    return max(wanted), frozenset(tag for tag in wanted if _dictionary_vr(tag) != "SQ")


def _truncated(position: int) -> MalformedDataSetError:
    return MalformedDataSetError(f"data set ends inside an element at offset {position}")


def _skip_undefined(
    view: bytes | memoryview, position: int, implicit_vr: bool, little_endian: bool, depth: int = 0
) -> int:
    """Skip the items of an undefined-length value; return the position after its end."""
    if depth > _MAX_DEPTH:
        raise MalformedDataSetError(f"sequences nested deeper than {_MAX_DEPTH} levels")
    end = len(view)
    implicit_header = (_LE_IMPLICIT if little_endian else _BE_IMPLICIT).unpack_from
    explicit_header = (_LE_EXPLICIT if little_endian else _BE_EXPLICIT).unpack_from
    long_length = (_LE_LENGTH if little_endian else _BE_LENGTH).unpack_from
    while True:
        if position + 8 > end:
            raise _truncated(position)
        group, element, length = implicit_header(view, position)
        position += 8
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITATION:
            return position
        if tag != _ITEM:
            raise MalformedDataSetError(f"expected an item tag, found {tag:08X}")
        if length != UNDEFINED_LENGTH:
            position += length
            continue
        # An undefined-length item is a data set that runs to its Item Delimitation.
        while True:
            if position + 8 > end:
                raise _truncated(position)
            vr = b""
            if implicit_vr:
                group, element, length = implicit_header(view, position)
                position += 8
            else:
                group, element, vr, length = explicit_header(view, position)
                if group == 0xFFFE:
                    (length,) = long_length(view, position + 4)
                    vr = b""
                    position += 8
                elif vr in _LONG_VRS:
                    if position + 12 > end:
                        raise _truncated(position + 8)
                    (length,) = long_length(view, position + 8)
                    position += 12
                else:
                    position += 8
            tag = group << 16 | element
            if tag == _ITEM_DELIMITATION:
                break
            if length == UNDEFINED_LENGTH:
                position = _skip_undefined(
                    view, position, implicit_vr or vr == b"UN", little_endian, depth + 1
                )
            else:
                position += length


def _peek_inflating(
    data: bytes | memoryview, encoding: Encoding, count: int, last: int, values: frozenset[int],
    max_inflated: int,
) -> dict[int, str]:
    """:func:`peek_elements` for a deflated data set, inflating only as far as the scan goes."""
    source = Source(data, deflated=True, max_inflated=max_inflated)
    scanner = Scanner(source, encoding.little_endian)
    found: dict[int, str] = {}
    position = 0
    while len(found) < count and not source.at_end(position):
        tag, vr, length, position = scanner.header(position, encoding.implicit_vr)
        if tag > last:
            break
        if length == UNDEFINED_LENGTH:
            # CP-246: an undefined-length UN holds implicit VR little endian items.
            position = scanner.skip_undefined(position, encoding.implicit_vr or vr == b"UN")
            continue
        if tag in values and vr != b"SQ":
            found[tag] = source.read(position, length).rstrip(b"\0 ").decode("latin-1")
        position += length
    return found
