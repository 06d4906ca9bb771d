"""The Query/Retrieve information models as tables: levels, SOP classes, and keys per level.

What PS3.4 Annex C (and Annex K for the worklist) says about each model and level, with no
behaviour beyond looking things up: which levels a model has, its SOP classes, the unique and
required keys of a level, and which level an attribute belongs to.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import aiodicom.uids as uids

__all__ = [
    "LEVEL_ORDER",
    "QUERY_KEYWORDS",
    "STEP_ONLY_KEYS",
    "STEP_SEQUENCE",
    "Level",
    "QueryModel",
    "key_level",
    "with_required_keys",
]


class Level(enum.Enum):
    """Query/Retrieve Level (0008,0052); the value is the string sent on the wire."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def unique_key(self) -> str:
        """The keyword of the level's unique key (PatientID, StudyInstanceUID, ...)."""
        return _UNIQUE_KEY[self]


# Top to bottom; a model's levels are a part of it (Study Root starts at STUDY).
LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)


class QueryModel(enum.Enum):
    """The information model, which decides the SOP classes and the levels available."""

    PATIENT_ROOT = "Patient Root"
    STUDY_ROOT = "Study Root"
    PATIENT_STUDY_ONLY = "Patient/Study Only"
    WORKLIST = "Modality Worklist"

    @property
    def find_sop_class(self) -> str | None:
        """The C-FIND SOP Class UID of the model."""
        return _SOP_CLASSES[self][0]

    @property
    def move_sop_class(self) -> str | None:
        """The C-MOVE SOP Class UID, or ``None`` where the model defines none (worklist)."""
        return _SOP_CLASSES[self][1]

    @property
    def get_sop_class(self) -> str | None:
        """The C-GET SOP Class UID, or ``None`` where the model defines none (worklist)."""
        return _SOP_CLASSES[self][2]

    @property
    def levels(self) -> tuple[Level, ...]:
        """The levels of the model, top first (empty for the worklist, which has none)."""
        return _MODEL_LEVELS[self]


# (find, move, get) SOP Class UIDs; the worklist defines only C-FIND.
_SOP_CLASSES: dict[QueryModel, tuple[str | None, str | None, str | None]] = {
    QueryModel.PATIENT_ROOT: (
        uids.PATIENT_ROOT_FIND,
        uids.PATIENT_ROOT_MOVE,
        uids.PATIENT_ROOT_GET,
    ),
    QueryModel.STUDY_ROOT: (uids.STUDY_ROOT_FIND, uids.STUDY_ROOT_MOVE, uids.STUDY_ROOT_GET),
    QueryModel.PATIENT_STUDY_ONLY: (
        uids.PATIENT_STUDY_ONLY_FIND,
        uids.PATIENT_STUDY_ONLY_MOVE,
        uids.PATIENT_STUDY_ONLY_GET,
    ),
    QueryModel.WORKLIST: (uids.MODALITY_WORKLIST_FIND, None, None),
}

_MODEL_LEVELS: dict[QueryModel, tuple[Level, ...]] = {
    QueryModel.PATIENT_ROOT: (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE),
    QueryModel.STUDY_ROOT: (Level.STUDY, Level.SERIES, Level.IMAGE),
    QueryModel.PATIENT_STUDY_ONLY: (Level.PATIENT, Level.STUDY),
    QueryModel.WORKLIST: (),
}

_UNIQUE_KEY = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

# PS3.4 C.6 tables (R and U keys). SOPClassUID is not required by the standard at IMAGE level,
# but C-GET needs it to offer the right storage contexts, so it is asked for by default.
_REQUIRED_KEYS = {
    Level.PATIENT: ("PatientName", "PatientID"),
    Level.STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyInstanceUID"),
    Level.SERIES: ("Modality", "SeriesNumber", "SeriesInstanceUID"),
    Level.IMAGE: ("InstanceNumber", "SOPInstanceUID", "SOPClassUID"),
}
# Study Root has no PATIENT level: its STUDY level carries the patient's R keys (Table C.6-5).
_STUDY_ROOT_PATIENT_KEYS = ("PatientName", "PatientID")

# PS3.4 Table K.6-1: the matching keys every worklist SCP supports (R) plus the type 1 return
# keys that identify what to acquire; the step attributes live inside the sequence item.
_WORKLIST_REQUIRED_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
)
_WORKLIST_STEP_KEYS = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
)
STEP_SEQUENCE = "ScheduledProcedureStepSequence"
# Attributes of the Scheduled Procedure Step that people put at the top level of a worklist
# identifier by mistake, where an SCP does not look for them.
STEP_ONLY_KEYS = frozenset(
    {
        *_WORKLIST_STEP_KEYS,
        "ScheduledProcedureStepEndDate",
        "ScheduledProcedureStepEndTime",
        "ScheduledProtocolCodeSequence",
        "ScheduledStationName",
        "ScheduledProcedureStepLocation",
        "ScheduledProcedureStepStatus",
        "PreMedication",
        "RequestedContrastAgent",
        "CommentsOnTheScheduledProcedureStep",
    }
)

# Which level an attribute belongs to: the C.6 tables, plus the "all other attributes at this
# level" rows resolved for the attributes people commonly query. Attributes missing here are of
# no known level and are never refused for their level.
_PATIENT_LEVEL = frozenset(
    {
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "ReferencedPatientSequence",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "EthnicGroup",
        "PatientComments",
        "PatientSpeciesDescription",
        "PatientSpeciesCodeSequence",
        "PatientBreedDescription",
        "PatientBreedCodeSequence",
        "ResponsiblePerson",
        "ResponsiblePersonRole",
        "ResponsibleOrganization",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "TypeOfPatientID",
        "QualityControlSubject",
        "StrainDescription",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    }
)
_STUDY_LEVEL = frozenset(
    {
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "IssuerOfAccessionNumberSequence",
        "StudyID",
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "AnatomicRegionsInStudyCodeSequence",
        "ReferringPhysicianName",
        "ReferringPhysicianIdentificationSequence",
        "ConsultingPhysicianName",
        "StudyDescription",
        "ProcedureCodeSequence",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord",
        "AdmittingDiagnosesDescription",
        "AdmittingDiagnosesCodeSequence",
        "ReferencedStudySequence",
        "ReasonForPerformedProcedureCodeSequence",
        "AdmissionID",
        "IssuerOfAdmissionIDSequence",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "Occupation",
        "AdditionalPatientHistory",
        "OtherStudyNumbers",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    }
)
_SERIES_LEVEL = frozenset(
    {
        "Modality",
        "SeriesNumber",
        "SeriesInstanceUID",
        "SeriesDescription",
        "SeriesDescriptionCodeSequence",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "ProtocolName",
        "Laterality",
        "PerformingPhysicianName",
        "OperatorsName",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProcedureStepID",
        "PerformedProcedureStepDescription",
        "PerformedProtocolCodeSequence",
        "RequestAttributesSequence",
        "ReferencedPerformedProcedureStepSequence",
        "PatientPosition",
        "AnatomicalOrientationType",
        "SmallestPixelValueInSeries",
        "LargestPixelValueInSeries",
        "FrameOfReferenceUID",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "Manufacturer",
        "ManufacturerModelName",
        "DeviceSerialNumber",
        "SoftwareVersions",
        "NumberOfSeriesRelatedInstances",
    }
)
_IMAGE_LEVEL = frozenset(
    {
        "InstanceNumber",
        "SOPInstanceUID",
        "SOPClassUID",
        "AlternateRepresentationSequence",
        "RelatedGeneralSOPClassUID",
        "AvailableTransferSyntaxUID",
        "ImageType",
        "AcquisitionNumber",
        "AcquisitionDate",
        "AcquisitionTime",
        "AcquisitionDateTime",
        "ContentDate",
        "ContentTime",
        "InstanceCreationDate",
        "InstanceCreationTime",
        "ImageComments",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "SliceLocation",
        "SliceThickness",
        "PixelSpacing",
        "ImageLaterality",
        "LossyImageCompression",
        "BurnedInAnnotation",
        "ContentLabel",
        "ContentDescription",
        "ContentCreatorName",
        "ConceptNameCodeSequence",
        "CompletionFlag",
        "VerificationFlag",
        "PresentationCreationDate",
        "PresentationCreationTime",
        "DocumentTitle",
        "MIMETypeOfEncapsulatedDocument",
    }
)
_KEY_LEVEL: dict[str, Level] = {
    **{k: Level.PATIENT for k in _PATIENT_LEVEL},
    **{k: Level.STUDY for k in _STUDY_LEVEL},
    **{k: Level.SERIES for k in _SERIES_LEVEL},
    **{k: Level.IMAGE for k in _IMAGE_LEVEL},
}

# Keywords people use in queries: the first suggestions for a misspelt one.
QUERY_KEYWORDS = sorted(
    {*_KEY_LEVEL, *_WORKLIST_REQUIRED_KEYS, *STEP_ONLY_KEYS, STEP_SEQUENCE, "RetrieveAETitle"}
)


def key_level(keyword: str, model: QueryModel | None = None) -> Level | None:
    """The query level an attribute belongs to (PS3.4 C.6), ``None`` if no level lists it.

    With ``model``, the level in that model: Study Root, which has no PATIENT level, folds the
    patient's attributes into its STUDY level (Table C.6-5).
    """
    level = _KEY_LEVEL.get(keyword)
    if level is Level.PATIENT and model is not None and Level.PATIENT not in model.levels:
        return Level.STUDY
    return level


def with_required_keys(
    level: Level | None, model: QueryModel, keys: Mapping[str, object]
) -> dict[str, object]:
    """``keys`` plus, as return keys, the required keys of ``level`` (``None``: the worklist)
    that it lacks; the worklist's step keys go inside the Scheduled Procedure Step item."""
    if level is None:
        required: tuple[str, ...] = _WORKLIST_REQUIRED_KEYS
    else:
        required = _REQUIRED_KEYS[level]
        if level is Level.STUDY and Level.PATIENT not in model.levels:
            required = required + _STUDY_ROOT_PATIENT_KEYS
    out = dict(keys)
    for keyword in required:
        out.setdefault(keyword, None)
    if level is None:
        step = out.get(STEP_SEQUENCE)
        step_keys: dict[str, object] = dict(step) if isinstance(step, Mapping) else {}
        for keyword in _WORKLIST_STEP_KEYS:
            step_keys.setdefault(keyword, None)
        out[STEP_SEQUENCE] = step_keys
    return out
