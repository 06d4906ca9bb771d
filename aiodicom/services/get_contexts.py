"""Which storage presentation contexts a C-GET proposes.

The peer sends each instance on a context whose transfer syntax it already has when one was
accepted, and converts otherwise; so to receive compressed objects unchanged we propose single
transfer-syntax contexts for the common compressed syntaxes, within the 128-context limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pydicom.uid as pu

from aiodicom.negotiation import MAX_CONTEXTS, ContextProposal
from aiodicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE, UNCOMPRESSED_TRANSFER_SYNTAXES

# The storage classes a PACS most often holds, for when nothing tells us what a study contains.
COMMON_STORAGE_CLASSES: tuple[str, ...] = tuple(str(uid) for uid in (
    pu.CTImageStorage, pu.EnhancedCTImageStorage, pu.MRImageStorage, pu.EnhancedMRImageStorage,
    pu.ComputedRadiographyImageStorage, pu.DigitalXRayImageStorageForPresentation,
    pu.DigitalXRayImageStorageForProcessing, pu.DigitalMammographyXRayImageStorageForPresentation,
    pu.DigitalMammographyXRayImageStorageForProcessing, pu.BreastTomosynthesisImageStorage,
    pu.UltrasoundImageStorage, pu.UltrasoundMultiFrameImageStorage,
    pu.SecondaryCaptureImageStorage, pu.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    pu.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    pu.MultiFrameTrueColorSecondaryCaptureImageStorage, pu.NuclearMedicineImageStorage,
    pu.PositronEmissionTomographyImageStorage, pu.EnhancedPETImageStorage,
    pu.XRayAngiographicImageStorage, pu.EnhancedXAImageStorage,
    pu.XRayRadiofluoroscopicImageStorage, pu.RTImageStorage, pu.RTDoseStorage,
    pu.RTStructureSetStorage, pu.RTPlanStorage, pu.VLPhotographicImageStorage,
    pu.VLEndoscopicImageStorage, pu.BasicTextSRStorage, pu.EnhancedSRStorage,
    pu.ComprehensiveSRStorage, pu.KeyObjectSelectionDocumentStorage,
    pu.GrayscaleSoftcopyPresentationStateStorage, pu.EncapsulatedPDFStorage,
    pu.SegmentationStorage, pu.SpatialRegistrationStorage, pu.RawDataStorage,
    pu.XRay3DAngiographicImageStorage, pu.OphthalmicPhotography8BitImageStorage,
    pu.DigitalIntraOralXRayImageStorageForPresentation,
))

# Lossless first: a lossless object must never come back lossy because we proposed badly.
COMPRESSED_PREFERENCE: tuple[str, ...] = tuple(str(uid) for uid in (
    pu.JPEGLosslessSV1, pu.RLELossless, pu.JPEGLSLossless, pu.JPEG2000Lossless, pu.JPEGLossless,
    pu.JPEGBaseline8Bit, pu.JPEGExtended12Bit, pu.JPEG2000, pu.JPEGLSNearLossless,
    pu.DeflatedExplicitVRLittleEndian,
))


def storage_proposals(
    sop_classes: Iterable[str] | None,
    budget: int = MAX_CONTEXTS - 1,
    transfer_syntaxes: Sequence[str] | None = None,
) -> list[ContextProposal]:
    """Contexts (SCP role) for receiving the given storage classes: one uncompressed context per
    class, then single compressed-syntax contexts, round-robin across classes, until the budget
    of contexts is used.

    With ``transfer_syntaxes``, exactly one context per class carrying those syntaxes in that
    order: for asking the peer for a given encoding, and for peers such as DCMTK's dcmqrscp
    (3.6.7) that send every instance of a class on the first context accepted for it and fail
    the sub-operation when that context's syntax differs from the stored one.
    """
    classes: Sequence[str] = list(dict.fromkeys(sop_classes or COMMON_STORAGE_CLASSES))
    if len(classes) > budget:
        classes = classes[:budget]
    if transfer_syntaxes is not None:
        if not transfer_syntaxes:
            raise ValueError("transfer_syntaxes is empty: give at least one, or None")
        chosen = tuple(str(uid) for uid in transfer_syntaxes)
        return [ContextProposal(uid, chosen, scu_role=False, scp_role=True) for uid in classes]
    proposals = [
        ContextProposal(uid, (EXPLICIT_VR_LE, IMPLICIT_VR_LE), scu_role=False, scp_role=True)
        for uid in classes
    ]
    for syntax in COMPRESSED_PREFERENCE:
        for uid in classes:
            if len(proposals) >= budget:
                return proposals
            proposals.append(ContextProposal(uid, (syntax,), scu_role=False, scp_role=True))
    return proposals


def get_proposals(
    get_sop_class_uid: str,
    sop_classes: Iterable[str] | None = None,
    transfer_syntaxes: Sequence[str] | None = None,
) -> list[ContextProposal]:
    """Everything a C-GET association proposes: the Get model, then :func:`storage_proposals`.

    Pass them to ``peer.associate(...)`` before ``session.get(...)``.
    """
    return [
        ContextProposal(get_sop_class_uid, UNCOMPRESSED_TRANSFER_SYNTAXES),
        *storage_proposals(sop_classes, MAX_CONTEXTS - 1, transfer_syntaxes),
    ]


def sop_classes_from(identifier: object) -> list[str] | None:
    """SOP classes named by a C-FIND match (SOP Classes in Study, or the SOP Class UID), or by
    the keys of a :class:`~aiodicom.query.Query`."""
    keys = getattr(identifier, "keys", None)
    if isinstance(keys, Mapping):  # a Query: its keys, not the Dataset method of that name
        identifier = keys
    get = getattr(identifier, "get", None)
    if get is None:
        return None
    for keyword in ("SOPClassesInStudy", "SOPClassUID"):
        value = get(keyword)
        if value:
            return [value] if isinstance(value, str) else [str(uid) for uid in value]
    return None
