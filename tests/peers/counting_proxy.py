"""A TCP proxy in front of a real peer that counts the associations going through it.

DCMTK's dcmqrscp and Orthanc do not tell how many associations they serve at once; a client's
per-PACS limit must be checked where the PACS stands, so the tests and the benchmarks put this
proxy between the client and the peer: each connection (one association each in DICOM) is
counted from its connect until the requestor closes its side (after the A-RELEASE-RP, or on an
abort), and ``peak`` is the most open at once. Bytes are forwarded as they
come, in both directions.

On an event loop (async tests): ``async with CountingProxy(host, port) as proxy: ...
proxy.port``. From synchronous code (the benchmarks): ``with CountingProxy(host, port).running()
as proxy:`` runs it on an event loop in a thread of its own (test infrastructure, not library).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from types import TracebackType

from peers import LOOPBACK

__all__ = ["CountingProxy"]

_CHUNK = 256 * 1024


class CountingProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = LOOPBACK) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.open = 0
        self.peak = 0
        self.total = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    def reset_peak(self) -> None:
        self.peak = self.open

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._serve, self.listen_host, 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections))
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.open += 1
        self.total += 1
        self.peak = max(self.peak, self.open)
        upstream_writer: asyncio.StreamWriter | None = None
        counted = True

        def association_over() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.open -= 1

        async def requests(upstream: asyncio.StreamWriter) -> None:
            try:
                await _pipe(reader, upstream)
            finally:
                # The requestor closes once the association is released (or aborts it):
                # what the peer does after that (a forked process exiting) is not counted.
                association_over()

        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            for w in (writer, upstream_writer):
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(requests(upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            association_over()
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()
            self._connections.discard(task)

    @contextlib.contextmanager
    def running(self) -> Iterator[CountingProxy]:
        """Serve on an event loop in a thread of its own until the block ends."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        stop: asyncio.Event | None = None
        failure: list[BaseException] = []

        async def main() -> None:
            nonlocal stop
            stop = asyncio.Event()
            try:
                async with self:
                    started.set()
                    await stop.wait()
            except BaseException as exc:  # told to the caller below
                failure.append(exc)
                started.set()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        started.wait(10)
        if failure:
            raise RuntimeError(f"counting proxy failed to start: {failure[0]!r}")
        try:
            yield self
        finally:
            assert stop is not None
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    finally:
        # The other direction may still carry the A-RELEASE-RP: close only our half.
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
