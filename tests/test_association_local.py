"""aiodicom requestor against aiodicom acceptor on loopback: negotiation, rejection, abort."""

from __future__ import annotations

import ast
from pathlib import Path

import anyio
import pytest

import aiodicom
from aiodicom import ContextProposal
from aiodicom.pdu import ABSTRACT_SYNTAX_NOT_SUPPORTED, ACCEPTANCE
from aiodicom.uids import (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    STUDY_ROOT_FIND,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION,
)


async def test_echo_with_our_own_acceptor() -> None:
    async with aiodicom.Client("AIOSCP", listen_port=0) as server:
        assert server.listen_port
        async with aiodicom.Client("AIOSCU") as client:
            await client.peer("127.0.0.1", server.listen_port, "AIOSCP").echo()


async def test_called_ae_title_checked_when_asked() -> None:
    async with aiodicom.Client("AIOSCP", listen_port=0, require_called_ae_title=True) as server:
        assert server.listen_port
        async with aiodicom.Client("AIOSCU") as client:
            with pytest.raises(aiodicom.AssociationRejected) as info:
                await client.peer("127.0.0.1", server.listen_port, "SOMEONE").echo()
        assert "called AE title not recognized" in str(info.value)
        assert (info.value.result, info.value.source, info.value.reason) == (1, 1, 7)


async def test_unsupported_context_rejected_others_accepted() -> None:
    async with aiodicom.Client("AIOSCP", listen_port=0) as server:
        assert server.listen_port
        peer = aiodicom.Client("AIOSCU").peer("127.0.0.1", server.listen_port, "AIOSCP")
        proposals = [
            ContextProposal(STUDY_ROOT_FIND, UNCOMPRESSED_TRANSFER_SYNTAXES),
            ContextProposal(VERIFICATION, ("1.2.840.10008.1.2.4.50",)),
            ContextProposal(VERIFICATION, (IMPLICIT_VR_LE, EXPLICIT_VR_LE)),
        ]
        async with peer.associate(proposals) as session:
            results = {c.context_id: c for c in session.contexts.values()}
            assert results[1].result == ABSTRACT_SYNTAX_NOT_SUPPORTED
            assert results[3].result == 4  # transfer syntax not supported
            assert results[5].result == ACCEPTANCE
            assert results[5].transfer_syntax == IMPLICIT_VR_LE  # the requestor's first choice
            await session.echo()
            with pytest.raises(aiodicom.NoAcceptedContext, match="abstract syntax not supported"):
                session.association.context(STUDY_ROOT_FIND)


async def test_connection_refused_is_a_dicom_error() -> None:
    from peers import free_port

    async with aiodicom.Client("AIOSCU") as client:
        peer = client.peer("127.0.0.1", free_port(), "NOBODY")
        with pytest.raises(aiodicom.AssociationError, match="cannot connect"):
            await peer.echo()


async def test_silent_acceptor_times_out() -> None:
    async def silent(stream: object) -> None:
        await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, silent)
        async with aiodicom.Client("AIOSCU", timeouts=aiodicom.Timeouts(acse=0.3)) as client:
            with pytest.raises(aiodicom.DicomTimeoutError, match="A-ASSOCIATE-RQ"):
                await client.peer("127.0.0.1", port, "X").echo()
        tasks.cancel_scope.cancel()


async def test_peer_that_closes_mid_association_raises_connection_closed() -> None:
    async def rude(stream: anyio.abc.ByteStream) -> None:
        await stream.receive()
        await stream.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, rude)
        async with aiodicom.Client("AIOSCU") as client:
            with pytest.raises(aiodicom.AssociationAborted):
                await client.peer("127.0.0.1", port, "X").echo()
        tasks.cancel_scope.cancel()


async def test_oversized_pdu_is_refused_with_abort() -> None:
    """A peer announcing a PDU larger than our limit gets A-ABORT; nothing is allocated."""
    received = bytearray()
    liar_done = anyio.Event()

    async def liar(stream: anyio.abc.ByteStream) -> None:
        # A-ASSOCIATE-AC header announcing 2 GiB
        await stream.receive()
        await stream.send(b"\x02\x00" + (0x7FFFFFFF).to_bytes(4, "big"))
        with anyio.move_on_after(2):
            async for chunk in stream:  # until we close the connection
                received.extend(chunk)
        liar_done.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, liar)
        async with aiodicom.Client("AIOSCU") as client:
            with pytest.raises(aiodicom.AssociationAborted):
                await client.peer("127.0.0.1", port, "X").echo()
        with anyio.fail_after(5):
            await liar_done.wait()
        tasks.cancel_scope.cancel()
    assert received[:1] == b"\x07"  # we answered with A-ABORT


def test_library_uses_no_threads_and_no_sleep_polling() -> None:
    root = Path(aiodicom.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                module = getattr(node, "module", None) or ""
                assert "threading" not in names and not module.startswith("threading"), path
                assert "concurrent.futures" not in names, path
            if isinstance(node, ast.Attribute) and node.attr in {
                "sleep", "to_thread", "run_in_executor", "run_sync_in_worker_thread",
            }:
                pytest.fail(f"{path}:{node.lineno} uses {node.attr}")
