"""A request the dispatcher hands to its handler is answered whole even if the task reading
is cancelled meanwhile (a missing response would stall the peer, a half-sent one break the
association); the cancellation then takes effect. Every way of reading: the acceptor's serving
loop (:meth:`Dispatcher.run`), a task pulling messages (:meth:`Dispatcher.read_one`), and an
operation waiting for its response while requests come (a C-GET's C-STOREs)."""

from __future__ import annotations

from typing import Any, cast

import anyio
import pytest

from aiodicom.dimse import C_ECHO_RQ, DimseMessage
from aiodicom.dispatcher import Dispatcher


class _OneRequestThenSilence:
    """An association whose peer sends one request, then nothing: reading on waits forever."""

    def __init__(self) -> None:
        self.request = DimseMessage(1, {"CommandField": C_ECHO_RQ, "MessageID": 7})
        self._sent = False
        self._never = anyio.Event()

    async def receive_message(self) -> DimseMessage | None:
        if not self._sent:
            self._sent = True
            return self.request
        await self._never.wait()
        return None


class _SlowHandler:
    """Handles a request only once ``finish`` is set, noting whether it got to the end."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.finish = anyio.Event()
        self.answered: list[DimseMessage] = []

    async def __call__(self, message: DimseMessage) -> None:
        self.started.set()
        await self.finish.wait()  # a cancellation not shielded off would come in here
        self.answered.append(message)


@pytest.mark.parametrize(
    "reading", ["serving loop", "operation pulling", "operation waiting for its response"]
)
async def test_a_request_being_handled_is_answered_though_the_reader_is_cancelled(
    reading: str,
) -> None:
    association = _OneRequestThenSilence()
    handler = _SlowHandler()
    dispatcher = Dispatcher(cast(Any, association), request_handler=handler)

    async def pull() -> None:
        async with dispatcher.reading():
            while True:
                await dispatcher.read_one()

    async def wait_for_response() -> None:
        async with dispatcher.operation() as message_id:
            await dispatcher.next_response(message_id, timeout=None)

    readers = {"serving loop": dispatcher.run, "operation pulling": pull,
               "operation waiting for its response": wait_for_response}
    with anyio.fail_after(5):  # the cancellation must still end the reading: no hang
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(readers[reading])
            await handler.started.wait()
            tasks.cancel_scope.cancel()
            handler.finish.set()

    assert handler.answered == [association.request]
    assert dispatcher._serving is None  # nothing left shielded for the next reader


async def test_the_serving_loop_is_cancelled_as_usual_while_it_waits_for_a_request() -> None:
    association = _OneRequestThenSilence()
    handler = _SlowHandler()
    handler.finish.set()
    dispatcher = Dispatcher(cast(Any, association), request_handler=handler)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(dispatcher.run)
            await handler.started.wait()
            await anyio.wait_all_tasks_blocked()  # the loop waits for the next request
            tasks.cancel_scope.cancel()
    assert handler.answered == [association.request]
    # After being cancelled, the dispatcher can serve again (nothing left shielded).
    assert dispatcher._serving is None
