"""Thin TCP transport on anyio byte streams: connect, listen, and socket options.

Framing and protocol live in the sans-I/O state machine; this module only opens, tunes and closes
sockets, so that the rest of the stack can be tested without them.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from aiodicom.errors import AssociationError, DicomTimeoutError

# One receive call may hand back this much; large reads keep the per-call overhead of Python low
# when image data streams in (a 128 KiB PDU then needs one or two calls, not dozens).
RECEIVE_SIZE = 1 << 18


def _tune(stream: anyio.abc.ByteStream) -> None:
    raw = stream.extra(SocketAttribute.raw_socket, None)
    if raw is None:
        return
    # Nagle plus delayed ACK stalls every small C-STORE/C-FIND response by ~40 ms (see peers.md).
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Big socket buffers let a fast peer keep sending while we process the previous PDU.
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        # Some kernels refuse the size; their default still works.
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, option, 1 << 21)


async def connect(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = None,
) -> anyio.abc.ByteStream:
    """Open a TCP (optionally TLS) connection to a peer, with TCP_NODELAY set."""
    try:
        with anyio.fail_after(timeout):
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
            _tune(stream)
            if ssl_context is not None:
                # DICOM TLS peers often close without close_notify; don't treat that as an error.
                stream = await TLSStream.wrap(
                    stream, ssl_context=ssl_context, hostname=host, standard_compatible=False
                )
    except TimeoutError as exc:
        raise DicomTimeoutError(f"connecting to {host}:{port} timed out after {timeout} s") from exc
    except OSError as exc:
        raise AssociationError(f"cannot connect to {host}:{port}: {exc}") from exc
    return stream


ConnectionHandler = Callable[[anyio.abc.ByteStream], Awaitable[None]]


class Listener:
    """A bound TCP listener; :meth:`serve` runs until cancelled.

    ``handshake_timeout`` bounds the TLS handshake of each incoming connection: the ARTIM timer
    of the association only starts once it is done, so without it a peer that connects and
    stays silent would hold its connection for ever.
    """

    def __init__(
        self, listener: anyio.abc.Listener[anyio.abc.SocketStream], port: int,
        ssl_context: ssl.SSLContext | None, handshake_timeout: float | None = 30.0,
    ) -> None:
        self._listener = listener
        self.port = port
        self._ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout

    @classmethod
    async def bind(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float | None = 30.0,
    ) -> Listener:
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as exc:
            raise AssociationError(f"cannot listen on {host}:{port}: {exc}") from exc
        bound_port = int(listener.extra(SocketAttribute.local_port))
        return cls(listener, bound_port, ssl_context, handshake_timeout)

    async def serve(self, handler: ConnectionHandler) -> None:
        async def tuned(stream: anyio.abc.SocketStream) -> None:
            _tune(stream)
            byte_stream: anyio.abc.ByteStream = stream
            if self._ssl_context is not None:
                try:
                    with anyio.fail_after(self.handshake_timeout):
                        byte_stream = await TLSStream.wrap(
                            stream, server_side=True, ssl_context=self._ssl_context,
                            standard_compatible=False,
                        )
                except (OSError, ssl.SSLError, anyio.BrokenResourceError):
                    # TimeoutError is an OSError: a silent peer lands here too.
                    await stream.aclose()
                    return
            await handler(byte_stream)

        await self._listener.serve(tuned)

    async def aclose(self) -> None:
        await self._listener.aclose()


__all__ = ["RECEIVE_SIZE", "ConnectionHandler", "Listener", "connect"]
