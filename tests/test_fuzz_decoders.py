"""Fuzzing in CI (short budget): the PDU decoder, the state machine, DIMSE command decoding and
reassembly, data set peeking and decoding, on mutated seeds captured from DCMTK and Orthanc
exchanges (tests/fuzz_seeds/). The properties are those of tests/fuzz/targets.py: only
aiodicom's typed errors come out, the state machine answers with well-formed PDUs and does not
care how its input is sliced, and memory stays within a bound proportional to the input.
The long run of the same targets: tests/fuzz/run.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fuzz import targets
from fuzz.strategies import bounded_memory, inputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# pydicom warns about the odd things mutated data sets hold (a guessed VR, an unknown charset).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BUDGET = settings(
    max_examples=250, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Generous: 64 bytes per input byte (decoded objects, copies, the events) plus a fixed 2 MiB
# (pydicom's dictionaries warm up on first use). An announced length must never show here.
PER_BYTE = 64
FIXED = 2 << 20


def run_bounded(target: Callable[[bytes], None], data: bytes) -> None:
    with bounded_memory(lambda: FIXED + PER_BYTE * len(data)):
        target(data)


@pytest.mark.parametrize("kind", ["pdu", "stream", "command", "dataset"])
def test_seed_corpus_is_there(kind: str) -> None:
    assert len(targets.seeds(kind)) >= 10, "run tests/fuzz/capture_seeds.py"


@pytest.mark.parametrize("name", list(targets.TARGETS))
def test_every_seed_passes_its_target(name: str) -> None:
    for data in targets.seeds(targets.SEED_KINDS[name]):
        if name == "statemachine":
            for control in (0x00, 0x01, 0x3A, 0x3B):
                run_bounded(targets.statemachine_target, bytes([control]) + data)
        else:
            run_bounded(targets.TARGETS[name], data)


@BUDGET
@given(inputs(targets.seeds("pdu")))
def test_fuzz_pdu_decoder(data: bytes) -> None:
    run_bounded(targets.pdu_target, data)


@settings(BUDGET, max_examples=150)
@given(st.integers(0, 255), inputs(targets.seeds("stream")))
def test_fuzz_state_machine(control: int, data: bytes) -> None:
    run_bounded(targets.statemachine_target, bytes([control]) + data)


@BUDGET
@given(st.binary(max_size=400))
def test_fuzz_state_machine_event_sequences(data: bytes) -> None:
    run_bounded(targets.event_sequence_target, data)


@BUDGET
@given(inputs(targets.seeds("command")))
def test_fuzz_command_decoder(data: bytes) -> None:
    run_bounded(targets.command_target, data)


@st.composite
def pdv_sequences(draw: st.DrawFn) -> bytes:
    """PDVs for the reassembly target ([context, flags, length, value]*), values cut from the
    captured command sets and data sets."""
    pool = targets.seeds("command") + targets.seeds("dataset")[:4]
    out = bytearray()
    for _ in range(draw(st.integers(1, 8))):
        source = draw(st.sampled_from(pool))
        start = draw(st.integers(0, max(0, len(source) - 1)))
        value = source[start : start + draw(st.integers(0, 255))]
        context = draw(st.sampled_from((1, 1, 1, 3, 0, 255)))
        out += bytes([context, draw(st.integers(0, 3)), len(value)]) + value
    return bytes(out)


@BUDGET
@given(st.one_of(pdv_sequences(), inputs(targets.seeds("command"))))
def test_fuzz_message_reassembly(data: bytes) -> None:
    run_bounded(targets.reassembly_target, data)


@settings(BUDGET, max_examples=150)
@given(inputs(targets.seeds("dataset")))
def test_fuzz_dataset_peeking_and_decoding(data: bytes) -> None:
    run_bounded(targets.dataset_target, data)
