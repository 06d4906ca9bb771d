"""The Client as its callers see it: exceptions, the default peer, the listening side."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from peers.corpus import Corpus
from peers.dcmtk import DcmQrScp

import aiodicom
from aiodicom import Query

AE = "AIOSCU"


async def test_error_in_block_reaches_caller_unwrapped_with_acceptor(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    """An error raised inside ``async with Client(..., listen_port=0)`` is the caller's exception as
    is, not an ExceptionGroup from the client's internal task group."""
    qr = dcmqrscp_factory()  # an empty HostTable: our AE title is an unknown destination
    study = corpus.studies[0]
    with pytest.raises(aiodicom.MoveDestinationUnknown):
        async with aiodicom.Client(AE, listen_port=0) as client:
            await client.peer(qr.host, qr.port, qr.ae_title).move(
                Query.study(StudyInstanceUID=study.study_instance_uid)
            )
    try:
        async with aiodicom.Client(AE, listen_port=0):
            raise aiodicom.DicomError("raised in the block")
    except aiodicom.DicomError as exc:
        assert str(exc) == "raised in the block"
    with pytest.raises(KeyError):
        async with aiodicom.Client(AE, listen_port=0):
            raise KeyError("plain")


async def test_outer_cancellation_through_client_with_acceptor() -> None:
    """A deadline around the block cancels it and is absorbed by its own scope only."""
    with anyio.move_on_after(0.2) as scope:
        async with aiodicom.Client(AE, listen_port=0):
            await anyio.sleep_forever()
    assert scope.cancelled_caught
