"""A TCP proxy for fault tests, on the test's event loop (anyio): put it between a client and a
peer, then make it refuse associations or cut connections.

    async with TcpProxy(peer_host, peer_port) as proxy:
        proxy.reject_next(3)                  # answer 3 associations with A-ASSOCIATE-RJ
        proxy.cut_after(200_000)              # cut the next connection after 200 kB went down
        ... connect to (proxy.host, proxy.port) ...
        proxy.cut_all()                       # or cut what is open now

Counts what it saw: ``connections``, ``peak_connections`` (open at once), ``rejected``,
``cuts``, ``bytes_down`` (peer -> client).
It knows only enough DICOM to read an A-ASSOCIATE-RQ and answer a rejection; everything else is
forwarded as it comes.
"""

from __future__ import annotations

import contextlib
import struct
from types import TracebackType

import anyio
import anyio.abc

from . import LOOPBACK

__all__ = ["TcpProxy", "rejection_pdu"]

_CHUNK = 65536


def rejection_pdu(result: int = 2, source: int = 3, reason: int = 1) -> bytes:
    """A-ASSOCIATE-RJ; default: rejected-transient, by the presentation provider, temporary
    congestion (PS3.8 9.3.4)."""
    return struct.pack(">BBIBBBB", 0x03, 0, 4, 0, result, source, reason)


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = LOOPBACK) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.connections = 0
        self.peak_connections = 0
        """The most connections open at once: what the peer saw."""
        self.rejected = 0
        self.cuts = 0
        self.bytes_down = 0
        self._reject = 0
        self._reject_pdu = rejection_pdu()
        self._cut_after: int | None = None
        self._cuts_left = 0
        self._live: set[anyio.CancelScope] = set()
        self._tasks: anyio.abc.TaskGroup | None = None
        self._listener: anyio.abc.SocketListener | None = None

    # --- faults -------------------------------------------------------------------------------

    def reject_next(self, count: int, *, result: int = 2, source: int = 3, reason: int = 1
                    ) -> None:
        """Answer the next ``count`` associations with A-ASSOCIATE-RJ (transient by default)."""
        self._reject = count
        self._reject_pdu = rejection_pdu(result, source, reason)

    def cut_after(self, byte_count: int | None, *, times: int = 1) -> None:
        """Cut a connection once ``byte_count`` bytes went from the peer to the client on it;
        the first ``times`` connections to get there are cut, later ones are left alone."""
        self._cut_after = byte_count
        self._cuts_left = times

    def cut_all(self) -> int:
        """Cut every connection open now; returns how many."""
        live = list(self._live)
        for scope in live:
            scope.cancel()
        self.cuts += len(live)
        return len(live)

    @property
    def open_connections(self) -> int:
        return len(self._live)

    # --- life ---------------------------------------------------------------------------------

    async def __aenter__(self) -> TcpProxy:
        self._listener = await anyio.create_tcp_listener(local_host=self.host, local_port=0)
        self.port = int(self._listener.extra(anyio.abc.SocketAttribute.local_port))
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._listener.serve, self._serve)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tasks is not None and self._listener is not None
        self._tasks.cancel_scope.cancel()
        result = await self._tasks.__aexit__(exc_type, exc, tb)
        await self._listener.aclose()
        return result

    async def _serve(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        # The client going away leaves nothing to forward.
        with contextlib.suppress(OSError, anyio.EndOfStream, anyio.BrokenResourceError,
                                 anyio.ClosedResourceError):
            await self._proxy(client)

    async def _proxy(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            if self._reject > 0:
                self._reject -= 1
                self.rejected += 1
                await _read_pdu(client)
                await client.send(self._reject_pdu)
                # Let the client read the rejection before the connection goes.
                with anyio.move_on_after(2):
                    await client.receive()
                return
            try:
                server = await anyio.connect_tcp(self.target_host, self.target_port)
            except OSError:
                return
            with anyio.CancelScope() as scope:
                self._live.add(scope)
                self.peak_connections = max(self.peak_connections, len(self._live))
                try:
                    async with server, anyio.create_task_group() as pipes:
                        pipes.start_soon(self._pipe, client, server, False, scope)
                        pipes.start_soon(self._pipe, server, client, True, scope)
                finally:
                    self._live.discard(scope)

    async def _pipe(
        self, source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, down: bool,
        scope: anyio.CancelScope,
    ) -> None:
        sent = 0
        try:
            while True:
                data = await source.receive(_CHUNK)
                if down:
                    limit = self._cut_after
                    if limit is not None and self._cuts_left > 0 and sent + len(data) >= limit:
                        self._cuts_left -= 1
                        # Forward part of it, so that the cut falls inside a PDU.
                        part = max(0, limit - sent)
                        if part:
                            await sink.send(data[:part])
                        self.bytes_down += part
                        self.cuts += 1
                        scope.cancel()
                        return
                    self.bytes_down += len(data)
                sent += len(data)
                await sink.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            scope.cancel()  # one side closed: close the other


async def _read_pdu(stream: anyio.abc.SocketStream) -> bytes:
    """One whole PDU (the A-ASSOCIATE-RQ), so that closing later does not reset the
    connection with unread bytes."""
    data = b""
    while len(data) < 6:
        data += await stream.receive()
    (length,) = struct.unpack(">I", data[2:6])
    while len(data) < 6 + length:
        data += await stream.receive()
    return data
