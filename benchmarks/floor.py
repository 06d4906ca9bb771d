"""The floor of a Python storage SCP on this machine (``--experiments`` rows of store-small).

Not the library, and not a design to copy: a storage SCP with none of aiodicom's layers above
its codecs. It decodes PDUs, the command and the four identifying UIDs with the library's own
pure functions (pdu, dimse, peek, fileio) and writes each instance as the library does (a
Part 10 file under ``<study>/<series>/<SOP instance>.dcm``, written unnamed and linked, the next
file made ahead after the response), but it has no state machine, no reassembly objects, no
dispatcher, no routing, no spooling of large data sets, no timeouts, no pacing and no checks
past the SOP UIDs. What it lacks is what the library's layers do; so the difference between
its row and the library's is what those layers cost per C-STORE, and its row against storescp
is the most a Python SCP on asyncio could gain here.

Six modes, each a row, build the library back up from that floor:

* ``push``: the bytes are handled in the transport's callback, as they arrive.
* ``pull``: the callback only wakes a task, which handles them (one trip through the loop per
  read). The library reads this way (see aiodicom/dispatcher.py: a consumer that stops pulling
  stops the reading), so ``pull`` against ``push`` is what that choice costs.
* ``reassembly``: ``push``, with the library's MessageAssembler making each DIMSE message (its
  data set copied into one buffer as the fragments arrive) instead of a list of fragments.
* ``sink``: ``reassembly``, with the instance written by a DirectorySink as the library's SCP
  writes it (a spool opened when the command arrives, then the storage service's own steps:
  the Instance, the checks against the command, the sink's call) instead of the few lines
  here.
* ``services``: ``reassembly``, with each message handed to the library's storage service as
  its acceptor hands it over (a DeliveryRouter choosing the spool when the command arrives,
  then an IncomingStore, the checks against the command, the routing, the sink, the encoded
  response).
* ``statemachine``: ``services``, with the bytes framed, checked and answered through the
  library's AssociationStateMachine (PS3.8's table: the association's negotiation, each PDU's
  header and limits, the P-DATA values handed up, the response sent through it) instead of
  the few lines here.

So ``statemachine`` against the library's own row is what the rest of the layers below the
services cost per C-STORE: the association's reads from a task (the transport's buffer, pacing,
timed reads), the dispatcher, the acceptor's serving loop and the way back down to the
transport.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiodicom.acceptor import IncomingStore
from aiodicom.dimse import (
    DataSetWriter,
    DimseMessage,
    decode_command,
    encode_short_message,
    encode_store_response,
)
from aiodicom.fileio import PREAMBLE, encode_file_meta
from aiodicom.limits import Limits
from aiodicom.negotiation import PresentationContext
from aiodicom.pdu import decode_pdu, encode_pdu, pdata_header, pdata_values, read_pdu_header
from aiodicom.pdu_types import (
    AReleaseRP,
    AssociateAC,
    AssociateRQ,
    PresentationContextAC,
    UserInformation,
)
from aiodicom.peek import IDENTIFYING_TAGS, peek_elements
from aiodicom.reassembly import MessageAssembler
from aiodicom.routing import DeliveryRouter
from aiodicom.services.storage_scp import (
    SinkHandler,
    instance_from_request,
    mismatch,
    release_spool,
    store_into,
)
from aiodicom.sinks import DirectorySink
from aiodicom.statemachine import AssociationStateMachine
from aiodicom.transport import _tune_socket
from aiodicom.uids import EXPLICIT_VR_LE, IMPLEMENTATION_CLASS_UID, IMPLICIT_VR_LE
from aiodicom.ul_events import AssociateRequestReceived, ReleaseRequested
from aiodicom.unnamed import open_unnamed

_RELEASE_RP = encode_pdu(AReleaseRP())
_BUFFER = 1 << 18
MODES = ("push", "pull", "reassembly", "sink", "services", "statemachine")


class FloorSCP(asyncio.BufferedProtocol):
    """One association of the layer-free SCP."""

    def __init__(self, root: str, mode: str, counter: list[int]) -> None:
        self.root = root
        self.pull = mode == "pull"
        self.limits = Limits()
        # Bounded as the client bounds its sink for unexpected deliveries.
        self.sink = (
            DirectorySink(root, max_remembered=self.limits.max_remembered_paths)
            if mode in ("sink", "services", "statemachine") else None
        )
        self.assembler = (
            MessageAssembler(self._open_data if self.sink else None)
            if mode in ("reassembly", "sink", "services", "statemachine") else None
        )
        # services: the library's router, its sink as the handler of unexpected deliveries
        # (what Client(unexpected_deliveries=DirectorySink(...)) sets up), its default limits.
        self.router: DeliveryRouter | None = None
        self.machine: AssociationStateMachine | None = None
        if mode == "statemachine":
            # As Association.accept makes it: our maximum PDU (131072), the peer's limit on
            # what it may send us (see aiodicom/association.py), and P-DATA values handed up.
            self.machine = AssociationStateMachine(
                requestor=False, max_receive_pdu_size=131072 + 6
            )
            self.machine.on_data_value = self._machine_value
            self.machine.connection_made()
        if mode in ("services", "statemachine"):
            assert self.sink is not None
            self.router = DeliveryRouter()
            self.router.unexpected = SinkHandler(self.sink)
        self.accepted: dict[int, PresentationContext] = {}
        self.counter = counter
        self.buffer = bytearray(_BUFFER)
        self.start = self.end = 0
        self.contexts: dict[int, tuple[str, str]] = {}
        self.command_bytes = b""
        self.command: dict[str, object] | None = None
        self.fragments: list[bytes] = []
        self.directories: dict[tuple[str | None, str | None], str] = {}
        self.spare: int | None = None
        self.calling = ""
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        _tune_socket(transport.get_extra_info("socket"))  # as the library's connections
        if self.pull:
            asyncio.get_running_loop().create_task(self._pull())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buffer) - self.end < 1 << 14:
            pending = self.end - self.start
            if pending + (1 << 14) > len(self.buffer):
                # A new buffer rather than a resize: a bytearray with exported views cannot.
                grown = bytearray(2 * len(self.buffer))
                grown[:pending] = self.buffer[self.start : self.end]
                self.buffer = grown
            else:
                self.buffer[:pending] = self.buffer[self.start : self.end]
            self.start, self.end = 0, pending
        return memoryview(self.buffer)[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        if not self.pull:
            self._handle()
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def _pull(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        while not self.transport.is_closing():
            self.waiter = loop.create_future()
            await self.waiter
            self.waiter = None
            self._handle()

    def _handle(self) -> None:
        view = memoryview(self.buffer)
        if self.machine is not None:
            self._through_machine(view)
            return
        while self.end - self.start >= 6:
            pdu_type, length = read_pdu_header(view[self.start : self.start + 6])
            if self.end - self.start < 6 + length:
                break
            pdu = view[self.start : self.start + 6 + length]
            self.start += 6 + length
            if pdu_type == 4:
                for context_id, control, value in pdata_values(pdu, 6 + length):
                    if self.assembler is None:
                        self._value(context_id, control, value)
                        continue
                    message = self.assembler.feed_value(context_id, control, value)
                    if message is None:
                        continue
                    if self.router is not None:
                        self._serve(message)
                    else:
                        self._store(context_id, message.command, message)
            elif pdu_type == 1:
                request = decode_pdu(pdu)
                assert isinstance(request, AssociateRQ) and self.transport is not None
                self.transport.write(encode_pdu(self._associate(request)))
            else:  # a release request (answered) or an abort: the association ends
                assert self.transport is not None
                if pdu_type == 5:
                    self.transport.write(_RELEASE_RP)
                self.transport.close()
                return
        if self.assembler is not None:
            # A spool keeps views of the buffer until flushed: before the buffer is read into.
            self.assembler.flush()
        if self.start == self.end:
            self.start = self.end = 0
        if self.spare is None and self.sink is None:  # a DirectorySink makes its own
            asyncio.get_running_loop().call_soon(self._make_spare)

    def _through_machine(self, view: memoryview) -> None:
        machine = self.machine
        assert machine is not None and self.assembler is not None and self.transport is not None
        events, used = machine.receive_pdus(view[self.start : self.end])
        self.start += used
        self.assembler.flush()
        ended = False
        for event in events:
            if isinstance(event, AssociateRequestReceived):
                machine.accept(self._associate(event.request))
            elif isinstance(event, ReleaseRequested):
                machine.release_response()
                ended = True  # the peer closes after our answer; so do we
            else:  # an abort, or the state machine refusing what arrived
                ended = True
        if machine.has_data_to_send:
            self.transport.write(machine.data_to_send())
        if ended or machine.should_close:
            self.transport.close()
            return
        if self.start == self.end:
            self.start = self.end = 0

    def _machine_value(self, context_id: int, control: int, value: memoryview) -> None:
        assert self.assembler is not None
        message = self.assembler.feed_value(context_id, control, value)
        if message is not None:
            self._serve(message)

    def _serve(self, message: DimseMessage) -> None:
        assert self.router is not None and self.transport is not None
        handling = self.router.handle(IncomingStore(
            message, self.accepted[message.context_id], self.calling, "STORESCP", "127.0.0.1",
            self.limits,
        ))
        response = _at_once(handling)
        if response.command.get("Status") == 0x0000:
            self.counter[0] += 1
        encoded = encode_short_message(response, 1 << 16)
        assert encoded is not None
        if self.machine is not None:
            self.machine.send_encoded_data(encoded)  # written once the read is handled
        else:
            self.transport.write(encoded)

    def _open_data(self, context_id: int, command: dict[str, object]) -> DataSetWriter | None:
        assert self.sink is not None
        return self.sink.open_spool(
            str(command["AffectedSOPClassUID"]), str(command["AffectedSOPInstanceUID"]),
            self.contexts[context_id][1], self.calling,
        )

    def _make_spare(self) -> None:
        if self.spare is None and self.transport is not None and not self.transport.is_closing():
            self.spare = open_unnamed(self.root)

    def _associate(self, request: AssociateRQ) -> AssociateAC:
        answers = []
        for context in request.presentation_contexts:
            syntaxes = context.transfer_syntaxes
            chosen = next((ts for ts in (EXPLICIT_VR_LE, IMPLICIT_VR_LE) if ts in syntaxes), None)
            if chosen is not None:
                self.contexts[context.context_id] = (context.abstract_syntax, chosen)
            answers.append(PresentationContextAC(
                context.context_id, 0 if chosen else 4, chosen or IMPLICIT_VR_LE))
        self.calling = request.calling_ae_title
        self.accepted = {
            context_id: PresentationContext(
                context_id, abstract_syntax, 0, transfer_syntax,
                we_are_scu=False, we_are_scp=True,
            )
            for context_id, (abstract_syntax, transfer_syntax) in self.contexts.items()
        }
        if self.router is not None:
            # As the acceptor sets it up: the router chooses where each data set goes.
            self.assembler = MessageAssembler(
                self.router.opener(self.accepted, self.calling, "127.0.0.1")
            )
        return AssociateAC(
            request.called_ae_title, request.calling_ae_title, tuple(answers),
            UserInformation(
                max_pdu_length=131072, implementation_class_uid=IMPLEMENTATION_CLASS_UID
            ),
        )

    def _value(self, context_id: int, control: int, value: memoryview) -> None:
        if control & 1:  # a command fragment
            self.command_bytes += bytes(value)
            if control & 2:
                self.command = decode_command(self.command_bytes)
                self.command_bytes = b""
            return
        self.fragments.append(bytes(value))
        if control & 2:
            command, self.command = self.command, None
            assert command is not None
            self._store(context_id, command)

    def _store(
        self, context_id: int, command: dict[str, object], message: DimseMessage | None = None
    ) -> None:
        assert self.transport is not None
        if message is not None and self.sink is not None:
            status = self._into_sink(message)
        else:
            status = self._write(context_id, command, message)
        if status == 0x0000:
            self.counter[0] += 1
        message_id = command["MessageID"]
        assert isinstance(message_id, int)
        response = encode_store_response(
            message_id, str(command["AffectedSOPClassUID"]),
            str(command["AffectedSOPInstanceUID"]), status,
        )
        self.transport.write(pdata_header(context_id, True, True, len(response)) + response)

    def _into_sink(self, message: DimseMessage) -> int:
        """The storage service's own steps into the sink (without its routing)."""
        assert self.sink is not None
        context = self.accepted[message.context_id]
        assert context.transfer_syntax is not None
        try:
            instance = instance_from_request(message, context.transfer_syntax, self.calling)
            refused = mismatch(instance, context)
            if refused is not None:
                return refused[0]
            return _at_once(store_into(self.sink, instance))
        finally:
            release_spool(message)  # what was not kept

    def _write(
        self, context_id: int, command: dict[str, object], message: DimseMessage | None
    ) -> int:
        """The few lines: check the SOP UIDs, write the file, unnamed and linked."""
        if message is None:
            data: bytes | memoryview = b"".join(self.fragments)
            self.fragments = []
        else:
            assert message.data is not None
            data = message.data
        abstract_syntax, transfer_syntax = self.contexts[context_id]
        sop_class = str(command["AffectedSOPClassUID"])
        sop_instance = str(command["AffectedSOPInstanceUID"])
        uids = peek_elements(data, transfer_syntax, IDENTIFYING_TAGS)
        if (
            sop_class != abstract_syntax or uids.get(0x00080016, sop_class) != sop_class
            or uids.get(0x00080018, sop_instance) != sop_instance
        ):
            return 0xA900
        key = (uids.get(0x0020000D), uids.get(0x0020000E))
        directory = self.directories.get(key)
        if directory is None:
            directory = os.path.join(self.root, str(key[0]), str(key[1]))
            os.makedirs(directory, exist_ok=True)
            directory = self.directories[key] = directory + os.sep
        header = PREAMBLE + encode_file_meta(
            sop_class_uid=sop_class, sop_instance_uid=sop_instance,
            transfer_syntax_uid=transfer_syntax, source_ae_title=self.calling,
        )
        fd, self.spare = self.spare, None
        if fd is None:
            fd = open_unnamed(self.root)
        assert fd is not None
        try:
            os.writev(fd, [header, data])
            os.link(f"/proc/self/fd/{fd}", directory + sop_instance + ".dcm",
                    src_dir_fd=fd, follow_symlinks=True)
        finally:
            os.close(fd)
        return 0x0000


_T = TypeVar("_T")


def _at_once(call: Coroutine[Any, Any, _T]) -> _T:
    """The result of a coroutine that never waits for anything (a DirectorySink's call, the
    storage service with one): run to its end as awaiting it would, without a task."""
    try:
        call.send(None)
    except StopIteration as done:
        result: _T = done.value
        return result
    call.close()
    raise RuntimeError("a call expected never to wait waited for something")


async def listen(root: str, port: int, mode: str) -> tuple[asyncio.Server, list[int]]:
    """Listen on ``port`` as the ``mode`` SCP (one of :data:`MODES`); the server and a
    one-item list counting the instances written."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is none of {MODES}")
    counter = [0]
    os.makedirs(root, exist_ok=True)
    real_root = os.path.realpath(root)
    server = await asyncio.get_running_loop().create_server(
        lambda: FloorSCP(real_root, mode, counter), "127.0.0.1", port
    )
    return server, counter


async def serve_store(p: dict[str, Any]) -> dict[str, Any]:
    """The worker task ``serve_store_floor`` (benchmarks/worker.py): serve as ``p["sink"]``
    (one of :data:`MODES`) into ``p["out_dir"]`` until a line arrives on stdin."""
    import anyio.to_thread

    from aiodicom.fileio import split_part10
    from benchmarks.worker import Meter, count_files, fresh_dir, wait_for_stdin_line

    out = fresh_dir(p["out_dir"])
    assert out is not None
    server, written = await listen(str(out), p["listen_port"], p["sink"])
    m = Meter()
    print("READY", flush=True)
    await anyio.to_thread.run_sync(wait_for_stdin_line)
    result = m.result(count=written[0], files=count_files(out), ok=True)
    server.close()
    # Counted after the measurement: the data set bytes of the files written.
    paths = [Path(d) / f for d, _, files in os.walk(out) for f in files]
    result["bytes"] = sum(len(split_part10(path.read_bytes())[1]) for path in paths)
    return result
