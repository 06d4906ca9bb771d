"""What a service runs on: an established association and the dispatcher reading it.

A protocol, so that services depend on the layers below them only; the
:class:`~aiodicom.session.Session` built above them is one as it is.
"""

from __future__ import annotations

from typing import Protocol

from aiodicom.association import Association
from aiodicom.dispatcher import Dispatcher

__all__ = ["ServiceChannel"]


class ServiceChannel(Protocol):
    """An association with its dispatcher: operations send through the dispatcher and read
    their responses from it; the association gives the negotiated contexts and timeouts."""

    @property
    def association(self) -> Association: ...

    @property
    def dispatcher(self) -> Dispatcher: ...
