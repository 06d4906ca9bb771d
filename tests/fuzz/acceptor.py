"""The acceptor end to end as a fuzz target: bytes sent to ``Client(listen_port=0)`` over a real
loopback socket.

:class:`AcceptorUnderTest` runs the client (with a MemorySink for unexpected deliveries, so
that C-STOREs are received and stored) on an event loop of its own, in a thread, for as long
as the fuzzer runs; :meth:`AcceptorUnderTest.send` connects, sends one input, half-closes and
reads until the acceptor closes. Properties: the acceptor closes every connection within
:data:`CLOSE_WITHIN` seconds of our half-close (ARTIM and the network timeout bound it),
nothing but typed errors reach its log (``log.exception`` of a non-DicomError is a finding),
and the client itself keeps running.
"""

from __future__ import annotations

import logging
import socket
import threading
from types import TracebackType

import anyio
import anyio.from_thread

import aiodicom
from aiodicom.errors import DicomError

from .targets import Finding

CLOSE_WITHIN = 15.0
TIMEOUTS = aiodicom.Timeouts(connect=5, acse=5, dimse=5, network=5, artim=5)
MAX_REPLY = 1 << 20
QUIET = 0.005
WATCHED_LOGGERS = ("aiodicom", "asyncio")


class _Untyped(logging.Handler):
    """Keeps each log record carrying an exception that is not a DicomError."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if not isinstance(exc, DicomError):
                self.found.append(f"{record.getMessage()}: {type(exc).__name__}: {exc}")


class AcceptorUnderTest:
    def __init__(self) -> None:
        self.port = 0
        self.sink = aiodicom.MemorySink()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._stop: anyio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._handler = _Untyped()
        self.cases = 0

    def __enter__(self) -> AcceptorUnderTest:
        # asyncio's logger too: "Task exception was never retrieved" is an escaped error.
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        self._thread = threading.Thread(target=self._run, name="acceptor-under-test", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or not self.port:
            raise RuntimeError(f"the acceptor did not start: {self._failure!r}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._portal is not None and self._stop is not None:
            self._portal.call(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)

    def _run(self) -> None:
        try:
            anyio.run(self._main)
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        async with anyio.from_thread.BlockingPortal() as portal, aiodicom.Client(
            "FUZZSCP", listen_port=0, unexpected_deliveries=self.sink, timeouts=TIMEOUTS,
        ) as client:
            assert client.listen_port is not None
            self._portal = portal
            self._stop = anyio.Event()
            self.port = client.listen_port
            self._ready.set()
            await self._stop.wait()

    def send(self, data: bytes) -> bytes:
        """Send ``data`` as one connection; return what the acceptor answered."""
        self.cases += 1
        reply = bytearray()
        with socket.create_connection(("127.0.0.1", self.port), timeout=CLOSE_WITHIN) as sock:
            closed = False
            try:
                # The first PDU (the A-ASSOCIATE-RQ of a seed) alone, and its answer read,
                # as a requestor would: anything sent before the A-ASSOCIATE-AC is an
                # unexpected PDU and ends the association at once.
                first = 6 + int.from_bytes(data[2:6], "big") if len(data) >= 6 else len(data)
                for part in (data[:first], data[first:]):
                    if part:
                        sock.sendall(part)
                    # A moment to answer before our half-close: a well-formed exchange runs
                    # to its end (the seeds end with A-RELEASE-RQ), a broken one is then cut.
                    sock.settimeout(QUIET)
                    closed = _read_for_a_while(sock, reply)
                    if closed:
                        break
            except OSError:
                closed = True  # the acceptor closed early (an abort); what it sent was read
            if not closed:
                sock.settimeout(CLOSE_WITHIN)
                try:
                    sock.shutdown(socket.SHUT_WR)
                    _read(sock, reply)
                except TimeoutError as exc:
                    raise Finding(
                        f"the acceptor kept the connection open {CLOSE_WITHIN} s after our "
                        f"half-close ({len(data)} bytes sent, {len(reply)} answered)"
                    ) from exc
                except OSError:
                    pass  # reset by the acceptor
        self.check()
        # The memory sink must not grow for ever across a long run.
        if len(self.sink.instances) > 1000:
            self.sink.instances.clear()
        return bytes(reply)

    def check(self) -> None:
        if self._failure is not None or (self._thread is not None and not self._thread.is_alive()):
            raise Finding(f"the client stopped: {self._failure!r}")
        if self._handler.found:
            found, self._handler.found = self._handler.found, []
            raise Finding("untyped exception in the acceptor: " + "; ".join(found))


def _read(sock: socket.socket, reply: bytearray) -> bool:
    """Read into ``reply`` until the peer closes (True) or MAX_REPLY bytes came (False)."""
    while len(reply) < MAX_REPLY:
        chunk = sock.recv(65536)
        if not chunk:
            return True
        reply += chunk
    return False


def _read_for_a_while(sock: socket.socket, reply: bytearray) -> bool:
    """Read until the peer closes (True) or is quiet for the socket's timeout (False)."""
    try:
        return _read(sock, reply)
    except TimeoutError:
        return False
