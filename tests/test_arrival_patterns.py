"""How a peer's bytes arrive must not change what our acceptor makes of them: a message in
pieces (a PDU cut inside its header), several messages in one read, more PDUs in one read than
one decoding step takes (DECODE_SLICE_PDUS), and a broken PDV after a good message.

A raw peer controls how the bytes arrive; our acceptor with a DirectorySink answers them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import anyio

from aiodicom import Client, DirectorySink
from aiodicom.association import DECODE_SLICE_PDUS
from aiodicom.instance import read_part10
from aiodicom.status import Status
from aiodicom.testing.hostile import (
    CT_CONTEXT,
    associate,
    data_pdu,
    echo_rq,
    instance_data_set,
    read_pdu,
    read_status,
    store_rq,
)

HOST = "127.0.0.1"
STUCK = 30


def stored(root: Path, sop_instance_uid: str) -> bytes:
    return bytes(read_part10(root / "1.2.3" / "1.2.3.4" / f"{sop_instance_uid}.dcm").data)


async def test_store_arriving_in_pieces(tmp_path: Path) -> None:
    # The command alone, then the data set PDU cut inside its header and inside its value.
    data = instance_data_set("1.2.3.4.5", pixel_bytes=40_000)
    pdu = data_pdu(CT_CONTEXT, data, command=False, last=True)
    async with Client("AIOSCP", listen_port=0,
                      unexpected_deliveries=DirectorySink(tmp_path)) as server:
        assert server.listen_port
        reader, writer = await associate(HOST, server.listen_port)
        with anyio.fail_after(STUCK):
            writer.write(store_rq(CT_CONTEXT, "1.2.3.4.5"))
            await writer.drain()
            for piece in (pdu[:4], pdu[4:20_000], pdu[20_000:]):
                await anyio.sleep(0.02)  # each piece a read of its own on the acceptor's side
                writer.write(piece)
                await writer.drain()
            assert await read_status(reader) == Status.SUCCESS
        writer.close()
    assert stored(tmp_path, "1.2.3.4.5") == data


async def test_messages_arriving_together(tmp_path: Path) -> None:
    # Two C-STOREs and a C-ECHO in one write: decoded in one go, answered one by one, in order.
    first, second = (instance_data_set("1.2.3.4.6", pixel_bytes=512),
                     instance_data_set("1.2.3.4.7", pixel_bytes=1024))
    burst = b"".join((
        store_rq(CT_CONTEXT, "1.2.3.4.6", message_id=1),
        data_pdu(CT_CONTEXT, first, command=False, last=True),
        store_rq(CT_CONTEXT, "1.2.3.4.7", message_id=2),
        data_pdu(CT_CONTEXT, second, command=False, last=True),
        echo_rq(message_id=3),
    ))
    async with Client("AIOSCP", listen_port=0,
                      unexpected_deliveries=DirectorySink(tmp_path)) as server:
        assert server.listen_port
        reader, writer = await associate(HOST, server.listen_port)
        with anyio.fail_after(STUCK):
            writer.write(burst)
            await writer.drain()
            assert [await read_status(reader) for _ in range(3)] == [Status.SUCCESS] * 3
        writer.close()
    assert stored(tmp_path, "1.2.3.4.6") == first
    assert stored(tmp_path, "1.2.3.4.7") == second


async def test_more_pdus_than_one_step_decodes() -> None:
    # More PDUs in one read than one step decodes: the rest are decoded by the next steps,
    # without reading; every request is answered.
    count = 3 * DECODE_SLICE_PDUS + 5
    async with Client("AIOSCP", listen_port=0) as server:
        assert server.listen_port
        reader, writer = await associate(HOST, server.listen_port)
        with anyio.fail_after(STUCK):
            writer.write(b"".join(echo_rq(message_id=n + 1) for n in range(count)))
            await writer.drain()
            assert [await read_status(reader) for _ in range(count)] == [Status.SUCCESS] * count
        writer.close()


async def test_broken_message_after_a_good_one_aborts() -> None:
    # A data set fragment on a context the association did not accept, after a C-ECHO that was
    # answered: the association is aborted (A-ABORT, then the connection closes).
    stray = data_pdu(7, b"\0" * 8, command=False, last=True)
    async with Client("AIOSCP", listen_port=0) as server:
        assert server.listen_port
        reader, writer = await associate(HOST, server.listen_port)
        with anyio.fail_after(STUCK):
            writer.write(echo_rq())
            await writer.drain()
            assert await read_status(reader) == Status.SUCCESS
            writer.write(stray)
            await writer.drain()
            pdu_type, body = await read_pdu(reader)
            assert pdu_type == 0x07  # A-ABORT
            assert struct.unpack_from(">BB", body, 2) == (0, 0)  # by the service user
            assert await reader.read() == b""  # and the connection closed
        writer.close()
