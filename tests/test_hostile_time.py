"""Hostile peers against the client's acceptor: what they hold, and for how long.

Idle and trickling peers are cut off, the number of associations is bounded per source address
and per calling AE title, a process out of file descriptors neither spins nor stops serving the
associations it has, and a request that cannot be answered is rejected within ARTIM.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import struct
from pathlib import Path

import anyio
import pytest

from aiodicom import Client, DirectorySink, Limits, Timeouts
from aiodicom.testing.hostile import (
    associate,
    associate_rq,
    echo_rq,
    open_raw,
    pdu_header,
    read_pdu,
)

HOST = "127.0.0.1"
STUCK = 30  # seconds: only a hang gets anywhere near this


async def closed_by_server(reader: asyncio.StreamReader) -> list[int]:
    """The types of the PDUs the server sends until it closes the connection."""
    types = []
    with anyio.fail_after(STUCK):
        while True:
            try:
                pdu_type, _ = await read_pdu(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return types
            types.append(pdu_type)


async def test_idle_association_is_closed(tmp_path: Path) -> None:
    """An association that sends nothing is aborted after the idle timeout (the issue saw
    1,000 of them still open after 45 s with the default Timeouts)."""
    async with Client("AIOSCP", listen_port=0, unexpected_deliveries=DirectorySink(tmp_path),
                      limits=Limits(idle_timeout=0.5)) as client:
        assert client.listen_port is not None
        reader, writer = await associate(HOST, client.listen_port)
        assert await closed_by_server(reader) == [0x07]  # A-ABORT, then the close
        writer.close()


@pytest.mark.parametrize("when", ["negotiating", "associated"])
async def test_trickled_pdu_is_cut_off(tmp_path: Path, when: str) -> None:
    """A PDU trickled a byte at a time is never idle, yet is cut off: the issue's 1 byte every
    2 s survived Timeouts(network=5). Here, a byte every 0.3 s against network=1, of an
    A-ASSOCIATE-RQ or of a P-DATA-TF."""
    limits = Limits(pdu_grace=1.0, min_receive_rate=1024)
    async with Client("AIOSCP", listen_port=0, unexpected_deliveries=DirectorySink(tmp_path),
                      timeouts=Timeouts(network=1), limits=limits) as client:
        assert client.listen_port is not None
        if when == "associated":
            reader, writer = await associate(HOST, client.listen_port)
            pdu = pdu_header(0x04, 1000) + bytes(1000)
        else:
            reader, writer = await open_raw(HOST, client.listen_port)
            pdu = associate_rq()
        sent = 0

        async def trickle() -> None:
            nonlocal sent
            for byte in pdu:
                if writer.is_closing():
                    return
                writer.write(bytes([byte]))
                sent += 1
                await anyio.sleep(0.3)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(trickle)
            # Before association the connection is just closed (there is none to abort).
            assert await closed_by_server(reader) == ([0x07] if when == "associated" else [])
            tasks.cancel_scope.cancel()
        writer.close()
    assert sent < 100  # cut off long before the PDU was complete


async def test_associations_per_address_are_bounded(tmp_path: Path) -> None:
    """Past the limit of one source address a connection gets A-ASSOCIATE-RJ (transient,
    local limit exceeded) at once, unread; other addresses are still served."""
    limits = Limits(max_associations_per_address=3)
    async with Client("AIOSCP", listen_port=0, limits=limits) as client:
        port = client.listen_port
        assert port is not None
        held = [await associate(HOST, port) for _ in range(3)]
        reader, writer = await open_raw(HOST, port)
        with anyio.fail_after(STUCK):
            pdu_type, body = await read_pdu(reader)
        assert (pdu_type, body[1:]) == (0x03, b"\x02\x03\x02")
        writer.close()
        # Another address of this host is not affected.
        other_reader, other_writer = await associate(HOST, port, source="127.0.0.2")
        other_writer.write(echo_rq())
        assert (await read_pdu(other_reader))[0] == 0x04
        other_writer.close()
        # Once one of the three ends, the address may associate again.
        held[0][1].close()
        with anyio.fail_after(STUCK):
            while True:
                try:
                    held[0] = await associate(HOST, port)
                    break
                except ConnectionError:
                    await anyio.sleep(0.05)  # the server has not seen the close yet
        for _, held_writer in held:
            held_writer.close()


async def test_associations_per_calling_ae_are_bounded() -> None:
    """Past the limit of one calling AE title its A-ASSOCIATE-RQ is rejected (transient, local
    limit exceeded); other AE titles are accepted."""
    limits = Limits(max_associations_per_ae=2)
    async with Client("AIOSCP", listen_port=0, limits=limits) as client:
        port = client.listen_port
        assert port is not None
        held = [await associate(HOST, port, calling="FLOOD") for _ in range(2)]
        reader, writer = await open_raw(HOST, port)
        writer.write(associate_rq(calling="FLOOD"))
        with anyio.fail_after(STUCK):
            pdu_type, body = await read_pdu(reader)
        assert (pdu_type, body[1:]) == (0x03, b"\x02\x03\x02")
        writer.close()
        _, other = await associate(HOST, port, calling="OTHER")
        other.close()
        for _, held_writer in held:
            held_writer.close()


async def test_silent_connections_make_room_for_new_ones() -> None:
    """At the total limit, the oldest connection still negotiating (silent since it connected,
    from whatever address) is shed for a new one; established associations never are."""
    limits = Limits(max_associations=3)
    async with Client("AIOSCP", listen_port=0, limits=limits) as client:
        port = client.listen_port
        assert port is not None
        held_reader, held_writer = await associate(HOST, port, source="127.0.0.2")
        silent = [await open_raw(HOST, port, source=f"127.0.0.{n}") for n in (3, 4)]
        await anyio.sleep(1.5)  # past the negotiation grace
        # The limit is reached: a new peer gets in, at the cost of the oldest silent one.
        reader, writer = await associate(HOST, port)
        writer.write(echo_rq())
        assert (await read_pdu(reader))[0] == 0x04
        with anyio.fail_after(STUCK):
            assert await silent[0][0].read() == b""  # closed by the server
        held_writer.write(echo_rq())
        assert (await read_pdu(held_reader))[0] == 0x04  # the established one lives on
        for _, silent_writer in silent:
            silent_writer.close()
        writer.close()
        held_writer.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
async def test_out_of_descriptors_neither_spins_nor_stops_serving() -> None:
    """At the file-descriptor limit the accept loop waits for a connection to close instead of
    retrying at once (the issue saw 99 % CPU and legitimate C-ECHOs timing out); associations
    already established are served meanwhile, and the waiting connection is taken afterwards."""
    async with Client("AIOSCP", listen_port=0) as client:
        port = client.listen_port
        assert port is not None
        listener = client._listener
        assert listener is not None
        reader, writer = await associate(HOST, port)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fillers: list[int] = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8,
                                                        hard))
            with pytest.raises(OSError) as full:
                while True:
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
            assert full.value.errno == errno.EMFILE
            os.close(fillers.pop())  # one descriptor left: the client side of the next one
            waiting_reader, waiting_writer = await open_raw(HOST, port)
            failures = listener.accept_failures
            await anyio.sleep(1.0)  # the accept loop meets EMFILE meanwhile
            assert listener.accept_failures >= failures + 1
            assert listener.accept_failures <= failures + 3, "the accept loop spins"
            writer.write(echo_rq())
            with anyio.fail_after(STUCK):
                assert (await read_pdu(reader))[0] == 0x04  # the established one is served
            writer.close()  # its end frees a descriptor: the waiting connection is taken
            waiting_writer.write(associate_rq())
            with anyio.fail_after(STUCK):
                assert (await read_pdu(waiting_reader))[0] == 0x02
            waiting_writer.close()
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_unanswerable_request_is_rejected_within_artim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An A-ASSOCIATE-RQ whose answer cannot be encoded (a 65,490-character role selection UID,
    echoed in the A-ASSOCIATE-AC) is rejected and the socket closed: the issue saw a ValueError
    traceback, no answer, and the socket open past ARTIM."""
    caplog.set_level(logging.DEBUG)
    async with Client("AIOSCP", listen_port=0, timeouts=Timeouts(artim=2)) as client:
        assert client.listen_port is not None
        reader, writer = await open_raw(HOST, client.listen_port)
        rq = associate_rq(role_selection_uid="1" * 65490)
        assert struct.unpack_from(">I", rq, 2)[0] > 65490
        writer.write(rq)
        answered = await closed_by_server(reader)
        assert answered in ([0x03], [0x07])  # A-ASSOCIATE-RJ or A-ABORT, then closed
        writer.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
