"""The acceptor side: associations other AEs open to us (Verification and Storage SCP, and
whatever operations a server adds: the embedded Q/R SCP's C-FIND, C-MOVE and C-GET).

It reuses the association and DIMSE layers of the requestor; only the negotiation policy and the
request handlers differ. C-STOREs and C-ECHOs are answered while the association is read (they
are short); the operations of :attr:`AcceptorPolicy.operations` run as tasks of their own, so
that reading goes on meanwhile: a C-CANCEL must reach them, and a C-GET reads the C-STORE-RSPs
to its own sub-operations through the same dispatcher.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import cache
from types import TracebackType

import anyio
import anyio.abc
import attrs

from aiodicom.access import AccessPolicy
from aiodicom.association import DEFAULT_MAX_PDU_LENGTH, Association, Timeouts
from aiodicom.dimse import C_CANCEL_RQ, NO_DATASET, DataSetWriter, DimseMessage
from aiodicom.dispatcher import Dispatcher
from aiodicom.errors import DicomError
from aiodicom.limits import LOCAL_LIMIT_EXCEEDED, AssociationGate, Limits
from aiodicom.negotiation import PresentationContext, acceptor_contexts, answered_contexts
from aiodicom.pdu import (
    APPLICATION_CONTEXT_NAME,
    AssociateAC,
    AssociateRJ,
    AssociateRQ,
    UserInformation,
)
from aiodicom.reassembly import DataSetOpener
from aiodicom.services.storage_scp import answer_request, release_spool
from aiodicom.spool import temporary_spool
from aiodicom.status import Status
from aiodicom.transport import Connection, Listener
from aiodicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION,
    compressed_transfer_syntaxes,
    storage_sop_classes,
)


@attrs.frozen
class IncomingStore:
    """A C-STORE-RQ that arrived at our acceptor, with what is known about its association."""

    message: DimseMessage
    context: PresentationContext
    calling_ae_title: str
    called_ae_title: str
    #: The IP address the association comes from (``None`` when unknown).
    peer_address: str | None = None
    #: The acceptor's limits (what a deflated data set may be inflated to, to check it).
    limits: Limits | None = None


StoreHandler = Callable[[IncomingStore], Awaitable[DimseMessage]]
"""Handles one incoming C-STORE-RQ and returns the C-STORE-RSP to send."""

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

log = logging.getLogger("aiodicom.acceptor")


@attrs.frozen
class IncomingOperation:
    """A request (C-FIND, C-MOVE, C-GET...) that an operation handler serves on its own task.

    The handler sends every response itself through ``association`` (``send_message``); a
    C-GET's C-STOREs go through ``dispatcher`` as any SCU operation's would. ``cancelled`` is
    set when a C-CANCEL-RQ for it arrives: the handler ends with status 0xFE00 at its next step.
    """

    message: DimseMessage
    context: PresentationContext
    calling_ae_title: str
    called_ae_title: str
    association: Association
    dispatcher: Dispatcher
    cancelled: anyio.Event


OperationHandler = Callable[[IncomingOperation], Awaitable[None]]
"""Serves one request to its final response; errors it lets out abort the association."""


@attrs.frozen
class ServedOperations:
    """Request handlers served beside C-ECHO and C-STORE, with what the negotiation needs."""

    #: Command field of the request (C_FIND_RQ, ...) -> its handler.
    handlers: Mapping[int, OperationHandler]
    #: Abstract syntaxes these handlers serve, and the transfer syntaxes accepted for them.
    sop_classes: Mapping[str, tuple[str, ...]]
    #: Grant a requestor the SCP role it asks for storage SOP classes (a C-GET's C-STOREs go
    #: to it on those contexts).
    storage_scp_role: bool = False
    #: On those contexts we send: the transfer syntaxes chosen first when the requestor offers
    #: them (the ones our data are stored in, as they go unconverted).
    sending_preference: tuple[str, ...] = ()
    #: Operations served at once on one association; PS3.7 allows one without an asynchronous
    #: operations window, which we never grant. A request beyond it is refused (0x0213).
    max_running: int = 1

DataOpenerFactory = Callable[
    [Mapping[int, PresentationContext], str, str | None], DataSetOpener
]
"""Given an association's contexts, its calling AE title and its source address: where its
incoming data sets go."""


@attrs.define
class AcceptorPolicy:
    """What our acceptor agrees to."""

    ae_title: str
    timeouts: Timeouts = attrs.Factory(Timeouts)
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH
    require_called_ae_title: bool = False
    store_handler: StoreHandler | None = None
    #: Given an association's contexts, the calling AE title and the source address, chooses
    #: where incoming data sets go (see :class:`~aiodicom.reassembly.DataSetOpener`); default:
    #: memory.
    data_opener: DataOpenerFactory | None = None
    #: C-FIND/C-MOVE/C-GET and the like, served on tasks of their own (see
    #: :class:`IncomingOperation`); ``None``: only C-ECHO and C-STORE.
    operations: ServedOperations | None = None
    #: Other short requests answered while the association is read, as C-STOREs are: command
    #: field (N_EVENT_REPORT_RQ, ...) -> handler returning the response.
    answered_inline: Mapping[int, StoreHandler] = attrs.Factory(dict)
    #: Further abstract syntaxes accepted (those of ``answered_inline``), with their transfer
    #: syntaxes.
    sop_classes: Mapping[str, tuple[str, ...]] = attrs.Factory(dict)
    #: SOP classes whose requestor gets the SCP role it asks for: a Storage Commitment SCP
    #: opening an association to report to us proposes to be the SCP (PS3.4 J.3.3), and we the
    #: SCU receiving its N-EVENT-REPORT.
    scp_role_classes: frozenset[str] = frozenset()
    #: Who may associate (AE titles, source networks, User Identity): see
    #: :class:`~aiodicom.access.AccessPolicy`; by default anyone.
    access: AccessPolicy = attrs.Factory(AccessPolicy)
    #: What peers may cost us (see :class:`~aiodicom.limits.Limits`).
    limits: Limits = attrs.Factory(Limits)
    #: Counts the associations served under this policy against ``limits``.
    gate: AssociationGate = attrs.Factory(
        lambda policy: AssociationGate(policy.limits), takes_self=True
    )

    def __attrs_post_init__(self) -> None:
        # The tables every negotiation reads, built with the policy rather than during the
        # first association (about half a millisecond of its answer in a fresh process).
        _storage_classes()
        _storage_transfer_syntaxes()

    def transfer_syntaxes_for(self, abstract_syntax: str) -> Iterable[str] | None:
        if abstract_syntax == VERIFICATION:
            return UNCOMPRESSED_TRANSFER_SYNTAXES
        if self.operations is not None and abstract_syntax in self.operations.sop_classes:
            return self.operations.sop_classes[abstract_syntax]
        if abstract_syntax in self.sop_classes:
            return self.sop_classes[abstract_syntax]
        if self.store_handler is not None and abstract_syntax in _storage_classes():
            return _storage_transfer_syntaxes()
        return None

    def decide(self, rq: AssociateRQ) -> AssociateAC | AssociateRJ:
        if rq.application_context_name != APPLICATION_CONTEXT_NAME:
            return AssociateRJ(result=1, source=1, reason=2)
        if rq.protocol_version & 1 == 0:
            return AssociateRJ(result=1, source=2, reason=2)
        if self.require_called_ae_title and rq.called_ae_title != self.ae_title:
            return AssociateRJ(result=1, source=1, reason=7)
        answers, roles = acceptor_contexts(
            rq, self.transfer_syntaxes_for, self._grant_scp_role, self._sending_preference
        )
        return AssociateAC(
            called_ae_title=rq.called_ae_title,
            calling_ae_title=rq.calling_ae_title,
            presentation_contexts=answers,
            user_information=UserInformation(
                max_pdu_length=self.max_pdu_length,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version_name=IMPLEMENTATION_VERSION_NAME,
                role_selections=roles,
            ),
        )

    async def answer(
        self, rq: AssociateRQ, peer_address: str | None
    ) -> AssociateAC | AssociateRJ:
        """:meth:`decide`, then the access checks (AE titles, then User Identity: the
        verifier is not bothered for a request refused anyway)."""
        answer = self.decide(rq)
        if isinstance(answer, AssociateRJ):
            return answer
        rejection = self.access.check_titles(rq)
        if rejection is not None:
            log.info("rejected %s calling %s from %s: AE title not allowed",
                     rq.calling_ae_title, rq.called_ae_title, peer_address)
            return rejection
        identity = await self.access.check_identity(rq, peer_address, self.timeouts.acse)
        if isinstance(identity, AssociateRJ):
            return identity
        if identity is not None:
            answer = attrs.evolve(answer, user_information=attrs.evolve(
                answer.user_information, user_identity_ac=identity
            ))
        return answer

    def contexts_for(self, rq: AssociateRQ, ac: AssociateAC) -> dict[int, PresentationContext]:
        return answered_contexts(rq, ac)

    @property
    def _sending_preference(self) -> tuple[str, ...]:
        return self.operations.sending_preference if self.operations is not None else ()

    def _grant_scp_role(self, abstract_syntax: str) -> bool:
        if abstract_syntax in self.scp_role_classes:
            return True
        return (
            self.operations is not None and self.operations.storage_scp_role
            and abstract_syntax in _storage_classes()
        )


@cache
def _storage_classes() -> frozenset[str]:
    return frozenset(storage_sop_classes())


@cache
def _storage_transfer_syntaxes() -> tuple[str, ...]:
    return UNCOMPRESSED_TRANSFER_SYNTAXES + compressed_transfer_syntaxes()


async def serve_association(connection: Connection, policy: AcceptorPolicy) -> None:
    """Serve one incoming connection until the association ends."""
    peer_address = connection.peer_address
    if not policy.access.address_allowed(peer_address):
        # Closed unread: nothing from a host outside the allowed networks reaches the decoder.
        log.info("refused a connection from %s: not in the allowed networks", peer_address)
        await connection.aclose()
        return
    counted: list[str] = []  # the calling AE title, once its association is counted

    async def decide(rq: AssociateRQ) -> AssociateAC | AssociateRJ:
        answer = await policy.answer(rq, peer_address)
        if isinstance(answer, AssociateAC):
            if not policy.gate.enter_ae(rq.calling_ae_title):
                log.info("rejected %s: %d associations of it at once already",
                         rq.calling_ae_title, policy.limits.max_associations_per_ae)
                return LOCAL_LIMIT_EXCEEDED
            counted.append(rq.calling_ae_title)
        return answer

    try:
        await _serve_accepted(connection, policy, decide, peer_address)
    finally:
        for ae_title in counted:
            policy.gate.leave_ae(ae_title)


def _spooling(opener: DataSetOpener | None, limits: Limits) -> DataSetOpener:
    """``opener``, and where it has no writer of its own the data set waits in a temporary
    file past ``limits.max_data_set_memory``: no path holds a large data set in memory."""

    def open_data(context_id: int, command: dict[str, object]) -> DataSetWriter | None:
        chosen = opener(context_id, command) if opener is not None else None
        if chosen is not None:
            return chosen
        return temporary_spool(limits.spool_directory, limits.max_data_set_memory)

    return open_data


async def _serve_accepted(
    connection: Connection, policy: AcceptorPolicy,
    decide: Callable[[AssociateRQ], Awaitable[AssociateAC | AssociateRJ]],
    peer_address: str | None,
) -> None:
    association = await Association.accept(
        connection, decide, timeouts=policy.timeouts, max_pdu_length=policy.max_pdu_length,
        contexts_for=policy.contexts_for, limits=policy.limits,
    )
    if association is None:
        return
    connection.established = True
    assert association.request is not None
    request = association.request
    association.open_data = _spooling(
        policy.data_opener(association.contexts, request.calling_ae_title, peer_address)
        if policy.data_opener is not None else None,
        policy.limits,
    )

    async def receive(message: DimseMessage, context: PresentationContext) -> DimseMessage:
        assert policy.store_handler is not None
        return await policy.store_handler(IncomingStore(
            message, context, request.calling_ae_title, request.called_ae_title, peer_address,
            policy.limits,
        ))

    operations = policy.operations
    running: dict[int, anyio.Event] = {}  # Message ID -> its cancel event, while it runs

    async def operate(incoming: IncomingOperation, message_id: int) -> None:
        try:
            assert operations is not None
            async with association.working():
                await operations.handlers[incoming.message.command_field](incoming)
        except DicomError as exc:
            log.info("%s from %s ended the association: %s", incoming.message.name,
                     incoming.calling_ae_title, exc)
            await association.abort()
        except Exception:
            # The peer waits for a final response that will never come: end it here.
            log.exception("%s from %s failed", incoming.message.name, incoming.calling_ae_title)
            await association.abort()
        finally:
            running.pop(message_id, None)
            release_spool(incoming.message)

    async def handle(message: DimseMessage) -> None:
        command_field = message.command_field
        if command_field == C_CANCEL_RQ:
            # No response of its own (PS3.7 9.3.2.3); one for nothing running is ignored.
            cancelled = running.get(message.message_id_being_responded_to or 0)
            if cancelled is not None:
                cancelled.set()
            return
        if operations is not None and command_field in operations.handlers:
            context = association.contexts.get(message.context_id)
            message_id = message.message_id or 0
            if context is None or not context.accepted:
                await association.send_message(_refusal(message, Status.SOP_CLASS_NOT_SUPPORTED))
            elif len(running) >= operations.max_running or message_id in running:
                await association.send_message(_refusal(message, Status.RESOURCE_LIMITATION))
            else:
                cancelled = running[message_id] = anyio.Event()
                tasks.start_soon(operate, IncomingOperation(
                    message, context, request.calling_ae_title, request.called_ae_title,
                    association, dispatcher, cancelled,
                ), message_id)
            return
        inline = policy.answered_inline.get(command_field)
        if inline is not None:
            context = association.contexts.get(message.context_id)
            if context is None or not context.accepted:
                await association.send_message(_refusal(message, Status.SOP_CLASS_NOT_SUPPORTED))
            else:
                await association.send_message(await inline(IncomingStore(
                    message, context, request.calling_ae_title, request.called_ae_title,
                    peer_address, policy.limits,
                )))
            return
        # Read when each request comes: the store handler may be replaced meanwhile.
        store = receive if policy.store_handler is not None else None
        try:
            answer = await answer_request(message, association.contexts, store)
        finally:
            release_spool(message)
        await association.send_message(answer)

    dispatcher = Dispatcher(association, request_handler=handle)
    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as tasks:
            try:
                await dispatcher.run()
            except DicomError as exc:
                failure = exc  # re-raised outside the group, unwrapped
            # The association ended: operations still running have nobody to answer.
            tasks.cancel_scope.cancel()
    finally:
        if not association.closed.is_set():
            await association.abort()
    if failure is not None:
        raise failure


def _refusal(request: DimseMessage, status: int) -> DimseMessage:
    """A final response refusing ``request`` outright; the association lives on."""
    return DimseMessage(
        request.context_id,
        {
            "CommandField": request.command_field | 0x8000,
            "MessageIDBeingRespondedTo": request.message_id,
            "AffectedSOPClassUID": request.command.get("AffectedSOPClassUID"),
            "CommandDataSetType": NO_DATASET,
            "Status": status,
        },
        None,
    )



async def serve_connection(connection: Connection, policy: AcceptorPolicy) -> None:
    """Serve one incoming connection, keeping its failure to itself: one misbehaving peer must
    never take the listening side (a client's acceptor, the Q/R SCP) down with it."""
    try:
        await serve_association(connection, policy)
    except DicomError as exc:
        log.info("incoming association ended: %s", exc)
    except Exception:
        log.exception("incoming association failed")
    finally:
        # Whatever way it ended, the socket must not outlive it (closing twice is harmless).
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await connection.aclose()


async def leave_serving(
    tasks: anyio.abc.TaskGroup,
    listener: Listener | None,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool | None:
    """End a listening side's task group (the client's acceptor, the Q/R SCP) and close its
    listener, so that the caller gets its own exception, never an internal ExceptionGroup.

    Associations still open are cancelled with their tasks. The block's own error is the
    caller's: handed to the task group it would come back wrapped, which ``except DicomError``
    does not catch; our serving tasks never fail (they log instead), so nothing else is lost.
    A cancellation must reach the task group's cancel scope, which decides whether it was its
    own (swallowed) or an outer one (propagated). A group holding several errors (only possible
    if several internal tasks failed) stays a group: picking one would hide the others.
    """
    try:
        tasks.cancel_scope.cancel()
        own_error = exc is not None and not isinstance(exc, anyio.get_cancelled_exc_class())
        try:
            if own_error:
                # True from the task group would only say it swallowed its own cancellation:
                # never let that suppress the caller's error.
                await tasks.__aexit__(None, None, None)
                return None
            return await tasks.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
    finally:
        if listener is not None:
            with anyio.CancelScope(shield=True):
                await listener.aclose()

__all__ = [
    "AcceptorPolicy",
    "IncomingOperation",
    "IncomingStore",
    "OperationHandler",
    "ServedOperations",
    "StoreHandler",
    "leave_serving",
    "serve_association",
    "serve_connection",
]
