"""Fuzzing in CI (short budget): our C-ECHO, C-FIND and C-GET against a hostile PACS that
answers with mutated recordings of what dcmqrscp and Orthanc answered (tests/fuzz/requestor.py).
Each run ends with a result or a DicomError, in bounded time, with no task left behind. The
long run: tests/fuzz/run.py requestor.
"""

from __future__ import annotations

import re

import anyio
import pytest
from fuzz import requestor
from fuzz.strategies import mutated
from fuzz.targets import seed_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers.faulty_proxy import split_pdus

import aiodicom
from aiodicom.errors import DimseError


def recorded(operation: int | None = None) -> list[bytes]:
    """What the PACSs answered aiodicom, prefixed with the byte choosing our operation."""
    found = []
    for path in seed_files("stream"):
        match = re.fullmatch(r"aiodicom-\w+-(\d)-down", path.stem)
        if match:
            chosen = requestor.OPERATION_OF_CONNECTION[int(match.group(1))]
            if operation is None or chosen == operation:
                found.append(bytes([chosen]) + path.read_bytes())
    return found


def test_recorded_answers_give_results() -> None:
    """Unchanged, the recorded echo and find answers make successful operations (so that the
    mutations start from a working exchange)."""
    for data in recorded(0) + recorded(1)[:1]:
        requestor.requestor_target(data)
        assert requestor.last_outcome == "ok", requestor.last_outcome


def test_a_response_of_another_command_is_a_protocol_error() -> None:
    """Found by the requestor target: a C-MOVE-RSP (status 0) answering our C-FIND-RQ ended the
    find as a success with no match; it is now a DimseError naming both commands."""
    move_answer = next(
        p.read_bytes() for p in seed_files("stream") if p.stem == "aiodicom-dcmqrscp-2-down")

    async def find() -> None:
        async with requestor.hostile_pacs(move_answer) as port, aiodicom.Client("FUZZSCU") as c:
            # Raised here, inside the test PACS's task group, which would wrap it in a group.
            with pytest.raises(DimseError, match=r"C-FIND-RQ .* with a C-MOVE-RSP"):
                async for _ in c.peer("127.0.0.1", port, "PACS").find(
                    aiodicom.Query.study(PatientID="*")
                ):
                    pass

    anyio.run(find)


def test_leaving_the_client_after_the_peer_closed_an_idle_association() -> None:
    """Found by the requestor target: a PACS that closes its side right after answering
    (as one timing out idle associations does) made ``async with Client`` raise an
    ExceptionGroup (ConnectionClosed from the A-RELEASE-RQ of the idle association) when the
    block was left; closing the pool now aborts what cannot be released."""
    pdus = split_pdus(next(
        p.read_bytes() for p in seed_files("stream") if p.stem == "aiodicom-dcmqrscp-0-down"))
    accept_and_echo_response = pdus[0] + pdus[1]  # and then EOF, no A-RELEASE-RP

    async def echo_then_leave() -> None:
        async with requestor.hostile_pacs(accept_and_echo_response) as port:
            for _ in range(3):
                async with aiodicom.Client("FUZZSCU") as client:
                    await client.peer("127.0.0.1", port, "PACS").echo()

    anyio.run(echo_then_leave)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(0, 2), mutated([d[1:] for d in recorded()], max_mutations=3))
def test_fuzz_requestor_against_hostile_pacs(operation: int, answer: bytes) -> None:
    requestor.requestor_target(bytes([operation]) + answer)
