"""Who may associate with our acceptor (the client's Storage SCP, the embedded Q/R SCP) and
whose C-STOREs a running C-MOVE takes: one :class:`AccessPolicy`.

Checked in this order, each answer per PS3.8 9.3.4 (Table 9-21) where the standard has one:

* the source address, before a byte is read: outside ``networks`` the connection is closed at
  once, unanswered (no PDU from such a host ever reaches the decoder; PS3.8 has no rejection
  reason for an address);
* the called AE title: with ``calling_ae_titles`` given per called AE title, one not listed is
  rejected-permanent, service-user, "called-AE-title-not-recognized" (reason 7);
* the calling AE title: one not allowed (for that called AE title) is rejected-permanent,
  service-user, "calling-AE-title-not-recognized" (reason 3);
* the User Identity (PS3.7 D.3.3.7), given to ``verify_identity``: refused (or missing when
  an identity is required) is rejected-permanent, service-provider (ACSE related function),
  "no-reason-given"; a verifier that fails or takes longer than the ACSE timeout is
  rejected-transient, same source and reason (trying again later may succeed).

Deliveries (C-STOREs reaching our acceptor while a C-MOVE of ours runs) go to that move only
when they come from the PACS it was sent to (the calling AE title is the title we called; the
source address is the one we connected to, any loopback address counting as one) and carry its
Move Originator Message ID; see :mod:`aiodicom.routing`.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from enum import IntEnum

import anyio
import attrs

from aiodicom.pdu import AssociateRJ, AssociateRQ, UserIdentityAC

log = logging.getLogger("aiodicom.access")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: PS3.8 Table 9-21: rejected-permanent / rejected-transient.
REJECTED_PERMANENT, REJECTED_TRANSIENT = 1, 2
#: Sources: DICOM UL service-user; service-provider (ACSE related function).
SERVICE_USER, SERVICE_PROVIDER_ACSE = 1, 2
#: Reasons for source 1 (service-user); source 2 has 1 (no-reason-given) too.
NO_REASON_GIVEN, CALLING_AE_NOT_RECOGNIZED, CALLED_AE_NOT_RECOGNIZED = 1, 3, 7


class IdentityType(IntEnum):
    """User-Identity-Type of the User Identity sub-item (PS3.7 D.3.3.7.1)."""

    USERNAME = 1
    USERNAME_AND_PASSCODE = 2
    KERBEROS = 3
    SAML = 4
    JWT = 5


@attrs.frozen
class UserIdentity:
    """A User Identity an association requestor sent, with who sent it: what a
    ``verify_identity`` callable decides on.

    ``primary_field`` is the username (types 1 and 2, UTF-8), the Kerberos service ticket, the
    SAML assertion or the JSON Web Token; ``secondary_field`` the passcode (type 2 only).
    """

    identity_type: int
    primary_field: bytes = attrs.field(repr=False)
    secondary_field: bytes = attrs.field(repr=False)
    positive_response_requested: bool
    calling_ae_title: str
    called_ae_title: str
    peer_address: str | None

    @property
    def username(self) -> str | None:
        """The username (types 1 and 2), ``None`` for the other types."""
        if self.identity_type not in (IdentityType.USERNAME, IdentityType.USERNAME_AND_PASSCODE):
            return None
        return self.primary_field.decode("utf-8", "replace")

    @property
    def passcode(self) -> str | None:
        """The passcode (type 2), ``None`` for the other types."""
        if self.identity_type != IdentityType.USERNAME_AND_PASSCODE:
            return None
        return self.secondary_field.decode("utf-8", "replace")


IdentityVerdict = bool | bytes | None
"""``True``: accepted; ``bytes`` (even empty): accepted, with this server response when the
requestor asked for a positive response (a Kerberos server ticket, a SAML response, a JWT);
``False`` or ``None``: rejected."""

IdentityVerifier = Callable[[UserIdentity], IdentityVerdict | Awaitable[IdentityVerdict]]
"""Decides on a :class:`UserIdentity`; plain or async."""


def _networks(value: Iterable[str | Network] | None) -> tuple[Network, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    return tuple(ipaddress.ip_network(item, strict=False) for item in value)


def _titles(
    value: Collection[str] | Mapping[str, Collection[str]] | None,
) -> frozenset[str] | Mapping[str, frozenset[str]] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {called.strip(): _title_set(calling) for called, calling in value.items()}
    return _title_set(value)


def _title_set(titles: Collection[str]) -> frozenset[str]:
    # One title given alone is one title, not the set of its characters.
    return frozenset([titles.strip()] if isinstance(titles, str) else (t.strip() for t in titles))


@functools.lru_cache(maxsize=256)
def normalized_address(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address as text, IPv4-mapped IPv6 addresses as IPv4; ``None`` if not one.

    Kept for the last 256 addresses: every delivery to a C-MOVE compares its sender's with the
    PACS's, and parsing one cost more than the rest of that check."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no IPv6 zone (fe80::1%eth0)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def same_host(a: str | None, b: str | None) -> bool:
    """Whether two peer addresses are one host: equal, or both loopback (a PACS on this
    machine may connect back from 127.0.0.1 though we reached it at ::1)."""
    first, second = normalized_address(a), normalized_address(b)
    if first is None or second is None:
        return False
    return first == second or (first.is_loopback and second.is_loopback)


@attrs.frozen
class AccessPolicy:
    """Who may associate with an acceptor, and whose deliveries a C-MOVE takes. The default
    lets every AE in from anywhere (as before), yet deliveries are always checked (see the
    module docstring).

    ``calling_ae_titles``: the calling AE titles allowed; or, as a mapping, called AE title ->
    the calling AE titles allowed to call it (a called AE title not in the mapping is then
    not recognized). ``None``: any.

    ``networks``: source addresses or networks (``"10.1.0.0/16"``, ``"::1"``, ipaddress
    values) connections are taken from; ``None``: any. Others are closed unanswered.

    ``verify_identity``: called with each requestor's :class:`UserIdentity` (sync or async);
    see :data:`IdentityVerdict` for what it returns. A plain function runs on the event loop:
    keep it to a lookup; ask a directory or token service from an async one (both are bounded
    by the ACSE timeout). ``require_identity``: with a verifier, a
    requestor sending no User Identity is rejected (``False``: let it in unverified).

    ``deliveries_by_uids``: also give a C-MOVE the deliveries that carry no Move Originator
    Message ID, when they come from its PACS and their UIDs are within what it asked for
    (for PACS that never fill the originator in; weaker, off by default).
    ``check_delivery_address``: a delivery must come from the address we sent the C-MOVE to
    (turn off for a PACS that sends from another address than it listens on, a cluster).
    """

    calling_ae_titles: frozenset[str] | Mapping[str, frozenset[str]] | None = attrs.field(
        default=None, converter=_titles
    )
    networks: tuple[Network, ...] | None = attrs.field(default=None, converter=_networks)
    verify_identity: IdentityVerifier | None = None
    require_identity: bool = True
    deliveries_by_uids: bool = False
    check_delivery_address: bool = True

    def address_allowed(self, address: str | None) -> bool:
        """Whether a connection from ``address`` is served (an unknown address is not, when
        networks are given)."""
        if self.networks is None:
            return True
        ip = normalized_address(address)
        return ip is not None and any(ip in network for network in self.networks)

    def check_titles(self, rq: AssociateRQ) -> AssociateRJ | None:
        """The rejection an A-ASSOCIATE-RQ gets for its AE titles, ``None`` if they pass."""
        allowed = self.calling_ae_titles
        if allowed is None:
            return None
        calling, called = rq.calling_ae_title.strip(), rq.called_ae_title.strip()
        if isinstance(allowed, Mapping):
            if called not in allowed:
                return AssociateRJ(REJECTED_PERMANENT, SERVICE_USER, CALLED_AE_NOT_RECOGNIZED)
            allowed = allowed[called]
        if calling not in allowed:
            return AssociateRJ(REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNIZED)
        return None

    async def check_identity(
        self, rq: AssociateRQ, peer_address: str | None, timeout: float | None
    ) -> AssociateRJ | UserIdentityAC | None:
        """The rejection an A-ASSOCIATE-RQ gets for its User Identity; else the sub-item to
        answer with (a positive response was asked for) or ``None``."""
        verify = self.verify_identity
        sent = rq.user_information.user_identity_rq
        if verify is None:
            return None  # not verified: PS3.7 lets the acceptor ignore it, answering nothing
        if sent is None:
            if not self.require_identity:
                return None
            log.info("rejected %s: no User Identity sent", rq.calling_ae_title)
            return AssociateRJ(REJECTED_PERMANENT, SERVICE_PROVIDER_ACSE, NO_REASON_GIVEN)
        identity = UserIdentity(
            sent.identity_type, sent.primary_field, sent.secondary_field,
            sent.positive_response_requested, rq.calling_ae_title.strip(),
            rq.called_ae_title.strip(), peer_address,
        )
        try:
            with anyio.fail_after(timeout):
                verdict = verify(identity)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
        except Exception:
            # TimeoutError included: the requestor waits for our answer no longer than we do.
            log.exception("User Identity verification failed for %s", rq.calling_ae_title)
            return AssociateRJ(REJECTED_TRANSIENT, SERVICE_PROVIDER_ACSE, NO_REASON_GIVEN)
        if verdict is not True and not isinstance(verdict, bytes):
            # Only an explicit yes lets a requestor in: anything else (False, None, a value of
            # another type by mistake) is a refusal.
            log.info("rejected %s: User Identity %r refused", rq.calling_ae_title, identity)
            return AssociateRJ(REJECTED_PERMANENT, SERVICE_PROVIDER_ACSE, NO_REASON_GIVEN)
        if not sent.positive_response_requested:
            return None
        response = verdict if isinstance(verdict, bytes) else b""  # username types: empty
        if len(response) > 0xFFFF:
            log.error("User Identity server response of %d bytes does not fit the sub-item "
                      "(65535 at most): association rejected", len(response))
            return AssociateRJ(REJECTED_TRANSIENT, SERVICE_PROVIDER_ACSE, NO_REASON_GIVEN)
        return UserIdentityAC(response)


__all__ = [
    "AccessPolicy",
    "IdentityType",
    "IdentityVerdict",
    "IdentityVerifier",
    "UserIdentity",
    "normalized_address",
    "same_host",
]
