"""The storage SCP path every received C-STORE takes (C-GET, C-MOVE deliveries, the acceptor):
the statuses it answers with, the responses it builds, what it does with spool files."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path

import pytest

from aiodicom.dimse import (
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    N_ACTION_RQ,
    N_ACTION_RSP,
    DimseMessage,
    decode_command,
    fragment_message,
)
from aiodicom.instance import Instance
from aiodicom.negotiation import PresentationContext
from aiodicom.services.storage_scp import (
    OneRecipient,
    SinkHandler,
    answer_request,
    data_opener,
    receive_store,
    store_response,
)
from aiodicom.sinks import DirectorySink, MemorySink
from aiodicom.spool import SpooledFile
from aiodicom.status import Status

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SOP = "1.2.3.4.5"
CONTEXT = PresentationContext(1, CT, 0, EXPLICIT_LE, we_are_scu=False, we_are_scp=True)
CONTEXTS = {1: CONTEXT}


def data_set() -> bytes:
    def ui(element: int, value: str) -> bytes:
        raw = value.encode() + (b"\0" if len(value) % 2 else b"")
        return b"\x20\x00" + element.to_bytes(2, "little") + b"UI" + len(raw).to_bytes(
            2, "little") + raw

    return ui(0x000D, "1.2.3") + ui(0x000E, "1.2.3.4") + bytes(4096)


def store_request(data: bytes | memoryview | None = b"", message_id: int = 7,
                  writer: SpooledFile | None = None) -> DimseMessage:
    return DimseMessage(1, {
        "CommandField": C_STORE_RQ,
        "MessageID": message_id,
        "AffectedSOPClassUID": CT,
        "AffectedSOPInstanceUID": SOP,
        "Priority": 0,
    }, data_set() if data == b"" else data, writer=writer)


class Recorder:
    """A recipient that keeps what it is given, failing as told."""

    def __init__(self, sink: object = None, fails: BaseException | None = None) -> None:
        self.sink = sink
        self.closed = False
        self.requested = True
        self.fails = fails
        self.received: list[Instance] = []
        self.local_failures: list[str] = []

    def record_local_failure(self, sop_instance_uid: str) -> None:
        self.local_failures.append(sop_instance_uid)

    async def accept(self, instance: Instance) -> int:
        if self.fails is not None:
            raise self.fails
        self.received.append(instance)
        return Status.SUCCESS


def response_fields(response: DimseMessage) -> Mapping[str, object]:
    """The response as it goes on the wire, decoded back."""
    pdus = list(fragment_message(response, 0))
    return decode_command(b"".join(bytes(pdv.data) for pdu in pdus for pdv in pdu.pdvs))


async def test_a_stored_instance_is_answered_success_with_the_request_s_uids() -> None:
    recipient = Recorder()
    response = await receive_store(
        store_request(), CONTEXT, "PACS", OneRecipient(recipient, recipient.accept)
    )
    fields = response_fields(response)
    assert fields["CommandField"] == C_STORE_RSP
    assert fields["MessageIDBeingRespondedTo"] == 7
    assert fields["AffectedSOPClassUID"] == CT and fields["AffectedSOPInstanceUID"] == SOP
    assert fields["Status"] == Status.SUCCESS
    [instance] = recipient.received
    assert bytes(instance.data) == data_set() and instance.source_ae_title == "PACS"
    assert instance.transfer_syntax_uid == EXPLICIT_LE


@pytest.mark.parametrize(("error", "status"), [
    (OSError(errno.ENOSPC, "No space left on device"), Status.OUT_OF_RESOURCES),
    (ValueError("not for me"), Status.UNABLE_TO_PROCESS),
])
async def test_a_failing_sink_is_answered_by_kind_of_error(
    error: Exception, status: Status
) -> None:
    class Failing:
        async def __call__(self, instance: Instance) -> None:
            raise error

    handler = SinkHandler(MemorySink())
    handler.sink = Failing()  # type: ignore[assignment]
    routing = OneRecipient(handler, handler)
    response = await receive_store(store_request(), CONTEXT, "PACS", routing)
    assert response.status_code == status


async def test_a_data_set_that_could_not_be_spooled_is_out_of_resources(tmp_path: Path) -> None:
    recipient = Recorder(DirectorySink(tmp_path, memory_limit=16))
    routing = OneRecipient(recipient, recipient.accept)
    command = store_request().command
    writer = data_opener(routing, CONTEXTS, "PACS")(1, dict(command))
    assert isinstance(writer, SpooledFile)
    writer.write(memoryview(data_set()[:100]))  # past the limit: on disk now
    writer.error = OSError(errno.ENOSPC, "No space left on device")
    request = store_request(writer.close(), writer=writer)
    response = await receive_store(request, CONTEXT, "PACS", routing)
    assert response.status_code == Status.OUT_OF_RESOURCES
    assert recipient.local_failures == [SOP] and not recipient.received
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".spool")]


async def test_without_a_data_set_the_store_cannot_be_understood() -> None:
    recipient = Recorder()
    response = await receive_store(
        store_request(None), CONTEXT, "PACS", OneRecipient(recipient, recipient.accept)
    )
    assert response.status_code == Status.UNABLE_TO_PROCESS and not recipient.received


async def test_a_closed_recipient_gets_no_spool_file(tmp_path: Path) -> None:
    recipient = Recorder(DirectorySink(tmp_path))
    opener = data_opener(OneRecipient(recipient, recipient.accept), CONTEXTS, "PACS")
    assert opener(1, dict(store_request().command)) is not None
    recipient.closed = True
    assert opener(1, dict(store_request().command)) is None


async def test_requests_we_do_not_serve_are_unrecognized_and_echo_is_answered() -> None:
    async def never(request: DimseMessage, context: PresentationContext) -> DimseMessage:
        raise AssertionError("not a C-STORE")

    action = DimseMessage(1, {"CommandField": N_ACTION_RQ, "MessageID": 3})
    fields = response_fields(await answer_request(action, CONTEXTS, never))
    assert fields["CommandField"] == N_ACTION_RSP and fields["MessageIDBeingRespondedTo"] == 3
    assert fields["Status"] == Status.UNRECOGNIZED_OPERATION

    # Without a store handler, a C-STORE is not a service we provide either.
    stored = await answer_request(store_request(), CONTEXTS, None)
    assert stored.status_code == Status.UNRECOGNIZED_OPERATION

    echo = DimseMessage(1, {"CommandField": C_ECHO_RQ, "MessageID": 4,
                            "AffectedSOPClassUID": "1.2.840.10008.1.1"})
    answer = await answer_request(echo, CONTEXTS, never)
    assert answer.command_field == C_ECHO_RSP and answer.status_code == Status.SUCCESS


async def test_a_store_on_an_unknown_context_is_refused() -> None:
    async def never(request: DimseMessage, context: PresentationContext) -> DimseMessage:
        raise AssertionError("no context to receive on")

    response = await answer_request(store_request(), {}, never)
    assert response.status_code == Status.SOP_CLASS_NOT_SUPPORTED


def test_store_response_carries_what_it_answers() -> None:
    response = store_response(store_request(message_id=65535), Status.NOT_AUTHORIZED)
    assert response_fields(response) == {
        "AffectedSOPClassUID": CT,
        "CommandField": C_STORE_RSP,
        "MessageIDBeingRespondedTo": 65535,
        "CommandDataSetType": 0x0101,
        "Status": Status.NOT_AUTHORIZED,
        "AffectedSOPInstanceUID": SOP,
    }
