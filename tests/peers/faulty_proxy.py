"""A TCP proxy that records what passes and injects faults at chosen byte offsets.

Put it between aiodicom and a real peer (DCMTK ``dcmqrscp``, Orthanc), or between a PACS and
our acceptor (register the proxy's port as the move destination), then:

* record a clean run: ``proxy.connections[i].up`` / ``.down`` hold every byte each way
  ("up" is from whoever connected to the proxy, "down" is back to it), and
  :func:`pdu_boundaries` finds the PDUs in them;
* replay the same operation with a :class:`Fault`: ``cut`` (forward the bytes before
  ``offset``, then close both sides), ``corrupt`` (XOR the byte at ``offset``), ``delay``
  (hold the byte at ``offset`` and everything after it for ``seconds``);
* ``split_writes=True`` forwards every byte in a write of its own (TCP_NODELAY), so the peer
  sees PDUs torn at every possible point.

Offsets count the bytes of one direction of one connection (``connection`` is the index of
the accepted connection, 0 for the first). Everything runs on the caller's event loop (anyio);
the proxy is test infrastructure and may do what the library must not.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.abc
import anyio.lowlevel

from . import LOOPBACK

__all__ = ["Connection", "Fault", "FaultyProxy", "faulty_proxy", "pdu_boundaries", "split_pdus"]

Direction = Literal["up", "down"]
FaultKind = Literal["cut", "corrupt", "delay"]
CHUNK = 65536


@dataclass(frozen=True)
class Fault:
    """One fault at byte ``offset`` of ``direction`` on connection number ``connection``."""

    kind: FaultKind
    direction: Direction
    offset: int
    connection: int = 0
    seconds: float = 0.0  # for "delay"
    xor: int = 0xFF  # for "corrupt"

    def __str__(self) -> str:
        extra = f" {self.seconds}s" if self.kind == "delay" else ""
        return f"{self.kind}{extra} {self.direction}@{self.offset} (connection {self.connection})"


@dataclass
class Connection:
    """What one proxied connection carried, as forwarded (after any corruption)."""

    index: int
    up: bytearray = field(default_factory=bytearray)
    down: bytearray = field(default_factory=bytearray)
    fired: list[Fault] = field(default_factory=list)
    closed: bool = False

    def stream(self, direction: Direction) -> bytearray:
        return self.up if direction == "up" else self.down


class FaultyProxy:
    """Listening on ``LOOPBACK:port`` and forwarding each connection to ``target``."""

    def __init__(
        self, target_host: str, target_port: int, *, faults: Iterable[Fault] = (),
        split_writes: bool = False,
    ) -> None:
        self.target = (target_host, target_port)
        self.faults = list(faults)
        self.split_writes = split_writes
        self.connections: list[Connection] = []
        self.port = 0
        self._listener: anyio.abc.SocketListener | None = None
        self._tasks: anyio.abc.TaskGroup | None = None

    def reset(self, faults: Iterable[Fault] = ()) -> None:
        """Forget the connections recorded so far; inject ``faults`` from the next one on."""
        self.connections = []
        self.faults = list(faults)

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait (polling: test infrastructure) until every proxied connection has closed."""
        with anyio.move_on_after(timeout):
            while self.open_connections:
                await anyio.sleep(0.01)

    @property
    def fired(self) -> list[Fault]:
        return [fault for connection in self.connections for fault in connection.fired]

    @property
    def open_connections(self) -> int:
        return sum(not connection.closed for connection in self.connections)

    async def _serve(self, client: anyio.abc.SocketStream) -> None:
        connection = Connection(len(self.connections))
        self.connections.append(connection)
        faults = [f for f in self.faults if f.connection == connection.index]
        try:
            async with client:
                try:
                    server = await anyio.connect_tcp(*self.target)
                except OSError:
                    return
                async with server, anyio.create_task_group() as pumps:
                    for stream in (client, server):
                        _nodelay(stream)
                    cut = pumps.cancel_scope
                    pumps.start_soon(self._pump, client, server, connection, "up", faults, cut)
                    pumps.start_soon(self._pump, server, client, connection, "down", faults, cut)
        finally:
            connection.closed = True

    async def _pump(
        self, source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream,
        connection: Connection, direction: Direction, faults: list[Fault],
        both: anyio.CancelScope,
    ) -> None:
        mine = sorted((f for f in faults if f.direction == direction), key=lambda f: f.offset)
        record = connection.stream(direction)
        try:
            while True:
                try:
                    data = bytearray(await source.receive(CHUNK))
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    break
                start = len(record)
                for fault in list(mine):
                    if not start <= fault.offset < start + len(data):
                        continue
                    position = fault.offset - start
                    if fault.kind == "corrupt":
                        data[position] ^= fault.xor
                        connection.fired.append(fault)
                        mine.remove(fault)
                    elif fault.kind == "delay":
                        await self._write(sink, data[:position], record)
                        del data[:position]
                        start = len(record)
                        connection.fired.append(fault)
                        mine.remove(fault)
                        await anyio.sleep(fault.seconds)
                    else:  # cut
                        await self._write(sink, data[:position], record)
                        connection.fired.append(fault)
                        both.cancel()
                        return
                await self._write(sink, data, record)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            both.cancel()
            return
        # A half-close is passed on: the other direction may still carry an answer.
        try:
            await sink.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            both.cancel()

    async def _write(self, sink: anyio.abc.SocketStream, data: bytes | bytearray,
                     record: bytearray) -> None:
        if not data:
            return
        if self.split_writes:
            for i in range(len(data)):
                await sink.send(bytes(data[i : i + 1]))
                record.append(data[i])
        else:
            await sink.send(bytes(data))
            record += data


def _nodelay(stream: anyio.abc.SocketStream) -> None:
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@asynccontextmanager
async def faulty_proxy(
    target_host: str, target_port: int, *, faults: Iterable[Fault] = (),
    split_writes: bool = False,
) -> AsyncIterator[FaultyProxy]:
    """Run a :class:`FaultyProxy` for the block; every connection it served is closed after."""
    proxy = FaultyProxy(target_host, target_port, faults=faults, split_writes=split_writes)
    listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=0)
    proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, proxy._serve, tasks)
        await anyio.lowlevel.checkpoint()  # serving from here on, for callers counting tasks
        try:
            yield proxy
        finally:
            tasks.cancel_scope.cancel()


def pdu_boundaries(stream: bytes | bytearray) -> list[int]:
    """Offsets where each PDU of ``stream`` starts, plus the end of the last whole PDU."""
    offsets = [0]
    position = 0
    while position + 6 <= len(stream):
        length = int.from_bytes(stream[position + 2 : position + 6], "big")
        if position + 6 + length > len(stream):
            break
        position += 6 + length
        offsets.append(position)
    return offsets


def split_pdus(stream: bytes | bytearray) -> list[bytes]:
    """The whole PDUs of ``stream``, in order."""
    edges = pdu_boundaries(stream)
    return [bytes(stream[a:b]) for a, b in itertools.pairwise(edges)]
