"""The embedded Query/Retrieve SCP: an :class:`InstanceIndex` served over the network.

``async with QRServer("AIOQR", index) as server:`` listens on the current event loop
(``server.listen_port``) until the block ends; ``await server.serve_forever()`` serves until
cancelled. Every association goes through the library's own acceptor
(:func:`aiodicom.acceptor.serve_connection`): C-ECHO and C-STORE are answered as the client's
acceptor answers them (C-STOREs through :mod:`aiodicom.services.storage_scp` into the index),
C-FIND, C-MOVE and C-GET by :mod:`aiodicom.server.operations`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from types import TracebackType

import anyio
import anyio.abc

from aiodicom.acceptor import (
    AcceptorPolicy,
    IncomingOperation,
    IncomingStore,
    ServedOperations,
    leave_serving,
    serve_connection,
)
from aiodicom.access import AccessPolicy
from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Timeouts
from aiodicom.dimse import N_ACTION_RQ, DimseMessage
from aiodicom.errors import DicomError
from aiodicom.instance import Instance
from aiodicom.limits import Limits
from aiodicom.server.commitment import CommitmentOptions, ReportTasks, serve_commitment
from aiodicom.server.index import InstanceIndex
from aiodicom.server.operations import QR_SOP_CLASSES, QRContext, handlers
from aiodicom.services.storage_scp import Recipient, receive_store, store_into
from aiodicom.transport import Connection, Listener
from aiodicom.uids import (
    EXPLICIT_VR_LE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
)

log = logging.getLogger("aiodicom.qrscp")

__all__ = ["IndexSink", "QRServer"]


class IndexSink:
    """A sink storing each instance into an :class:`InstanceIndex` (in directory mode, as a
    Part 10 file written atomically; its data set bytes untouched)."""

    def __init__(self, index: InstanceIndex) -> None:
        self.index = index

    async def __call__(self, instance: Instance) -> None:
        # One instance: bounded work (decoding its attributes up to the pixel data).
        self.index.store(instance)


class _IndexStorage:
    """The storage SCP's routing: every C-STORE goes to the index, received in memory first
    (the index writes its own file atomically once the instance is whole)."""

    def __init__(self, index: InstanceIndex) -> None:
        self.sink = IndexSink(index)

    def recipient_by_command(
        self, command: Mapping[str, object], source_ae_title: str
    ) -> Recipient | None:
        return None

    async def deliver(
        self, command: Mapping[str, object], source_ae_title: str, instance: Instance
    ) -> int:
        return await store_into(self.sink, instance)


class QRServer:
    """An embedded Q/R SCP (Patient Root, Study Root and Patient/Study Only; C-FIND, C-MOVE,
    C-GET), Storage SCP into the index and Verification SCP.

    ``move_destinations``: AE title -> ``(host, port)`` where C-MOVEs may send; others get
    0xA801. Add more at any time with :meth:`add_move_destination`.
    ``limits``: what peers may cost us (:class:`~aiodicom.Limits`; safe defaults).
    ``listen_host`` defaults to loopback only; ``listen_port=0`` picks a free port.
    ``server_ssl_context``: serve over TLS, as the client's acceptor does (a context made for
    ``ssl.Purpose.CLIENT_AUTH``; with ``verify_mode = ssl.CERT_REQUIRED``, mutual TLS). The
    associations a C-MOVE opens to its destinations are not TLS.
    ``access``: who may associate (calling AE titles, source networks, User Identity): an
    :class:`~aiodicom.AccessPolicy`; by default anyone.

    It is also a Storage Commitment SCP (Push Model): ``commitment``
    (:class:`~aiodicom.server.commitment.CommitmentOptions`, changeable as
    :attr:`commitment`) says whether reports go on the request's association or on a new one
    to the requestor (at its move destination address), and may fail chosen instances.

    :attr:`open_associations` and :attr:`peak_associations` count the connections being
    served (one association each), as a PACS would see its callers, and
    :attr:`served_associations` all of them so far: what a test or a benchmark reads to check
    a client's per-peer limits; :meth:`reset_peak` starts a new observation of the peak.
    """

    def __init__(
        self,
        ae_title: str = "AIOQR",
        index: InstanceIndex | None = None,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        move_destinations: Mapping[str, tuple[str, int]] | None = None,
        timeouts: Timeouts | None = None,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        require_called_ae_title: bool = False,
        limits: Limits | None = None,
        server_ssl_context: ssl.SSLContext | None = None,
        commitment: CommitmentOptions | None = None,
        access: AccessPolicy | None = None,
    ) -> None:
        if not ae_title or len(ae_title) > 16 or not ae_title.isascii():
            raise ValueError(f"AE title {ae_title!r} must be 1-16 ASCII characters")
        self.ae_title = ae_title
        self.index = index if index is not None else InstanceIndex()
        self.listen_host = listen_host
        self._requested_port = listen_port
        self.timeouts = timeouts or Timeouts()
        self._server_ssl_context = server_ssl_context
        self._qr = QRContext(
            self.index, ae_title, dict(move_destinations or {}), self.timeouts, max_pdu_length
        )
        storage = _IndexStorage(self.index)
        self.commitment = commitment if commitment is not None else CommitmentOptions()
        self._reports = ReportTasks()
        served = handlers(self._qr)

        async def on_commitment(op: IncomingOperation) -> None:
            await serve_commitment(op, self._qr, self.commitment, self._reports)

        served[N_ACTION_RQ] = on_commitment

        async def store_handler(incoming: IncomingStore) -> DimseMessage:
            return await receive_store(
                incoming.message, incoming.context, incoming.calling_ae_title, storage,
                incoming.limits,
            )

        self.policy = AcceptorPolicy(
            ae_title, timeouts=self.timeouts, max_pdu_length=max_pdu_length,
            require_called_ae_title=require_called_ae_title, store_handler=store_handler,
            access=access if access is not None else AccessPolicy(),
            operations=ServedOperations(
                handlers=served,
                sop_classes=dict.fromkeys(
                    (*QR_SOP_CLASSES, STORAGE_COMMITMENT_PUSH_MODEL),
                    UNCOMPRESSED_TRANSFER_SYNTAXES,
                ),
                storage_scp_role=True,
                # What most archives and our own synthetic data store: a C-GET requestor
                # listing Implicit VR first (pynetdicom's default) still gets them unchanged.
                sending_preference=(EXPLICIT_VR_LE,),
            ),
            limits=limits or Limits(),
        )
        self._listener: Listener | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self.open_associations = 0
        self.peak_associations = 0
        self.served_associations = 0

    @property
    def move_destinations(self) -> dict[str, tuple[str, int]]:
        """AE title -> (host, port): where C-MOVEs may send (changes apply to the next one)."""
        return self._qr.move_destinations

    def add_move_destination(self, ae_title: str, host: str, port: int) -> None:
        self._qr.move_destinations[ae_title] = (host, port)

    @property
    def listen_port(self) -> int:
        """The port listened on (after start)."""
        if self._listener is None:
            raise DicomError("the server is not listening: use 'async with QRServer(...)'")
        return self._listener.port

    @property
    def address(self) -> tuple[str, int, str]:
        """``(host, port, ae_title)``: what a client's ``peer=`` takes."""
        return (self.listen_host, self.listen_port, self.ae_title)

    async def _bind(self) -> Listener:
        if self._listener is None:
            self._listener = await Listener.bind(
                self.listen_host, self._requested_port, self._server_ssl_context,
                handshake_timeout=self.timeouts.artim, gate=self.policy.gate,
                admit_address=self.policy.access.address_allowed,
            )
        return self._listener

    async def serve_forever(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled (for a command line); the listener is closed then.

        ``port = await tasks.start(server.serve_forever)`` returns once it listens."""
        listener = await self._bind()
        task_status.started(listener.port)
        try:
            async with anyio.create_task_group() as reports:
                self._reports.tasks = reports
                await listener.serve(self._serve_connection)
        finally:
            self._reports.tasks = None
            with anyio.CancelScope(shield=True):
                await listener.aclose()
                self._listener = None

    async def __aenter__(self) -> QRServer:
        listener = await self._bind()
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        tasks.start_soon(listener.serve, self._serve_connection)
        self._tasks = tasks
        self._reports.tasks = tasks
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tasks, self._tasks = self._tasks, None
        listener, self._listener = self._listener, None
        self._reports.tasks = None
        if tasks is None:
            if listener is not None:
                with anyio.CancelScope(shield=True):
                    await listener.aclose()
            return None
        return await leave_serving(tasks, listener, exc_type, exc, tb)

    def reset_peak(self) -> None:
        """Start a new observation: :attr:`peak_associations` becomes the number open now."""
        self.peak_associations = self.open_associations

    async def _serve_connection(self, connection: Connection) -> None:
        self.open_associations += 1
        self.served_associations += 1
        self.peak_associations = max(self.peak_associations, self.open_associations)
        try:
            await serve_connection(connection, self.policy)
        finally:
            self.open_associations -= 1

