"""Fuzzing in CI (short budget): the acceptor end to end over a loopback socket.

A ``Client(listen_port=0)`` with a MemorySink for unexpected deliveries runs in a thread
(tests/fuzz/acceptor.py); each example is a stream captured from a requestor talking to our
acceptor or to a PACS (A-ASSOCIATE-RQ, C-ECHO, C-FIND, C-MOVE, C-GET, C-STORE with data,
A-RELEASE-RQ), mutated, sent over a new connection. Properties: the acceptor closes every
connection within a bound after our half-close, nothing but typed errors reach its log, and
it goes on serving (a C-ECHO after the run). The long run: tests/fuzz/run.py acceptor.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from fuzz.acceptor import AcceptorUnderTest
from fuzz.strategies import mutated
from fuzz.targets import seed_files
from hypothesis import HealthCheck, given, settings

import aiodicom

REQUESTOR_STREAMS = [p.read_bytes() for p in seed_files("stream") if p.stem.endswith("-up")]


@pytest.fixture(scope="module")
def acceptor() -> Iterator[AcceptorUnderTest]:
    with AcceptorUnderTest() as running:
        yield running


def test_requestor_streams_are_served(acceptor: AcceptorUnderTest) -> None:
    """Unchanged, the captured streams associate and get answers (so mutations start deep)."""
    answered = [acceptor.send(data) for data in REQUESTOR_STREAMS]
    assert sum(reply[:1] == b"\x02" for reply in answered) >= len(REQUESTOR_STREAMS) // 2
    assert acceptor.sink.instances, "the C-STOREs of the seeds were stored"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(mutated(REQUESTOR_STREAMS, max_mutations=3))
def test_fuzz_acceptor_over_socket(acceptor: AcceptorUnderTest, data: bytes) -> None:
    acceptor.send(data)


def test_acceptor_still_answers_after_fuzzing(acceptor: AcceptorUnderTest) -> None:
    async def echo() -> None:
        async with aiodicom.Client("ECHOSCU") as client:
            await client.peer("127.0.0.1", acceptor.port, "FUZZSCP").echo()

    anyio.run(echo)
    acceptor.check()
