"""Presentation contexts and roles as the acceptor answers them, and as it then sees them."""

from __future__ import annotations

import attrs

from aiodicom import acceptor
from aiodicom.acceptor import AcceptorPolicy
from aiodicom.negotiation import PresentationContext, acceptor_contexts, answered_contexts
from aiodicom.pdu import (
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
    AssociateAC,
    AssociateRQ,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
    UserInformation,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
UNKNOWN = "1.2.3.4.5.6"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_LS = "1.2.840.10008.1.2.4.80"


def request(*contexts: tuple[int, str, tuple[str, ...]], roles: tuple[RoleSelection, ...] = ()
            ) -> AssociateRQ:
    return AssociateRQ(
        "US", "THEM",
        tuple(PresentationContextRQ(cid, uid, syntaxes) for cid, uid, syntaxes in contexts),
        UserInformation(max_pdu_length=16384, role_selections=roles),
    )


def supported(uid: str) -> tuple[str, ...] | None:
    # Each call hands out the same tuple for storage, as the acceptor's policy does.
    return STORAGE if uid in (CT, MR) else (IMPLICIT,) if uid == FIND else None


STORAGE = (IMPLICIT, EXPLICIT)


def test_the_answer_takes_the_requestors_first_supported_syntax_per_context() -> None:
    rq = request(
        (1, CT, (JPEG_LS, EXPLICIT, IMPLICIT)), (3, MR, (IMPLICIT,)), (5, FIND, (EXPLICIT,)),
        (7, UNKNOWN, (IMPLICIT,)),
    )
    answers, roles = acceptor_contexts(rq, supported)
    assert answers == (
        PresentationContextAC(1, ACCEPTANCE, EXPLICIT),
        PresentationContextAC(3, ACCEPTANCE, IMPLICIT),
        PresentationContextAC(5, TRANSFER_SYNTAX_NOT_SUPPORTED, None),
        PresentationContextAC(7, ABSTRACT_SYNTAX_NOT_SUPPORTED, None),
    )
    assert roles == ()


def test_the_contexts_we_act_on_are_those_the_answer_gave() -> None:
    rq = request(
        (1, CT, (EXPLICIT,)), (3, FIND, (EXPLICIT,)), (5, UNKNOWN, (IMPLICIT,)),
        (7, MR, (IMPLICIT,)),
    )
    ac = AssociateAC("US", "THEM", (
        PresentationContextAC(1, ACCEPTANCE, EXPLICIT),
        PresentationContextAC(3, TRANSFER_SYNTAX_NOT_SUPPORTED, EXPLICIT),
        PresentationContextAC(5, ABSTRACT_SYNTAX_NOT_SUPPORTED, None),
        # context 7 left unanswered
    ))
    contexts = answered_contexts(rq, ac)
    assert contexts == {
        1: PresentationContext(1, CT, ACCEPTANCE, EXPLICIT, we_are_scu=False, we_are_scp=True),
        # Not accepted: no transfer syntax, whatever the answer's item carried.
        3: PresentationContext(3, FIND, TRANSFER_SYNTAX_NOT_SUPPORTED, None, False, True),
        5: PresentationContext(5, UNKNOWN, ABSTRACT_SYNTAX_NOT_SUPPORTED, None, False, True),
        7: PresentationContext(7, MR, ABSTRACT_SYNTAX_NOT_SUPPORTED, None, False, True),
    }


def test_roles_are_read_back_from_the_role_selection_replies() -> None:
    # A C-GET requestor: SCP role for CT (granted), for MR (refused); SCU role given up for MR.
    rq = request(
        (1, CT, (EXPLICIT,)), (3, MR, (EXPLICIT,)), (5, FIND, (IMPLICIT,)),
        roles=(RoleSelection(CT, True, True), RoleSelection(MR, False, True)),
    )
    answers, roles = acceptor_contexts(rq, supported, grant_scp_role=lambda uid: uid == CT)
    assert roles == (RoleSelection(CT, True, True), RoleSelection(MR, False, False))
    contexts = answered_contexts(rq, AssociateAC("US", "THEM", answers, UserInformation(
        max_pdu_length=0, role_selections=roles,
    )))
    assert [(c.we_are_scu, c.we_are_scp) for c in contexts.values()] == [
        (True, True),    # we send its C-STOREs, and still take the requestor's requests
        (False, False),  # neither: the requestor gave up the SCU role, the SCP role refused
        (False, True),
    ]


def test_the_acceptor_answers_once_and_keeps_what_it_answered() -> None:
    policy = AcceptorPolicy(ae_title="US", sop_classes={CT: STORAGE})
    rq = request((1, CT, (EXPLICIT, IMPLICIT)), (3, MR, (IMPLICIT,)))
    ac = policy.decide(rq)
    assert isinstance(ac, AssociateAC)
    assert policy.contexts_for(rq, ac) == {
        1: PresentationContext(1, CT, ACCEPTANCE, EXPLICIT, we_are_scu=False, we_are_scp=True),
        3: PresentationContext(3, MR, ABSTRACT_SYNTAX_NOT_SUPPORTED, None, False, True),
    }
    # An answer changed after the decision (another transfer syntax) is what counts.
    changed = attrs.evolve(ac, presentation_contexts=(
        PresentationContextAC(1, ACCEPTANCE, IMPLICIT), ac.presentation_contexts[1],
    ))
    assert policy.contexts_for(rq, changed)[1].transfer_syntax == IMPLICIT


def test_the_tables_a_negotiation_reads_are_built_with_the_policy() -> None:
    # Not during the first association, whose answer they delayed by most of a millisecond.
    acceptor._storage_classes.cache_clear()
    acceptor._storage_transfer_syntaxes.cache_clear()
    AcceptorPolicy(ae_title="US")
    assert acceptor._storage_classes.cache_info().currsize == 1
    assert acceptor._storage_transfer_syntaxes.cache_info().currsize == 1
