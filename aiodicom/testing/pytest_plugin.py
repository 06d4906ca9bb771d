"""pytest fixtures for code that uses aiodicom (registered as the ``aiodicom`` pytest plugin).

* ``aiodicom_synthetic_files``: the default synthetic studies written once per session as
  Part 10 files (a list of paths; do not modify them);
* ``aiodicom_index``: a fresh in-memory :class:`~aiodicom.server.InstanceIndex` holding the
  same studies, for each test;
* ``aiodicom_qrscp``: that index served by an embedded Q/R SCP (:class:`~aiodicom.server.QRServer`)
  on a free loopback port, on the test's event loop, for each test: a :class:`QRScp` with
  ``host``, ``port``, ``ae_title``, ``index`` and ``add_move_destination(ae, host, port)``.
  An async fixture: the test must be async (pytest-asyncio, or anyio's plugin), and must not
  block its loop while the server is to answer (run command-line tools with
  ``anyio.run_process`` or in a worker thread).

Without the entry point, enable them with ``-p aiodicom.testing.pytest_plugin``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest

from aiodicom.server import InstanceIndex, QRServer
from aiodicom.server.commitment import CommitmentOptions
from aiodicom.testing.synthetic import synthetic_instances, write_synthetic

try:  # pytest-asyncio's decorator works in its strict mode too; anyio's plugin takes plain ones
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - depends on the user's plugins
    _async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = ["QRScp", "aiodicom_index", "aiodicom_qrscp", "aiodicom_synthetic_files"]

# Small images: the fixtures are about the hierarchy and the geometry, not pixel volume.
_ROWS = _COLUMNS = 32
_SLICES = 8


@pytest.fixture(scope="session")
def aiodicom_synthetic_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The default synthetic studies as Part 10 files (32x32 pixels, 8 slices a series)."""
    return write_synthetic(
        tmp_path_factory.mktemp("aiodicom-synthetic"), rows=_ROWS, columns=_COLUMNS,
        slices=_SLICES,
    )


def _synthetic_index() -> InstanceIndex:
    index = InstanceIndex()
    for instance in synthetic_instances(rows=_ROWS, columns=_COLUMNS, slices=_SLICES):
        index.store(instance)
    return index


@pytest.fixture
def aiodicom_index() -> Iterator[InstanceIndex]:
    """An in-memory index holding the default synthetic studies, new for each test."""
    with _synthetic_index() as index:
        yield index


@attrs.frozen
class QRScp:
    """A running embedded Q/R SCP, as the ``aiodicom_qrscp`` fixture gives it."""

    server: QRServer

    @property
    def host(self) -> str:
        return self.server.listen_host

    @property
    def port(self) -> int:
        return self.server.listen_port

    @property
    def ae_title(self) -> str:
        return self.server.ae_title

    @property
    def index(self) -> InstanceIndex:
        return self.server.index

    @property
    def peer(self) -> tuple[str, int, str]:
        """``(host, port, ae_title)``, as ``Client(peer=...)`` takes it."""
        return self.server.address

    def add_move_destination(self, ae_title: str, host: str, port: int) -> None:
        """Let C-MOVEs send to ``ae_title`` at ``host:port`` (unknown ones get 0xA801); also
        where storage commitment reports to ``ae_title`` go on a new association."""
        self.server.add_move_destination(ae_title, host, port)

    @property
    def commitment(self) -> CommitmentOptions:
        """How it answers storage commitment requests (change ``report_on``,
        ``failure_reason``)."""
        return self.server.commitment


@_async_fixture
async def aiodicom_qrscp() -> AsyncIterator[QRScp]:
    """An embedded Q/R SCP (AE "AIOQR") serving the default synthetic studies from a fresh
    in-memory index on a free loopback port, on the test's event loop; stopped after it."""
    with _synthetic_index() as index:
        # The server runs in a task of its own: pytest-asyncio sets a fixture up and tears it
        # down in different tasks, and a task group (the server's) must be left in the task
        # that entered it.
        loop = asyncio.get_running_loop()
        started: asyncio.Future[QRServer] = loop.create_future()
        stop = asyncio.Event()

        async def serve() -> None:
            async with QRServer("AIOQR", index, listen_host="127.0.0.1", listen_port=0) as server:
                started.set_result(server)
                await stop.wait()

        task = loop.create_task(serve())
        try:
            await asyncio.wait((started, task), return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                task.result()  # it failed before listening: its error
            yield QRScp(started.result())
        finally:
            stop.set()
            await task
