"""Hostile peers against the client's acceptor: what is stored must be what the command says.

The command's Affected SOP Class UID must be the presentation context's abstract syntax (the
issue saw a ``../x`` class UID end up in a stored file's File Meta), and the data set's SOP
Instance UID the command's Affected SOP Instance UID: otherwise the C-STORE fails (0xA900) and
nothing is written under a final name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from aiodicom import Client, DirectorySink
from aiodicom.status import Status
from aiodicom.testing.hostile import (
    CT_CONTEXT,
    CT_IMAGE_STORAGE,
    associate,
    data_pdu,
    instance_data_set,
    read_status,
    store_rq,
)

HOST = "127.0.0.1"
STUCK = 30


@pytest.mark.parametrize(
    ("command_class", "command_instance", "data", "expected"),
    [
        ("../x", "1.2.3.4.5", instance_data_set("1.2.3.4.5"),
         Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5", instance_data_set("1.2.3.4.5"),
         Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
        (CT_IMAGE_STORAGE, "1.2.3.4.5", instance_data_set("1.2.3.4.6"),
         Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
        (CT_IMAGE_STORAGE, "1.2.3.4.5",
         instance_data_set("1.2.3.4.5", sop_class_uid="1.2.840.10008.5.1.4.1.1.4"),
         Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
        (CT_IMAGE_STORAGE, "1.2.3.4.5", instance_data_set("1.2.3.4.5"), Status.SUCCESS),
    ],
    ids=["class-path", "class-not-the-context", "instance-uid", "data-set-class", "agreeing"],
)
async def test_stored_instance_must_match_its_command(
    tmp_path: Path, command_class: str, command_instance: str, data: bytes, expected: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    received = tmp_path / "received"
    async with Client("AIOSCP", listen_port=0,
                      unexpected_deliveries=DirectorySink(received)) as client:
        assert client.listen_port is not None
        reader, writer = await associate(HOST, client.listen_port)
        writer.write(store_rq(CT_CONTEXT, command_instance, sop_class_uid=command_class))
        writer.write(data_pdu(CT_CONTEXT, data, command=False, last=True))
        with anyio.fail_after(STUCK):
            status = await read_status(reader)
        writer.close()
    assert status == expected
    written = sorted(p.name for p in received.rglob("*") if p.is_file())
    if expected == Status.SUCCESS:
        assert written == ["1.2.3.4.5.dcm"]
    else:
        assert written == []  # not under a final name, nor a temporary one left behind
        assert any("refused a C-STORE" in r.getMessage() for r in caplog.records)
