"""Hostile peers for tests and the soak benchmark: raw connections that misbehave on purpose.

Each is a plain asyncio stream writing bytes crafted here (with aiodicom's own PDU encoder where
the bytes are well-formed), so that what reaches an acceptor is exactly what an attacker would
send: announced lengths that never arrive, command fragments without end, a data set on a
context nobody accepted, a deflated data set that inflates a thousandfold, a PDU sent a byte
at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import zlib

from aiodicom.dimse import (
    C_ECHO_RQ,
    C_STORE_RQ,
    DATASET_PRESENT,
    NO_DATASET,
    decode_command,
    encode_command,
)
from aiodicom.pdu import (
    AssociateRQ,
    PDataTF,
    PresentationContextRQ,
    PresentationDataValue,
    RoleSelection,
    UserInformation,
    encode_pdu,
)
from aiodicom.uids import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, VERIFICATION

__all__ = [
    "CT_IMAGE_STORAGE",
    "associate",
    "associate_rq",
    "close_at_once",
    "command_pdu",
    "data_pdu",
    "deflate_bomb",
    "echo_rq",
    "element",
    "instance_data_set",
    "open_raw",
    "pdu_header",
    "read_pdu",
    "read_status",
    "store_rq",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Context IDs of :func:`associate_rq`: Verification, CT in Explicit VR LE, CT deflated.
ECHO_CONTEXT, CT_CONTEXT, DEFLATED_CONTEXT = 1, 3, 5


def associate_rq(
    called: str = "ANY-SCP", calling: str = "HOSTILE", *,
    role_selection_uid: str | None = None, max_pdu_length: int = 16384,
) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification and CT Image Storage (plain and deflated)."""
    roles = (
        (RoleSelection(role_selection_uid, True, True),) if role_selection_uid is not None else ()
    )
    return encode_pdu(AssociateRQ(
        called_ae_title=called,
        calling_ae_title=calling,
        presentation_contexts=(
            PresentationContextRQ(ECHO_CONTEXT, VERIFICATION, (EXPLICIT_VR_LE,)),
            PresentationContextRQ(CT_CONTEXT, CT_IMAGE_STORAGE, (EXPLICIT_VR_LE,)),
            PresentationContextRQ(DEFLATED_CONTEXT, CT_IMAGE_STORAGE, (DEFLATED_EXPLICIT_VR_LE,)),
        ),
        user_information=UserInformation(
            max_pdu_length=max_pdu_length if role_selection_uid is None else None,
            implementation_class_uid="1.2.3.4" if role_selection_uid is None else None,
            role_selections=roles,
        ),
    ))


def pdu_header(pdu_type: int, length: int) -> bytes:
    """The 6-byte header of a PDU announcing ``length`` bytes after it."""
    return struct.pack(">BBI", pdu_type, 0, length)


def data_pdu(context_id: int, data: bytes, *, command: bool, last: bool) -> bytes:
    return encode_pdu(PDataTF((PresentationDataValue(context_id, command, last, data),)))


def command_pdu(context_id: int, fields: dict[str, object], *, last: bool = True) -> bytes:
    return data_pdu(context_id, encode_command(fields), command=True, last=last)


def echo_rq(message_id: int = 1) -> bytes:
    return command_pdu(ECHO_CONTEXT, {
        "CommandField": C_ECHO_RQ, "MessageID": message_id,
        "AffectedSOPClassUID": VERIFICATION, "CommandDataSetType": NO_DATASET,
    })


def store_rq(
    context_id: int, sop_instance_uid: str, *, sop_class_uid: str = CT_IMAGE_STORAGE,
    message_id: int = 1,
) -> bytes:
    """The command of a C-STORE-RQ (its data set follows in :func:`data_pdu` PDUs)."""
    return command_pdu(context_id, {
        "CommandField": C_STORE_RQ, "MessageID": message_id, "Priority": 0,
        "AffectedSOPClassUID": sop_class_uid, "AffectedSOPInstanceUID": sop_instance_uid,
        "CommandDataSetType": DATASET_PRESENT,
    })


def element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (short-length VRs, or OB/UN with a long one)."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr in (b"OB", b"UN", b"OW"):
        return struct.pack("<HH2sHI", group, number, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, number, vr, len(value)) + value


def instance_data_set(
    sop_instance_uid: str, *, sop_class_uid: str = CT_IMAGE_STORAGE, pixel_bytes: int = 0
) -> bytes:
    """An explicit VR little endian data set with the identifying UIDs (Study 1.2.3, Series
    1.2.3.4) and, when ``pixel_bytes``, Pixel Data of that many bytes (rounded down to 256)."""
    data = (element(0x0008, 0x0016, b"UI", sop_class_uid.encode())
            + element(0x0008, 0x0018, b"UI", sop_instance_uid.encode())
            + element(0x0020, 0x000D, b"UI", b"1.2.3")
            + element(0x0020, 0x000E, b"UI", b"1.2.3.4"))
    if pixel_bytes:
        data += element(0x7FE0, 0x0010, b"OB", bytes(range(256)) * (pixel_bytes // 256))
    return data


def deflate_bomb(inflated_size: int, study_uid: str = "1.2.3", series_uid: str = "1.2.3.4"
                 ) -> bytes:
    """A Deflated Explicit VR LE data set whose Study/Series UIDs come after a private OB value
    of ``inflated_size`` zero bytes: small on the wire, huge once inflated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    # The header of the big value, then its zeros streamed through the compressor.
    out = [compressor.compress(struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, inflated_size))]
    chunk = bytes(1 << 20)
    left = inflated_size
    while left:
        part = min(left, len(chunk))
        out.append(compressor.compress(chunk[:part]))
        left -= part
    out.append(compressor.compress(
        element(0x0020, 0x000D, b"UI", study_uid.encode())
        + element(0x0020, 0x000E, b"UI", series_uid.encode())
    ))
    out.append(compressor.flush())
    data = b"".join(out)
    return data + b"\0" if len(data) % 2 else data


async def open_raw(
    host: str, port: int, *, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection (from ``source``, an address of this host, when given)."""
    return await asyncio.open_connection(
        host, port, local_addr=(source, 0) if source is not None else None
    )


async def read_pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One whole PDU: (type, body)."""
    header = await reader.readexactly(6)
    pdu_type, _, length = struct.unpack(">BBI", header)
    return pdu_type, await reader.readexactly(length)


async def read_status(reader: asyncio.StreamReader) -> int:
    """The Status of the DIMSE response the next P-DATA-TF carries (its command, one PDV)."""
    pdu_type, body = await read_pdu(reader)
    if pdu_type != 0x04:
        raise ConnectionError(f"expected P-DATA-TF, got PDU type {pdu_type:#04x}")
    (length,) = struct.unpack_from(">I", body)
    status = decode_command(body[6 : 4 + length]).get("Status")
    if not isinstance(status, int):
        raise ConnectionError(f"the response has no Status: {body!r}")
    return status


async def associate(
    host: str, port: int, *, calling: str = "HOSTILE", source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection with an association established (raises if it is not accepted)."""
    reader, writer = await open_raw(host, port, source=source)
    writer.write(associate_rq(calling=calling))
    await writer.drain()
    pdu_type, body = await read_pdu(reader)
    if pdu_type != 0x02:
        writer.close()
        raise ConnectionError(f"association not accepted: PDU type {pdu_type:#04x} {body!r}")
    return reader, writer


def close_at_once(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (no lingering FIN handshake): what a vanished peer looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None and not writer.is_closing():
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
