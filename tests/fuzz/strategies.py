"""Hypothesis strategies for the fuzz tests: seeds from tests/fuzz_seeds/, mutated."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hypothesis import strategies as st

MUTATIONS = ("flip", "set", "truncate", "insert", "delete", "duplicate", "length")


@st.composite
def mutated(draw: st.DrawFn, pool: list[bytes], max_mutations: int = 4) -> bytes:
    """A seed from ``pool`` with a few mutations: bit flips, byte values, truncation,
    insertion, deletion, a duplicated slice, or a 16/32-bit big endian length rewritten."""
    data = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(0, max_mutations))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        kind = draw(st.sampled_from(MUTATIONS))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 32))]
        elif kind == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 256))]
        else:
            width = draw(st.sampled_from((2, 4)))
            value = draw(st.sampled_from((0, 1, 2, 6, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)))
            data[at : at + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "big")
    return bytes(data)


def inputs(pool: list[bytes]) -> st.SearchStrategy[bytes]:
    """Mutated seeds, and now and then bytes from nowhere."""
    return st.one_of(mutated(pool), st.binary(max_size=512))


@contextmanager
def bounded_memory(limit: Callable[[], int]) -> Iterator[None]:
    """Fail when the block's peak of traced allocations passes ``limit()`` bytes."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = limit()
    assert peak <= bound, f"peak allocation {peak} bytes, more than the {bound} allowed"
