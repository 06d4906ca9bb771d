"""Hostile peers against the client's acceptor: what they send must cost bounded memory.

Each test plays the attacker over raw sockets (``aiodicom.testing.hostile``) against
``Client(listen_port=0)`` storing unexpected deliveries in a DirectorySink, as the issue's
attacker did: announced lengths that never arrive, command fragments without end, data sets on
contexts nobody accepted, a decompression bomb, a long run of C-STOREs.
"""

from __future__ import annotations

import gc
import logging
import struct
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from aiodicom import Client, DirectorySink, Limits
from aiodicom.association import DEFAULT_MAX_PDU_LENGTH
from aiodicom.buffer import INITIAL_SIZE, ReceiveBuffer
from aiodicom.status import Status
from aiodicom.testing.hostile import (
    CT_CONTEXT,
    DEFLATED_CONTEXT,
    associate,
    associate_rq,
    data_pdu,
    deflate_bomb,
    element,
    open_raw,
    pdu_header,
    read_pdu,
    read_status,
    store_rq,
)

HOST = "127.0.0.1"
STUCK = 30  # seconds: only a hang gets anywhere near this


@asynccontextmanager
async def storage_scp(directory: Path, **options: object) -> AsyncIterator[Client]:
    sink = DirectorySink(directory)
    async with Client("AIOSCP", listen_port=0, unexpected_deliveries=sink,
                      **options) as client:  # type: ignore[arg-type]
        yield client


async def eventually(predicate: Callable[[], bool]) -> None:
    """Until ``predicate()`` holds: what the server does with bytes is not awaitable here."""
    with anyio.fail_after(STUCK):
        while not predicate():
            await anyio.sleep(0.02)


def server_buffers() -> list[ReceiveBuffer]:
    # The raw peers here read through asyncio streams: every ReceiveBuffer is the acceptor's.
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, ReceiveBuffer)]


async def test_announced_pdu_lengths_allocate_nothing(tmp_path: Path) -> None:
    """A header announcing a large PDU, before or after association, costs no buffer of that
    size: the issue saw +953 MiB for 1,000 connections sending 8 bytes each."""
    count = 15  # 30 connections: within the default limits of one address and AE title
    async with storage_scp(tmp_path) as client:
        port = client.listen_port
        assert port is not None
        before = {id(buffer) for buffer in server_buffers()}
        writers = []
        for _ in range(count):  # A-ASSOCIATE-RQ announcing 1 MiB, before any association
            _reader, writer = await open_raw(HOST, port)
            writer.write(pdu_header(0x01, (1 << 20) - 6))
            writers.append(writer)
        for _ in range(count):  # P-DATA-TF announcing the largest accepted, once associated
            _reader, writer = await associate(HOST, port)
            writer.write(pdu_header(0x04, DEFAULT_MAX_PDU_LENGTH))
            writers.append(writer)

        def ours() -> list[ReceiveBuffer]:
            return [b for b in server_buffers() if id(b) not in before]

        # Every header read and decoded: the acceptor knows the announced size.
        await eventually(lambda: sum(b.pending_size > 0 for b in ours()) == 2 * count)
        await anyio.sleep(0.2)  # and each connection has gone back to reading
        capacity = sum(buffer.capacity for buffer in ours())
        assert capacity <= 2 * count * INITIAL_SIZE, f"{capacity >> 20} MiB of receive buffers"
        for writer in writers:
            writer.close()


async def test_command_fragments_without_end_abort_the_association(tmp_path: Path) -> None:
    """Command fragments without the last bit grow no buffer: past the command set limit the
    association is aborted (the issue saw +128 MiB)."""
    async with storage_scp(tmp_path) as client:
        assert client.listen_port is not None
        reader, writer = await associate(HOST, client.listen_port)
        # 160 kB of command fragments, none the last: read whole before the acceptor acts, so
        # that it closes with nothing unread (an RST could discard its A-ABORT here).
        fragment = data_pdu(CT_CONTEXT, bytes(8000), command=True, last=False)
        writer.write(fragment * 20)
        with anyio.fail_after(STUCK):
            pdu_type, _ = await read_pdu(reader)
        assert pdu_type == 0x07  # A-ABORT
        writer.close()


@pytest.mark.parametrize("context_id", [7, 9], ids=["rejected-context", "unknown-context"])
async def test_data_on_a_context_not_accepted_is_refused_at_once(
    tmp_path: Path, context_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A C-STORE on a context that was rejected (7: proposed with a transfer syntax nobody
    knows) or never proposed (9) is aborted at its first PDV: its data set is never held (the
    issue saw +129 MiB), and no KeyError comes out (the issue saw a traceback)."""
    caplog.set_level(logging.DEBUG)
    rq = bytearray(associate_rq())
    # One more context: CT in a transfer syntax nobody supports, so the acceptor rejects it.
    extra = _context_item(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.999")
    rq = _with_item(rq, extra)
    async with storage_scp(tmp_path) as client:
        assert client.listen_port is not None
        reader, writer = await open_raw(HOST, client.listen_port)
        writer.write(bytes(rq))
        pdu_type, _ = await read_pdu(reader)
        assert pdu_type == 0x02
        writer.write(store_rq(context_id, "1.2.3.4.5"))
        with anyio.fail_after(STUCK):
            pdu_type, _ = await read_pdu(reader)
        assert pdu_type == 0x07  # A-ABORT, before any of the data set was sent
        writer.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert not list(tmp_path.rglob("*.dcm"))


def _context_item(context_id: int, abstract_syntax: str, transfer_syntax: str) -> bytes:
    def sub(item_type: int, uid: str) -> bytes:
        return struct.pack(">BBH", item_type, 0, len(uid)) + uid.encode()

    body = struct.pack(">BBBB", context_id, 0, 0, 0) + sub(0x30, abstract_syntax) + sub(
        0x40, transfer_syntax)
    return struct.pack(">BBH", 0x20, 0, len(body)) + body


def _with_item(rq: bytearray, item: bytes) -> bytearray:
    """The A-ASSOCIATE-RQ with ``item`` added after its application context item."""
    application_context = 6 + 68
    (length,) = struct.unpack_from(">H", rq, application_context + 2)
    at = application_context + 4 + length
    out = bytearray(rq[:at]) + item + rq[at:]
    struct.pack_into(">I", out, 2, len(out) - 6)
    return out


async def test_deflate_bomb_is_not_inflated(tmp_path: Path) -> None:
    """A Deflated Explicit VR LE data set whose UIDs lie past 200 MB of zeros (200 KB on the
    wire) is refused without inflating it all: the issue saw +574 MiB and a 1.7 s stall."""
    bomb = deflate_bomb(200 << 20)
    assert len(bomb) < 300_000
    async with storage_scp(tmp_path) as client:
        assert client.listen_port is not None
        reader, writer = await associate(HOST, client.listen_port)
        tracemalloc.start()
        try:
            writer.write(store_rq(DEFLATED_CONTEXT, "1.2.3.4.5"))
            for start in range(0, len(bomb), 16000):
                writer.write(data_pdu(DEFLATED_CONTEXT, bomb[start : start + 16000],
                                      command=False, last=start + 16000 >= len(bomb)))
            with anyio.fail_after(STUCK):
                status = await read_status(reader)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        writer.close()
    assert status == Status.UNABLE_TO_PROCESS
    assert peak < 48 << 20, f"peak {peak >> 20} MiB while receiving the bomb"
    assert not list(tmp_path.rglob("*.dcm"))


async def test_long_running_storage_scp_keeps_bounded_state(tmp_path: Path) -> None:
    """As a storage SCP, a DirectorySink remembers a bounded number of paths (the issue saw
    0.5-1.7 KB kept per instance, for ever), and still counts every instance."""
    sink = DirectorySink(tmp_path)
    stored = 60
    async with Client("AIOSCP", listen_port=0, unexpected_deliveries=sink,
                      limits=Limits(max_remembered_paths=16)) as client:
        assert client.listen_port is not None
        reader, writer = await associate(HOST, client.listen_port)
        for number in range(stored):
            uid = f"1.2.3.{number}"
            data = (element(0x0008, 0x0018, b"UI", uid.encode())
                    + element(0x0020, 0x000D, b"UI", b"1.2.3")
                    + element(0x0020, 0x000E, b"UI", f"1.2.3.4.{number}".encode()))
            writer.write(store_rq(CT_CONTEXT, uid, message_id=number + 1))
            writer.write(data_pdu(CT_CONTEXT, data, command=False, last=True))
            with anyio.fail_after(STUCK):
                assert await read_status(reader) == Status.SUCCESS
        writer.close()
    assert sink.written == stored
    assert len(sink.paths) == 16
    assert len(list(tmp_path.rglob("*.dcm"))) == stored
