"""The requestor end to end as a fuzz target: aiodicom's C-ECHO, C-FIND and C-GET against a
hostile PACS that answers with a (mutated) recorded stream.

For each input a listener on a loopback port takes one connection, reads the first bytes of
the A-ASSOCIATE-RQ, sends the input (what a PACS sent in a recorded exchange: A-ASSOCIATE-AC,
responses, C-STOREs of a C-GET, A-RELEASE-RP), half-closes and drains. The client runs the
operation with short timeouts. Properties: it ends with a result or a DicomError (never
another exception, never an ExceptionGroup), within :data:`RUN_LIMIT` seconds, and leaves no
task behind. Byte 0 of the input picks the operation (see :data:`OPERATIONS`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import anyio.lowlevel
from peers.faulty_proxy import pdu_boundaries

import aiodicom
from aiodicom.errors import DicomError

from .targets import Finding

TIMEOUTS = aiodicom.Timeouts(connect=2, acse=2, dimse=2, network=2, artim=2)
RUN_LIMIT = 20.0
#: How the last replay ended: "ok" or the name of the DicomError (for tests and diagnostics).
last_outcome = ""
IMAGE_QUERY = aiodicom.Query.series(StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4")


async def _echo(peer: aiodicom.Peer) -> None:
    await peer.echo()


async def _find(peer: aiodicom.Peer) -> None:
    async for _ in peer.find(aiodicom.Query.study(PatientID="*")):
        pass


async def _get(peer: aiodicom.Peer) -> None:
    await peer.get(IMAGE_QUERY, sink=aiodicom.MemorySink())


OPERATIONS: tuple[Callable[[aiodicom.Peer], Awaitable[None]], ...] = (_echo, _find, _get)
# The recorded streams (tests/fuzz_seeds/stream/aiodicom-<pacs>-<n>-down.bin) by connection:
# 0 echo, 1 find, 2 move, 3 get; the move's is replayed as a find's (same responses shape).
OPERATION_OF_CONNECTION = {0: 0, 1: 1, 2: 1, 3: 2}


def _turns(answer: bytes) -> tuple[bytes, bytes, bytes]:
    """The answer in the three turns a PACS takes: its first PDU (the A-ASSOCIATE-AC), what
    follows up to an A-RELEASE-RP, and the rest (sent once the client asked to release)."""
    edges = pdu_boundaries(answer)
    first = edges[1] if len(edges) > 1 else len(answer)
    release = next((e for e in edges[1:-1] if answer[e] == 0x06), len(answer))
    return answer[:first], answer[first:release], answer[release:]


# Explicit little endian headers of (0000,0110) Message ID and (0000,0120) Message ID Being
# Responded To, with their value length 2 (command sets are implicit VR: tag, 4-byte length).
_MESSAGE_ID = b"\x00\x00\x10\x01\x02\x00\x00\x00"
_RESPONDED_TO = b"\x00\x00\x20\x01\x02\x00\x00\x00"


def _answering(responses: bytes, request: bytes) -> bytes:
    """``responses`` re-addressed to the Message ID of ``request``: our client starts its
    Message IDs at random, the recordings answer the IDs of their own exchange."""
    at = request.find(_MESSAGE_ID)
    if at < 0 or at + 10 > len(request):
        return responses
    message_id = request[at + 8 : at + 10]
    out = bytearray(responses)
    at = out.find(_RESPONDED_TO)
    while at >= 0 and at + 10 <= len(out):
        out[at + 8 : at + 10] = message_id
        at = out.find(_RESPONDED_TO, at + 10)
    return bytes(out)


def _asked_to_release(received: bytearray) -> bool:
    return any(received[e] == 0x05 for e in pdu_boundaries(received)[:-1])


async def _pacs(stream: anyio.abc.SocketStream, answer: bytes) -> None:
    accept, responses, release = _turns(answer)
    received = bytearray()
    async with stream:
        try:
            received += await stream.receive()
            await stream.send(accept)
            if responses:
                request = await stream.receive()
                received += request
                await stream.send(_answering(responses, request))
            while release and not _asked_to_release(received):
                received += await stream.receive()
            if release:
                await stream.send(release)
            await stream.send_eof()
            while True:
                await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                OSError):
            pass


@asynccontextmanager
async def hostile_pacs(answer: bytes) -> AsyncIterator[int]:
    """A PACS on a loopback port (yielded) answering every connection with ``answer``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, lambda s: _pacs(s, answer), tasks)
        try:
            yield listener.extra(anyio.abc.SocketAttribute.local_port)
        finally:
            tasks.cancel_scope.cancel()


async def replay(data: bytes) -> None:
    if not data:
        return
    operation = OPERATIONS[data[0] % len(OPERATIONS)]
    before = set(asyncio.all_tasks())
    outcome = "not run"
    async with hostile_pacs(data[1:]) as port:
        try:
            with anyio.fail_after(RUN_LIMIT):
                async with aiodicom.Client("FUZZSCU", timeouts=TIMEOUTS) as client:
                    try:
                        await operation(client.peer("127.0.0.1", port, "PACS"))
                        outcome = "ok"
                    except DicomError as exc:
                        outcome = f"{type(exc).__name__}: {exc}"
        except TimeoutError as exc:
            raise Finding(f"{operation.__name__[1:]} still running after {RUN_LIMIT} s") from exc
    global last_outcome
    last_outcome = outcome
    await anyio.lowlevel.checkpoint()
    left = set(asyncio.all_tasks()) - before
    if left:
        raise Finding(f"tasks left running: {[t.get_coro() for t in left]}")


def requestor_target(data: bytes) -> None:
    anyio.run(replay, data)
