"""UIDs aiodicom proposes and recognises: transfer syntaxes and SOP classes."""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import pydicom.uid

VERIFICATION = "1.2.840.10008.1.1"

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"

# The JPIP referenced syntaxes carry no pixel data (it is fetched by URL); two of them deflate
# the data set like Deflated Explicit VR Little Endian does.
JPIP_REFERENCED = "1.2.840.10008.1.2.4.94"
JPIP_REFERENCED_DEFLATE = "1.2.840.10008.1.2.4.95"
JPIP_HTJ2K_REFERENCED = "1.2.840.10008.1.2.4.204"
JPIP_HTJ2K_REFERENCED_DEFLATE = "1.2.840.10008.1.2.4.205"

# Preference order for commands and identifiers: Explicit VR LE first because it carries VRs
# (no dictionary guesses for private tags), Implicit last as the always-supported fallback.
UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
)



class Encoding(NamedTuple):
    """How a transfer syntax encodes the data set itself (pixel data compression aside)."""

    implicit_vr: bool
    little_endian: bool
    deflated: bool


_IMPLICIT_LE = Encoding(implicit_vr=True, little_endian=True, deflated=False)
_EXPLICIT_LE = Encoding(implicit_vr=False, little_endian=True, deflated=False)
_EXPLICIT_BE = Encoding(implicit_vr=False, little_endian=False, deflated=False)
_DEFLATED_LE = Encoding(implicit_vr=False, little_endian=True, deflated=True)

# Own table rather than pydicom's UID properties: those raise for private transfer syntaxes and
# do not count the JPIP Referenced Deflate syntaxes as deflated, though their data sets are.
_SPECIAL_ENCODINGS = {
    IMPLICIT_VR_LE: _IMPLICIT_LE,
    EXPLICIT_VR_BE: _EXPLICIT_BE,
    DEFLATED_EXPLICIT_VR_LE: _DEFLATED_LE,
    JPIP_REFERENCED_DEFLATE: _DEFLATED_LE,
    JPIP_HTJ2K_REFERENCED_DEFLATE: _DEFLATED_LE,
}


def encoding_of(transfer_syntax_uid: str) -> Encoding:
    """Return how data sets in ``transfer_syntax_uid`` are encoded.

    Every transfer syntax not listed as special (explicit LE, all encapsulated ones, private
    ones) encodes the data set as explicit VR little endian (PS3.5 section 10).
    """
    return _SPECIAL_ENCODINGS.get(transfer_syntax_uid.rstrip("\0 "), _EXPLICIT_LE)


PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_STUDY_ONLY_FIND = "1.2.840.10008.5.1.4.1.2.3.1"
PATIENT_STUDY_ONLY_MOVE = "1.2.840.10008.5.1.4.1.2.3.2"
PATIENT_STUDY_ONLY_GET = "1.2.840.10008.5.1.4.1.2.3.3"
COMPOSITE_INSTANCE_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.4.2"
COMPOSITE_INSTANCE_ROOT_GET = "1.2.840.10008.5.1.4.1.2.4.3"
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
"""The well-known SOP instance every Storage Commitment N-ACTION and N-EVENT-REPORT names."""


def compressed_transfer_syntaxes() -> tuple[str, ...]:
    """Every encapsulated transfer syntax pydicom knows: storage contexts accept them as-is."""
    return tuple(
        str(uid) for uid in pydicom.uid.AllTransferSyntaxes
        if uid not in UNCOMPRESSED_TRANSFER_SYNTAXES and pydicom.uid.UID(uid).is_compressed
    )


@cache
def storage_sop_classes() -> tuple[str, ...]:
    """All non-retired storage SOP classes in pydicom's UID registry."""
    from pydicom._uid_dict import UID_dictionary  # the registry is only exposed this way

    return tuple(
        uid
        for uid, (name, kind, _info, retired, _keyword) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name and not retired
        and "Storage Commitment" not in name and "Media Storage Directory" not in name
    )


def uid_name(uid: str) -> str:
    """The registered name of a UID, or the UID itself when pydicom does not know it."""
    name = pydicom.uid.UID(uid).name
    return str(name) if name else uid


# Identifies this implementation in A-ASSOCIATE and File Meta Information; derived once from a
# uuid5 so it never changes between releases of the same major version.
IMPLEMENTATION_CLASS_UID = "2.25.138065235345922781079752495058252472464"
IMPLEMENTATION_VERSION_NAME = "AIODICOM_010"
