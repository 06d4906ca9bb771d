"""How many operations run at once on each PACS, and over all of them.

The runner enters ``limiter.slot(pacs)`` around every operation (C-FIND, C-GET, C-MOVE) it
runs on a PACS, and holds nothing between attempts. :class:`PacsLimiter` is all it asks, so
that another implementation can take over: the Dask scale-out gives one whose slots are
counted cluster-wide (a distributed semaphore per PACS).

:class:`LocalLimiter` is the default, in one process: per PACS at most its ``operations``,
over all of them at most ``total``. When slots are scarce, a freed slot goes to the PACS next
in turn (round robin over the PACS with callers waiting), not to whichever caller came first,
so that a PACS with a long queue does not starve the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Protocol, runtime_checkable

import anyio
import attrs

__all__ = ["LocalLimiter", "PacsLimiter"]


@runtime_checkable
class PacsLimiter(Protocol):
    """``async with limiter.slot("orthanc"):`` one operation on that PACS."""

    def slot(self, pacs: str) -> AbstractAsyncContextManager[None]: ...


@attrs.define(eq=False)
class _Waiter:
    event: anyio.Event = attrs.Factory(anyio.Event)
    granted: bool = False


@attrs.define(eq=False)
class _PacsState:
    limit: int
    in_use: int = 0
    peak: int = 0
    waiters: deque[_Waiter] = attrs.Factory(deque)


class LocalLimiter:
    """Per-PACS and global limits for one event loop, fair between PACS (see the module).

    ``limits``: operations at once per PACS name (a PACS not named gets ``default``).
    ``total``: operations at once over every PACS (``None``: no global limit).
    :meth:`peak` tells the most slots a PACS ever held at once.
    """

    def __init__(
        self, limits: Mapping[str, int], total: int | None = None, *, default: int = 4
    ) -> None:
        if total is not None and total < 1:
            raise ValueError("the global limit must be at least 1")
        if any(limit < 1 for limit in limits.values()) or default < 1:
            raise ValueError("a per-PACS limit must be at least 1")
        self._pacs: dict[str, _PacsState] = {
            name: _PacsState(limit) for name, limit in limits.items()
        }
        self._default = default
        self.total = total
        self._in_use = 0
        # Round robin: least recently served first.
        self._turn: deque[str] = deque(self._pacs)

    def _state(self, pacs: str) -> _PacsState:
        state = self._pacs.get(pacs)
        if state is None:
            state = self._pacs[pacs] = _PacsState(self._default)
            self._turn.append(pacs)
        return state

    def slot(self, pacs: str) -> _Slot:
        return _Slot(self, pacs)

    def in_use(self, pacs: str | None = None) -> int:
        """Slots held now (on one PACS, or over all)."""
        return self._in_use if pacs is None else self._state(pacs).in_use

    def peak(self, pacs: str) -> int:
        return self._state(pacs).peak

    def _free_globally(self) -> bool:
        return self.total is None or self._in_use < self.total

    def _take(self, name: str, state: _PacsState) -> None:
        state.in_use += 1
        state.peak = max(state.peak, state.in_use)
        self._in_use += 1
        # The PACS served last goes to the end of the turn (a handful of PACS: cheap).
        self._turn.remove(name)
        self._turn.append(name)

    async def _acquire(self, pacs: str) -> None:
        state = self._state(pacs)
        if not state.waiters and state.in_use < state.limit and self._free_globally() \
                and not self._others_waiting(pacs):
            self._take(pacs, state)
            return
        waiter = _Waiter()
        state.waiters.append(waiter)
        self._dispatch()
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self._release(pacs)  # granted while being cancelled: hand it on
            else:
                state.waiters.remove(waiter)
            raise

    def _others_waiting(self, pacs: str) -> bool:
        # A caller arriving when the global limit is the bottleneck joins the turn instead of
        # taking a slot ahead of the PACS already waiting.
        return self.total is not None and any(
            s.waiters for name, s in self._pacs.items() if name != pacs
        )

    def _release(self, pacs: str) -> None:
        state = self._pacs[pacs]
        state.in_use -= 1
        self._in_use -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant freed slots to waiting callers, one PACS at a time in turn."""
        while self._free_globally():
            # The least recently served PACS that has a caller waiting and room left.
            for name in self._turn:
                state = self._pacs[name]
                if state.waiters and state.in_use < state.limit:
                    waiter = state.waiters.popleft()
                    waiter.granted = True
                    self._take(name, state)
                    waiter.event.set()
                    break
            else:
                return  # nobody waiting can be served


class _Slot:
    __slots__ = ("_limiter", "_pacs")

    def __init__(self, limiter: LocalLimiter, pacs: str) -> None:
        self._limiter = limiter
        self._pacs = pacs

    async def __aenter__(self) -> None:
        await self._limiter._acquire(self._pacs)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._limiter._release(self._pacs)
