"""A TLS acceptor survives a connection closed before the TLS handshake (a port probe, a
health check): it once ended the whole Client with EndOfStream."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import anyio
from peers import LOOPBACK, require_module

import aiodicom


async def test_tls_acceptor_survives_a_connection_closed_before_the_handshake(
    tmp_path: Path,
) -> None:
    require_module("cryptography")
    from test_interop_association import _self_signed

    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(cert), str(key))
    client_tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    async with aiodicom.Client("AIOSCP", listen_port=0, server_ssl_context=server_tls) as server:
        assert server.listen_port
        for _ in range(3):
            with socket.create_connection((LOOPBACK, server.listen_port)):
                pass  # connected, closed at once: no ClientHello
        await anyio.sleep(0.2)  # the acceptor sees the closed connections
        async with aiodicom.Client("AIOSCU", ssl_context=client_tls) as client:
            await client.peer(LOOPBACK, server.listen_port, "AIOSCP").echo()


async def test_tls_acceptor_aborts_an_idle_association(tmp_path: Path) -> None:
    """The idle timeout holds on TLS too (its reads are timed by a cancel scope, plain TCP's
    by a loop timer)."""
    require_module("cryptography")
    import asyncio

    from test_interop_association import _self_signed

    from aiodicom.testing.hostile import associate_rq, read_pdu

    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(cert), str(key))
    client_tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    async with aiodicom.Client(
        "AIOSCP", listen_port=0, server_ssl_context=server_tls,
        unexpected_deliveries=aiodicom.DirectorySink(tmp_path / "in"),
        limits=aiodicom.Limits(idle_timeout=0.5),
    ) as server:
        assert server.listen_port
        reader, writer = await asyncio.open_connection(
            LOOPBACK, server.listen_port, ssl=client_tls, server_hostname=LOOPBACK
        )
        writer.write(associate_rq())
        with anyio.fail_after(30):
            assert (await read_pdu(reader))[0] == 0x02  # A-ASSOCIATE-AC
            assert (await read_pdu(reader))[0] == 0x07  # then silence: A-ABORT
        writer.close()
