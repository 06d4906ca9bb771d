"""aiodicom runs on asyncio only; any other backend gets a clear, typed error at once."""

from __future__ import annotations

import anyio
import pytest

import aiodicom

pytest.importorskip("trio")


async def _echo_without_acceptor() -> None:
    async with aiodicom.Client("AIOSCU") as client:
        await client.peer("127.0.0.1", 9, "NOBODY").echo()


async def _start_acceptor() -> None:
    async with aiodicom.Client("AIOSCU", listen_port=0):
        pass


@pytest.mark.parametrize("program", [_echo_without_acceptor, _start_acceptor])
def test_trio_gets_unsupported_backend(program: object) -> None:
    with pytest.raises(aiodicom.UnsupportedBackend, match="asyncio only"):
        anyio.run(program, backend="trio")  # type: ignore[arg-type]


def test_unsupported_backend_is_a_dicom_error() -> None:
    assert issubclass(aiodicom.UnsupportedBackend, aiodicom.DicomError)
