"""Presentation context and role negotiation, as requestor and as acceptor (PS3.8 9.3.2-9.3.3,
PS3.7 D.3.3.4). Pure functions over PDU objects."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs

from aiodicom.pdu import (
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    CONTEXT_RESULT_TEXT,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
    AssociateAC,
    AssociateRQ,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
)
from aiodicom.uids import uid_name

MAX_CONTEXTS = 128  # context IDs are odd numbers 1..255


@attrs.frozen
class ContextProposal:
    """One abstract syntax we want, with the transfer syntaxes we can use for it.

    ``scp_role=True`` proposes SCP/SCU role selection so that the peer may send us requests of
    this SOP class on the association (C-STORE sub-operations of a C-GET).
    """

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]
    scu_role: bool = True
    scp_role: bool = False

    @property
    def needs_role_selection(self) -> bool:
        return self.scp_role or not self.scu_role


@attrs.frozen
class PresentationContext:
    """The negotiated outcome of one presentation context, seen from our side.

    ``we_are_scu``/``we_are_scp`` say which DIMSE roles our side may take on this context.
    """

    context_id: int
    abstract_syntax: str
    result: int
    transfer_syntax: str | None
    we_are_scu: bool
    we_are_scp: bool

    @property
    def accepted(self) -> bool:
        return self.result == ACCEPTANCE

    @property
    def result_text(self) -> str:
        return CONTEXT_RESULT_TEXT.get(self.result, f"result {self.result}")

    def describe(self) -> str:
        return f"{uid_name(self.abstract_syntax)} (context {self.context_id}): {self.result_text}"


def build_request_contexts(
    proposals: Sequence[ContextProposal],
) -> tuple[tuple[PresentationContextRQ, ...], tuple[RoleSelection, ...]]:
    """Number the proposals 1, 3, 5, ... and add a role selection item where one is needed."""
    if len(proposals) > MAX_CONTEXTS:
        raise ValueError(
            f"{len(proposals)} presentation contexts proposed; an association carries at most "
            f"{MAX_CONTEXTS}"
        )
    if not proposals:
        raise ValueError("no presentation context to propose")
    contexts = tuple(
        PresentationContextRQ(2 * index + 1, proposal.abstract_syntax, proposal.transfer_syntaxes)
        for index, proposal in enumerate(proposals)
    )
    roles: dict[str, RoleSelection] = {}
    for proposal in proposals:
        if proposal.needs_role_selection:
            # One item per SOP class (PS3.7 D.3.3.4), however many contexts carry it.
            roles[proposal.abstract_syntax] = RoleSelection(
                proposal.abstract_syntax, proposal.scu_role, proposal.scp_role
            )
    return contexts, tuple(roles.values())


def requestor_contexts(rq: AssociateRQ, ac: AssociateAC) -> dict[int, PresentationContext]:
    """Combine what we proposed with what the acceptor answered."""
    proposed_roles = {r.sop_class_uid: r for r in rq.user_information.role_selections}
    answered_roles = {r.sop_class_uid: r for r in ac.user_information.role_selections}
    outcome: dict[int, PresentationContext] = {}
    for proposal, result, transfer_syntax in _answered(rq, ac):
        scu, scp = True, False
        proposed = proposed_roles.get(proposal.abstract_syntax)
        if proposed is not None:
            answered = answered_roles.get(proposal.abstract_syntax)
            if answered is not None:
                scu = proposed.scu_role and answered.scu_role
                scp = proposed.scp_role and answered.scp_role
            else:
                # Some archives (Horos, Conquest) accept the C-GET storage contexts yet leave the
                # role reply out; they still send C-STOREs, so keep what we proposed.
                scu, scp = proposed.scu_role, proposed.scp_role
        outcome[proposal.context_id] = PresentationContext(
            proposal.context_id, proposal.abstract_syntax, result, transfer_syntax, scu, scp
        )
    return outcome


def _answered(
    rq: AssociateRQ, ac: AssociateAC
) -> Iterator[tuple[PresentationContextRQ, int, str | None]]:
    """Each proposed context with the result the answer gave it and, when accepted, its
    transfer syntax; one the answer leaves out counts as not supported. Read alike by both
    sides (:func:`requestor_contexts`, :func:`answered_contexts`)."""
    answers = {c.context_id: c for c in ac.presentation_contexts}
    for proposal in rq.presentation_contexts:
        answer = answers.get(proposal.context_id)
        if answer is None:
            yield proposal, ABSTRACT_SYNTAX_NOT_SUPPORTED, None
        else:
            accepted = answer.result == ACCEPTANCE
            yield proposal, answer.result, answer.transfer_syntax if accepted else None


TransferSyntaxPolicy = Callable[[str], Iterable[str] | None]
"""Given an abstract syntax, the transfer syntaxes we accept for it (``None``: not supported)."""


def acceptor_contexts(
    rq: AssociateRQ, supported: TransferSyntaxPolicy,
    grant_scp_role: Callable[[str], bool] | None = None,
    sending_preference: Sequence[str] = (),
) -> tuple[tuple[PresentationContextAC, ...], tuple[RoleSelection, ...]]:
    """Answer each proposed context. The transfer syntax chosen is the requestor's first one we
    support, so that storage data arrives in the encoding the sender already has.

    ``grant_scp_role(sop_class)`` says whether a requestor asking for the SCP role of that SOP
    class gets it (a C-GET SCP sends its C-STOREs to the requestor on such contexts: we are then
    their SCU); without it the requestor never gets the SCP role. On those contexts we are the
    sender: the first of ``sending_preference`` the requestor proposed is chosen (the encoding
    our data most likely have), else again the requestor's first. What the answer establishes
    is read back from it by :func:`answered_contexts`."""
    proposed_roles = {r.sop_class_uid: r for r in rq.user_information.role_selections}

    def granted(uid: str) -> bool:
        role = proposed_roles.get(uid)
        return (
            role is not None and role.scp_role and grant_scp_role is not None
            and grant_scp_role(uid)
        )

    answers: list[PresentationContextAC] = []
    # Most proposals get the same transfer syntaxes from the policy (the storage classes'
    # list): made into a set once, not once per context (a modality proposes up to 128).
    last_acceptable: Iterable[str] | None = None
    acceptable_set: frozenset[str] = frozenset()
    for proposal in rq.presentation_contexts:
        acceptable = supported(proposal.abstract_syntax)
        chosen: str | None = None
        if acceptable is None:
            result = ABSTRACT_SYNTAX_NOT_SUPPORTED
        else:
            if acceptable is not last_acceptable:
                last_acceptable, acceptable_set = acceptable, frozenset(acceptable)
            offered = [ts for ts in proposal.transfer_syntaxes if ts in acceptable_set]
            if sending_preference and granted(proposal.abstract_syntax):
                offered.sort(key=lambda ts: (
                    sending_preference.index(ts) if ts in sending_preference
                    else len(sending_preference)
                ))  # stable: the requestor's order among the rest
            chosen = offered[0] if offered else None
            result = ACCEPTANCE if chosen is not None else TRANSFER_SYNTAX_NOT_SUPPORTED
        answers.append(PresentationContextAC(proposal.context_id, result, chosen))
    roles = tuple(
        RoleSelection(uid, role.scu_role, granted(uid)) for uid, role in proposed_roles.items()
    )
    return tuple(answers), roles


def answered_contexts(rq: AssociateRQ, ac: AssociateAC) -> dict[int, PresentationContext]:
    """What our A-ASSOCIATE-AC to ``rq`` established, seen from our side as acceptor: each
    proposed context with the answer we gave it, the roles as our role selection replies
    granted them (read back from the answer, not negotiated a second time)."""
    proposed_roles = {r.sop_class_uid: r for r in rq.user_information.role_selections}
    granted = {r.sop_class_uid for r in ac.user_information.role_selections if r.scp_role}
    outcome: dict[int, PresentationContext] = {}
    for proposal, result, transfer_syntax in _answered(rq, ac):
        role = proposed_roles.get(proposal.abstract_syntax)
        # As acceptor we serve (SCP) unless the requestor gave up its SCU role; we are the SCU
        # (we send C-STOREs, for a C-GET) where we granted the requestor the SCP role.
        outcome[proposal.context_id] = PresentationContext(
            proposal.context_id, proposal.abstract_syntax, result, transfer_syntax,
            we_are_scu=proposal.abstract_syntax in granted,
            we_are_scp=role.scu_role if role is not None else True,
        )
    return outcome
