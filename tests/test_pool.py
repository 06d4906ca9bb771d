"""The association pool against DCMTK dcmqrscp, seen on the wire through a counting relay."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import pytest
from peers import LOOPBACK
from peers.corpus import Corpus
from peers.dcmtk import DcmQrScp
from peers.orthanc import Orthanc

import aiodicom
from aiodicom import PoolOptions, Query
from aiodicom.testing.pytest_plugin import QRScp

AE = "AIOSCU"
A_RELEASE_RQ, A_RELEASE_RP = 5, 6


class Relay:
    """Relays connections to a target; counts them, and how many were open at once.

    A connection counts as closed once the A-RELEASE-RP has passed through on its way to the
    requestor (or the connection ended): the requestor frees its slot only after receiving
    it, so a relay that counted closes later could see one more than the requestor had open.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.total = 0
        self.open = 0
        self.max_open = 0
        self.released: list[bool] = []  # per connection: the requestor sent A-RELEASE-RQ
        self._tasks: anyio.abc.TaskGroup | None = None
        self._scopes: list[anyio.CancelScope] = []

    async def __aenter__(self) -> Relay:
        listener = await anyio.create_tcp_listener(local_host=LOOPBACK)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(listener.serve, self._relay)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tasks is not None
        self._tasks.cancel_scope.cancel()
        await self._tasks.__aexit__(None, None, None)

    def drop_all(self) -> None:
        """Close every relayed connection at once, as a peer that went away would."""
        for scope in self._scopes:
            scope.cancel()

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        index = self.total
        self.total += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self.released.append(False)
        counted = [True]

        def closed() -> None:
            if counted[0]:
                counted[0] = False
                self.open -= 1

        scope = anyio.CancelScope()
        self._scopes.append(scope)
        try:
            with scope:
                server = await anyio.connect_tcp(*self.target)
                async with client, server, anyio.create_task_group() as tasks:
                    tasks.start_soon(self._pump, client, server, index, None)
                    tasks.start_soon(self._pump, server, client, index, closed)
        finally:
            closed()

    async def _pump(
        self, source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, index: int,
        on_release_rp: object,
    ) -> None:
        header = bytearray()
        remaining = -1
        try:
            async for chunk in source:
                pos = 0
                types: list[int] = []
                while pos < len(chunk):
                    if remaining < 0:
                        take = min(6 - len(header), len(chunk) - pos)
                        header += chunk[pos:pos + take]
                        pos += take
                        if len(header) == 6:
                            types.append(header[0])
                            remaining = int.from_bytes(header[2:6], "big")
                            header.clear()
                    else:
                        take = min(remaining, len(chunk) - pos)
                        pos += take
                        remaining -= take
                    if remaining == 0:
                        remaining = -1
                if on_release_rp is None and A_RELEASE_RQ in types:
                    self.released[index] = True
                if callable(on_release_rp) and A_RELEASE_RP in types:
                    on_release_rp()
                await sink.send(chunk)
            await sink.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass


def one_study(corpus: Corpus) -> Query:
    return Query.study(StudyInstanceUID=corpus.studies[0].study_instance_uid)


async def test_sequential_finds_share_one_association(
    dcmqrscp: DcmQrScp, corpus: Corpus
) -> None:
    async with Relay(dcmqrscp.host, dcmqrscp.port) as relay:
        async with aiodicom.Client(AE, peer=(LOOPBACK, relay.port, dcmqrscp.ae_title)) as client:
            for _ in range(20):
                assert len(await client.find(one_study(corpus)).all()) == 1
            # Another query of the same model is covered by the same association.
            assert len(await client.find(Query.study(PatientID="*")).all()) == len(corpus.studies)
            assert relay.total == 1
            # C-ECHO proposes Verification, which that association never did: one more.
            await client.echo()
            await client.echo()
            assert relay.total == 2
        # Leaving the client released both (A-RELEASE, not A-ABORT).
        assert relay.released == [True, True]


async def test_never_more_than_the_limit_under_50_concurrent_callers(
    aiodicom_qrscp: QRScp,
) -> None:
    # Any PACS serving several associations at once will do: the embedded Q/R SCP, on this loop.
    study = aiodicom_qrscp.index.connection.execute(
        "SELECT StudyInstanceUID FROM instances LIMIT 1").fetchone()[0]
    found: list[int] = []
    async with Relay(aiodicom_qrscp.host, aiodicom_qrscp.port) as relay:
        async with aiodicom.Client(
            AE, peer=(LOOPBACK, relay.port, aiodicom_qrscp.ae_title),
            pool=PoolOptions(max_associations=3),
        ) as client:

            async def caller() -> None:
                found.append(len(await client.find(Query.study(StudyInstanceUID=study)).all()))

            async with anyio.create_task_group() as tasks:
                for _ in range(50):
                    tasks.start_soon(caller)
            key = (LOOPBACK, relay.port, aiodicom_qrscp.ae_title)
            assert client.pool.counts(key) == (3, 3)
        assert found == [1] * 50
        assert relay.max_open == 3 and relay.total == 3
        assert relay.released == [True] * 3


async def test_waiting_too_long_names_the_limit(dcmqrscp: DcmQrScp, corpus: Corpus) -> None:
    async with aiodicom.Client(
        AE, peer=(dcmqrscp.host, dcmqrscp.port, dcmqrscp.ae_title),
        pool=PoolOptions(max_associations=1, acquire_timeout=0.2),
    ) as client:
        everything = client.find(Query.study(PatientID="*"))
        async with everything:
            await anext(aiter(everything))  # the one association is busy with this C-FIND
            with pytest.raises(aiodicom.PoolTimeout, match="max_associations") as caught:
                await client.find(one_study(corpus)).all()
            assert isinstance(caught.value, aiodicom.DicomError)
        # Free again once the first C-FIND is closed.
        assert len(await client.find(one_study(corpus)).all()) == 1


async def test_association_closed_by_the_peer_is_not_reused(
    dcmqrscp: DcmQrScp, corpus: Corpus
) -> None:
    async with Relay(dcmqrscp.host, dcmqrscp.port) as relay:
        key = (LOOPBACK, relay.port, dcmqrscp.ae_title)
        async with aiodicom.Client(AE, peer=key) as client:
            assert len(await client.find(one_study(corpus)).all()) == 1
            [idle] = client.pool.idle(key)
            relay.drop_all()
            with anyio.fail_after(5):
                await idle.association.closed.wait()  # the pool's watcher saw it go
            assert len(await client.find(one_study(corpus)).all()) == 1
            assert relay.total == 2


async def test_association_of_a_cancelled_find_is_not_reused(
    dcmqrscp: DcmQrScp, corpus: Corpus
) -> None:
    async with Relay(dcmqrscp.host, dcmqrscp.port) as relay:
        key = (LOOPBACK, relay.port, dcmqrscp.ae_title)
        async with aiodicom.Client(AE, peer=key) as client:
            everything = client.find(Query.study(PatientID="*"))
            async with everything:
                async for _ in everything:
                    break  # C-CANCEL mid-operation
            assert everything.result is not None and everything.result.cancelled
            assert client.pool.counts(key) == (0, 0)
            assert len(await client.find(one_study(corpus)).all()) == 1
            assert relay.total == 2


async def test_idle_association_released_after_idle_timeout(
    dcmqrscp: DcmQrScp, corpus: Corpus
) -> None:
    async with Relay(dcmqrscp.host, dcmqrscp.port) as relay:
        key = (LOOPBACK, relay.port, dcmqrscp.ae_title)
        async with aiodicom.Client(AE, peer=key, pool=PoolOptions(idle_timeout=0.3)) as client:
            assert len(await client.find(one_study(corpus)).all()) == 1
            [idle] = client.pool.idle(key)
            started = anyio.current_time()
            with anyio.fail_after(5):
                await idle.association.closed.wait()
            assert anyio.current_time() - started >= 0.25
            assert client.pool.idle(key) == ()
        assert relay.released == [True]


async def test_no_reuse_when_idle_timeout_is_zero(dcmqrscp: DcmQrScp, corpus: Corpus) -> None:
    async with Relay(dcmqrscp.host, dcmqrscp.port) as relay:
        key = (LOOPBACK, relay.port, dcmqrscp.ae_title)
        async with aiodicom.Client(AE, peer=key, pool=PoolOptions(idle_timeout=0)) as client:
            for _ in range(3):
                assert len(await client.find(one_study(corpus)).all()) == 1
            assert client.pool.counts(key) == (0, 0)
        assert relay.total == 3 and relay.released == [True] * 3


async def test_operations_need_the_client_open_and_a_default_peer() -> None:
    client = aiodicom.Client(AE, peer=(LOOPBACK, 1, "X"))
    with pytest.raises(aiodicom.DicomError, match="async with"):
        await client.echo()
    async with aiodicom.Client(AE) as bare:
        with pytest.raises(aiodicom.DicomError, match="no default peer"):
            bare.find(Query.study(PatientID="1"))


async def test_move_checks_the_identifier_on_its_own_association(
    orthanc: Orthanc, corpus: Corpus
) -> None:
    """After a bare refusal, the C-FIND telling 'unknown destination' from 'nothing there'
    runs on the association the C-MOVE used (its FIND context was proposed with it)."""
    async with Relay(orthanc.host, orthanc.port) as relay, aiodicom.Client(
        AE, peer=(LOOPBACK, relay.port, orthanc.ae_title), listen_port=0
    ) as client:
        with pytest.raises(aiodicom.MoveDestinationUnknown, match="checked with C-FIND"):
            await client.move(one_study(corpus))
        assert relay.total == 1


def test_session_and_peer_offer_the_same_operations() -> None:
    import inspect

    operations = ("find", "find_series", "find_images", "move", "get", "retrieve", "echo",
                  "store")
    for name in operations:
        session_op = inspect.signature(getattr(aiodicom.Session, name))
        assert inspect.signature(getattr(aiodicom.Peer, name)) == session_op, name
        # The client's own (on its default peer) take the same arguments.
        client_op = inspect.signature(getattr(aiodicom.Client, name))
        assert list(client_op.parameters) == list(session_op.parameters), name


async def test_leaving_by_cancellation_releases_idle_associations(
    dcmqrscp: DcmQrScp, corpus: Corpus
) -> None:
    async with Relay(dcmqrscp.host, dcmqrscp.port) as relay:
        key = (LOOPBACK, relay.port, dcmqrscp.ae_title)
        with anyio.move_on_after(0.5) as scope:
            async with aiodicom.Client(AE, peer=key) as client:
                assert len(await client.find(one_study(corpus)).all()) == 1
                [idle] = client.pool.idle(key)
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert idle.association.closed.is_set()
        assert relay.released == [True]


async def test_sequential_gets_and_moves_reuse_their_associations(
    dcmqrscp_factory: Callable[..., DcmQrScp], corpus: Corpus
) -> None:
    classes = sorted({s.sop_class_uid for s in corpus.series})
    async with aiodicom.Client(AE, listen_port=0) as client:
        assert client.listen_port is not None
        qr = dcmqrscp_factory(move_destinations=[(AE, LOOPBACK, client.listen_port)])
        async with Relay(qr.host, qr.port) as relay:
            peer = client.peer(LOOPBACK, relay.port, qr.ae_title)
            for series in corpus.series[:4]:
                query = Query.series(StudyInstanceUID=series.study_instance_uid,
                                     SeriesInstanceUID=series.series_instance_uid)
                got = await peer.get(query, sop_classes=classes)
                moved = await peer.move(query)
                wanted = sorted(i.sop_instance_uid for i in series.instances)
                assert sorted(got.completed) == wanted == sorted(moved.completed)
            # One association for the C-GETs (same storage contexts each time), one for the
            # C-MOVEs.
            assert relay.total == 2

