"""The transport and a whole association on uvloop (optional: skipped when it is not installed).

uvloop's transports have asyncio's interface without deriving from its classes; the
BufferedProtocol must not rely on more than the interface.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import anyio
import pytest
from test_transport import STUCK, _chunks, _payload, connected, receive_all, send_all

import aiodicom

pytest.importorskip("uvloop")


def on_uvloop(test: Callable[[], Awaitable[None]]) -> None:
    anyio.run(test, backend="asyncio", backend_options={"use_uvloop": True})


def test_bytes_arrive_intact_on_uvloop() -> None:
    data = _payload(3_000_017)

    async def run() -> None:
        import uvloop

        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        with anyio.fail_after(STUCK):
            async with connected() as (client, server):
                got = b""

                async def receive() -> None:
                    nonlocal got
                    got = await receive_all(server, random.Random(1))

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(receive)
                    await send_all(client, _chunks(data, random.Random(2), 200_000))
        assert got == data

    on_uvloop(run)


def test_echo_through_our_own_acceptor_on_uvloop() -> None:
    async def run() -> None:
        with anyio.fail_after(STUCK):
            async with aiodicom.Client("UVSCP", listen_port=0) as server:
                assert server.listen_port is not None
                async with aiodicom.Client("UVSCU") as client:
                    await client.peer("127.0.0.1", server.listen_port, "UVSCP").echo()

    on_uvloop(run)


def test_a_timed_read_times_out_with_one_timer_callback_on_uvloop() -> None:
    """uvloop's timers go off up to a millisecond before their time: a timed read must then time
    out, not arm its timer again for the sub-millisecond rest (which spun the loop, about a
    hundred callbacks per timeout)."""

    async def run() -> None:
        from aiodicom.transport import SocketConnection

        async with connected() as (_client, server):
            assert isinstance(server, SocketConnection)
            calls = 0
            time_up = server._time_up

            def counting() -> None:
                nonlocal calls
                calls += 1
                time_up()

            server._time_up = counting  # type: ignore[method-assign]
            for _ in range(5):
                with anyio.fail_after(STUCK):
                    # Not on a millisecond: a minimum receive rate's deadlines seldom are.
                    assert await server.receive_before(anyio.current_time() + 0.0203) is None
            assert calls <= 5 + 1  # one per timeout (and at most one for an earlier read)

    on_uvloop(run)
