"""The query model: build C-FIND identifiers from typed Python values, checked before sending.

A :class:`Query` holds the Query/Retrieve level, the information model and the keys, each key a
DICOM keyword mapped to a Python value. A key given empty (``None`` or ``""``) is a *return key*
(universal matching: "send me this attribute"); any other value makes it a *matching key*.

Values are typed where DICOM has types:

* ``datetime.date`` / ``datetime.time`` / ``datetime.datetime`` for DA / TM / DT keys;
* ``(start, end)`` tuples for range matching on DA / TM / DT keys, either end ``None`` for an
  open range; strings such as ``"20240101-20240131"`` are accepted too and checked for form;
* a list or tuple of UIDs for UI keys (List of UID Matching);
* ``*`` and ``?`` wildcards in string keys whose VR allows them;
* a ``dict`` (or a pydicom ``Dataset``) for SQ keys (Sequence Matching), built recursively.

Problems a key has on its own (unknown keyword, a value its VR cannot carry) raise
:class:`QueryError` when the query is built; the hierarchical rules of PS3.4 C.4.1.2, which depend
on what the association negotiated, are checked by :meth:`Query.validate`.
"""

from __future__ import annotations

import datetime
import difflib
import enum
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import attrs
from pydicom import config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import DSfloat, PersonName

from aiodicom.errors import DicomError

__all__ = ["Level", "Query", "QueryError", "QueryModel", "key_level"]


class QueryError(DicomError, ValueError):
    """A query that cannot be sent as asked: the message names the offending key and says why.

    ``key`` is that keyword (dotted for a key inside a sequence item), or ``None`` when the
    problem is not one key's.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


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


_LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)


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


_SOP_CLASSES: dict[QueryModel, tuple[str | None, str | None, str | None]] = {
    QueryModel.PATIENT_ROOT: (
        "1.2.840.10008.5.1.4.1.2.1.1",
        "1.2.840.10008.5.1.4.1.2.1.2",
        "1.2.840.10008.5.1.4.1.2.1.3",
    ),
    QueryModel.STUDY_ROOT: (
        "1.2.840.10008.5.1.4.1.2.2.1",
        "1.2.840.10008.5.1.4.1.2.2.2",
        "1.2.840.10008.5.1.4.1.2.2.3",
    ),
    QueryModel.PATIENT_STUDY_ONLY: (
        "1.2.840.10008.5.1.4.1.2.3.1",
        "1.2.840.10008.5.1.4.1.2.3.2",
        "1.2.840.10008.5.1.4.1.2.3.3",
    ),
    QueryModel.WORKLIST: ("1.2.840.10008.5.1.4.31", None, None),
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
_STEP_SEQUENCE = "ScheduledProcedureStepSequence"
# Attributes of the Scheduled Procedure Step that people put at the top level of a worklist
# identifier by mistake, where an SCP does not look for them.
_STEP_ONLY_KEYS = frozenset(
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

_QUERY_KEYWORDS = sorted(
    {*_KEY_LEVEL, *_WORKLIST_REQUIRED_KEYS, *_STEP_ONLY_KEYS, _STEP_SEQUENCE, "RetrieveAETitle"}
)

# Keys the builder sets itself: taking them as keys would let two sources disagree.
_RESERVED_KEYS = {
    "QueryRetrieveLevel": "it is set from the query level (Query.study(), Query.series(), ...)",
    "SpecificCharacterSet": "it is set from character_set= (or automatically for non-ASCII values)",
}

# PS3.4 C.2.2.2.4: the VRs where "*" and "?" are wildcards; in any other VR they are refused.
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# Values of these VRs are affected by Specific Character Set (PS3.5 6.1.2.3); the others must
# stay within the default repertoire whatever the character set.
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "PN", "UT", "UC"})
_TEXT_VRS = _WILDCARD_VRS | {"AS"}
_TEMPORAL_VRS = frozenset({"DA", "TM", "DT"})
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_BULK_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})
# Empty Value Matching (PS3.4 C.2.2.2.7) spells "match an empty value" as two quotation marks.
_EMPTY_VALUE = '""'

_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
_DA_RE = re.compile(r"[0-9]{8}")
_TM_RE = re.compile(r"[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?")
_DT_RE = re.compile(
    r"[0-9]{4}([0-9]{2}([0-9]{2}([0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?)?)?)?([+-][0-9]{4})?"
)
_IS_RE = re.compile(r"[+-]?[0-9]+")
_AS_RE = re.compile(r"[0-9]{3}[DWMY]")
_TEMPORAL_RE = {"DA": _DA_RE, "TM": _TM_RE, "DT": _DT_RE}
_TEMPORAL_EXAMPLE = {
    "DA": "YYYYMMDD",
    "TM": "HHMMSS[.FFFFFF]",
    "DT": "YYYYMMDDHHMMSS[.FFFFFF][&ZZXX]",
}
_TEMPORAL_TYPE = {"DA": "datetime.date", "TM": "datetime.time", "DT": "datetime.datetime"}


class _Keys(Mapping[str, object]):
    """A read-only, hashable keyword -> value mapping, so that a Query can be a dict key."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, object]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._data)


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword  # keywords are checked when the query is built
    return tag


def _vr_of(keyword: str) -> str:
    vr = str(dictionary_VR(keyword))
    # "US or SS", "OB or OW": the first is what pydicom would pick without pixel context.
    return vr.split(" or ")[0]


def _check_keyword(keyword: str, path: str) -> None:
    if keyword in _RESERVED_KEYS:
        raise QueryError(f"{path}: do not give {keyword} as a key: {_RESERVED_KEYS[keyword]}", path)
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise QueryError(f"{path}: unknown DICOM keyword{_suggest(keyword)}", path)
    group = tag >> 16
    if group in (0x0000, 0x0002) or group == 0xFFFE:
        raise QueryError(
            f"{path}: {keyword} is a command, file meta or item element, not an attribute an "
            "identifier can carry",
            path,
        )


def _suggest(keyword: str) -> str:
    folded = {k.lower(): k for k in keyword_dict}
    exact = folded.get(keyword.lower())
    if exact is not None:
        return f"; did you mean {exact!r}? (keywords are case-sensitive)"
    # Keywords used in queries first: "StudyUID" should suggest StudyInstanceUID before the
    # closer but unrelated StudyStatusID.
    close = difflib.get_close_matches(keyword, _QUERY_KEYWORDS, n=3, cutoff=0.6)
    for candidate in difflib.get_close_matches(keyword, keyword_dict.keys(), n=3, cutoff=0.75):
        if candidate not in close:
            close.append(candidate)
    if not close:
        lowered = difflib.get_close_matches(keyword.lower(), folded.keys(), n=3, cutoff=0.6)
        close = [folded[k] for k in lowered]
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(k) for k in close[:3]) + "?"


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def _convert_keys(keys: Mapping[str, object] | Dataset) -> _Keys:
    return _normalize_keys(keys)


def _normalize_keys(keys: Mapping[str, object] | Dataset, prefix: str = "") -> _Keys:
    if isinstance(keys, Dataset):
        keys = _dataset_to_keys(keys, prefix)
    out: dict[str, object] = {}
    for keyword, value in keys.items():
        if not isinstance(keyword, str):
            raise QueryError(f"{prefix}{keyword!r}: keys are DICOM keywords (str)", str(keyword))
        path = prefix + keyword
        _check_keyword(keyword, path)
        out[keyword] = _normalize_value(_vr_of(keyword), value, path)
    return _Keys(out)


def _normalize_value(vr: str, value: object, path: str) -> object:
    if vr == "SQ":
        return _normalize_sequence(value, path)
    if _is_empty(value):
        return None
    if vr == "UI":
        return _normalize_uids(value, path)
    if vr in _TEMPORAL_VRS:
        return _normalize_temporal(vr, value, path)
    if isinstance(value, (list, tuple, MultiValue)):
        raise QueryError(
            f"{path}: several values given, but only UID (UI) keys take a list (List of UID "
            "Matching); for other keys the meaning of several values is undefined unless Multiple "
            "Value Matching was negotiated, so send one query per value",
            path,
        )
    if vr in _BULK_VRS:
        raise QueryError(f"{path}: {vr} values cannot be matched; give None to ask for it", path)
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        return _normalize_number(vr, value, path)
    if vr in _TEXT_VRS:
        return _normalize_text(vr, value, path)
    # AT and other rare VRs: passed through for pydicom to judge.
    return value


def _normalize_sequence(value: object, path: str) -> object:
    if value is None or (isinstance(value, (list, tuple, Sequence)) and len(value) == 0):
        return None
    if isinstance(value, (list, tuple, Sequence)):
        if len(value) != 1:
            raise QueryError(
                f"{path}: Sequence Matching takes a single item (PS3.4 C.2.2.2.6), "
                f"{len(value)} were given",
                path,
            )
        value = value[0]
    if isinstance(value, (Mapping, Dataset)):
        return _normalize_keys(value, path + ".")
    raise QueryError(
        f"{path}: a sequence key takes a dict of item keys (or a Dataset), "
        f"not {type(value).__name__}",
        path,
    )


def _normalize_uids(value: object, path: str) -> object:
    if isinstance(value, str):
        uids = value.split("\\")
    elif isinstance(value, (list, tuple, MultiValue)):
        uids = list(value)
        if not uids:
            raise QueryError(
                f"{path}: an empty UID list matches nothing; give None for a return key", path
            )
    else:
        raise QueryError(
            f"{path}: a UID key takes a str or a list of str, not {type(value).__name__}", path
        )
    clean: list[str] = []
    for uid in uids:
        if not isinstance(uid, str):
            raise QueryError(f"{path}: UIDs are str, not {type(uid).__name__}", path)
        uid = uid.strip().rstrip("\0")
        if "*" in uid or "?" in uid:
            raise QueryError(
                f"{path}: wildcards are not allowed in UI keys (PS3.4 C.2.2.2.4); give None to "
                "match any UID, or a list of UIDs",
                path,
            )
        if len(uid) > 64 or not _UID_RE.fullmatch(uid):
            raise QueryError(f"{path}: {uid!r} is not a UID (digits and dots, 64 at most)", path)
        clean.append(uid)
    if isinstance(value, str) and len(clean) == 1:
        return clean[0]
    return tuple(clean)


def _normalize_temporal(vr: str, value: object, path: str) -> object:
    if isinstance(value, str):
        return _check_temporal_string(vr, value.strip(), path)
    if isinstance(value, (list, tuple)) and not isinstance(value, MultiValue):
        if len(value) != 2:
            raise QueryError(
                f"{path}: a range is a (start, end) pair, got {len(value)} values", path
            )
        start = None if _is_empty(value[0]) else _check_temporal_point(vr, value[0], path)
        end = None if _is_empty(value[1]) else _check_temporal_point(vr, value[1], path)
        if start is None and end is None:
            # Both ends open: no constraint at all, which is universal matching.
            return None
        if start is not None and end is not None and _starts_after(vr, start, end):
            raise QueryError(f"{path}: range start {start} is after its end {end}", path)
        return (start, end)
    return _check_temporal_point(vr, value, path)


def _check_temporal_point(vr: str, value: object, path: str) -> object:
    if isinstance(value, str):
        text = value.strip()
        if not _TEMPORAL_RE[vr].fullmatch(text):
            raise QueryError(
                f"{path}: {value!r} is not a {vr} value ({_TEMPORAL_EXAMPLE[vr]})", path
            )
        return text
    if vr == "DA":
        if isinstance(value, datetime.datetime):
            raise QueryError(
                f"{path}: a DA key takes a datetime.date; a datetime.datetime would silently drop "
                "its time (use the matching TM key for that)",
                path,
            )
        if isinstance(value, datetime.date):
            return datetime.date(value.year, value.month, value.day)
    elif vr == "TM":
        if isinstance(value, datetime.time):
            if value.tzinfo is not None:
                raise QueryError(f"{path}: TM values carry no UTC offset; give a naive time", path)
            return datetime.time(value.hour, value.minute, value.second, value.microsecond)
    elif isinstance(value, datetime.datetime):
        return datetime.datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            value.tzinfo,
            # The fold tells which of a wall-clock time's two occurrences the end of DST made;
            # without it the UTC offset would be that of the first.
            fold=value.fold,
        )
    elif isinstance(value, datetime.date):
        return datetime.date(value.year, value.month, value.day)
    raise QueryError(
        f"{path}: a {vr} key takes a {_TEMPORAL_TYPE[vr]}, a (start, end) range or a "
        f"{_TEMPORAL_EXAMPLE[vr]} string, not {type(value).__name__}",
        path,
    )


def _check_temporal_string(vr: str, text: str, path: str) -> str:
    if text == _EMPTY_VALUE:
        return text
    if "*" in text or "?" in text:
        raise QueryError(
            f"{path}: wildcards are not allowed in {vr} keys (PS3.4 C.2.2.2.4); "
            "use a (start, end) range instead",
            path,
        )
    pattern = _TEMPORAL_RE[vr]
    if pattern.fullmatch(text):
        return text
    if _split_range(pattern, text) is not None:
        return text
    raise QueryError(
        f"{path}: {text!r} is neither a {vr} value ({_TEMPORAL_EXAMPLE[vr]}) nor a range of them "
        f"('start-end', '-end' or 'start-')",
        path,
    )


_OFFSET_RE = re.compile(r"[+-][0-9]{4}$")


def _starts_after(vr: str, start: object, end: object) -> bool:
    if (
        isinstance(start, datetime.datetime)
        and isinstance(end, datetime.datetime)
        and (start.tzinfo is None) == (end.tzinfo is None)
    ):
        return start > end
    first, last = _point_text(vr, start), _point_text(vr, end)
    if vr == "DT":
        first, last = _OFFSET_RE.sub("", first), _OFFSET_RE.sub("", last)
    # A shorter value stands for a whole period ("2024" is all of 2024), so only the common
    # precision can say which comes first.
    n = min(len(first), len(last))
    return first[:n] > last[:n]


def _split_range(pattern: re.Pattern[str], text: str) -> tuple[str, str] | None:
    # Every hyphen is a candidate separator: in DT a hyphen may also be a negative UTC offset.
    for i, char in enumerate(text):
        if char != "-":
            continue
        start, end = text[:i], text[i + 1 :]
        if not start and not end:
            continue
        if (not start or pattern.fullmatch(start)) and (not end or pattern.fullmatch(end)):
            if start and end and _starts_after("DT", start, end):
                continue
            return start, end
    return None


def _normalize_number(vr: str, value: object, path: str) -> object:
    if isinstance(value, bool):
        raise QueryError(f"{path}: {vr} takes a number, not a bool", path)
    if isinstance(value, str):
        text = value.strip()
        if "*" in text or "?" in text:
            raise QueryError(
                f"{path}: wildcards are not allowed in {vr} keys (PS3.4 C.2.2.2.4)", path
            )
        if vr in _INT_VRS:
            if not _IS_RE.fullmatch(text):
                raise QueryError(f"{path}: {value!r} is not an integer", path)
            return int(text)
        try:
            float(text)
        except ValueError:
            raise QueryError(f"{path}: {value!r} is not a number", path) from None
        # Kept as text: converting would change the digits the caller chose to send.
        return text
    if vr in _INT_VRS:
        if isinstance(value, int):
            return int(value)
        raise QueryError(f"{path}: {vr} takes an int, not {type(value).__name__}", path)
    if isinstance(value, (int, float, Decimal)):
        return value
    raise QueryError(f"{path}: {vr} takes a number, not {type(value).__name__}", path)


def _normalize_text(vr: str, value: object, path: str) -> str:
    if isinstance(value, PersonName):
        value = str(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        # An ID typed as a number (PatientID=1234) is a common slip with an obvious meaning.
        value = str(value)
    if not isinstance(value, str):
        raise QueryError(f"{path}: a {vr} key takes a str, not {type(value).__name__}", path)
    if vr not in _WILDCARD_VRS and ("*" in value or "?" in value):
        raise QueryError(f"{path}: wildcards are not allowed in {vr} keys (PS3.4 C.2.2.2.4)", path)
    if vr not in ("LT", "ST", "UT") and "\\" in value:
        raise QueryError(
            f"{path}: {value!r} contains a backslash, which DICOM reads as a value separator", path
        )
    if vr not in _CHARSET_VRS and not value.isascii():
        raise QueryError(
            f"{path}: {vr} values are limited to the default (ASCII) repertoire whatever the "
            "character set",
            path,
        )
    if vr == "CS" and any("a" <= c <= "z" for c in value):
        raise QueryError(
            f"{path}: CS values are upper case; did you mean {value.upper()!r}? A peer matches CS "
            "case-sensitively",
            path,
        )
    if vr == "AS" and value != _EMPTY_VALUE and not _AS_RE.fullmatch(value):
        raise QueryError(f"{path}: {value!r} is not an age string (nnnD, nnnW, nnnM or nnnY)", path)
    return value


def _point_text(vr: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime.datetime):
        text = (
            f"{value.year:04d}{value.month:02d}{value.day:02d}"
            f"{value.hour:02d}{value.minute:02d}{value.second:02d}"
        )
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        offset = value.utcoffset()
        if offset is not None:
            seconds = int(offset.total_seconds())
            sign = "-" if seconds < 0 else "+"
            # DT offsets have no seconds: historical zones (LMT) lose theirs, toward zero.
            minutes = abs(seconds) // 60
            text += f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
        return text
    if isinstance(value, datetime.date):
        return f"{value.year:04d}{value.month:02d}{value.day:02d}"
    if isinstance(value, datetime.time):
        text = f"{value.hour:02d}{value.minute:02d}{value.second:02d}"
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        return text
    raise TypeError(f"not a {vr} value: {value!r}")  # pragma: no cover - normalization guards it


def _encode(vr: str, value: object) -> Any:
    """The pydicom value of a normalized key."""
    if value is None:
        return Sequence([]) if vr == "SQ" else None
    if vr == "SQ":
        assert isinstance(value, Mapping)
        return Sequence([_build_item(value)])
    if vr in _TEMPORAL_VRS:
        if isinstance(value, tuple):
            start, end = value
            start_text = "" if start is None else _point_text(vr, start)
            end_text = "" if end is None else _point_text(vr, end)
            return f"{start_text}-{end_text}"
        return _point_text(vr, value)
    if isinstance(value, tuple):
        return list(value)
    if vr == "DS" and isinstance(value, float):
        # A float's repr may exceed the 16 bytes DS allows; pydicom can shorten it for us.
        return DSfloat(value, auto_format=True)
    return value


def _element(keyword: str, vr: str, value: object) -> DataElement:
    # Query values legitimately break the VR rules pydicom checks: wildcards in CS, "" for
    # Empty Value Matching, ranges longer than a DA (PS3.4 C.2.2.2). They were checked above.
    return DataElement(_tag(keyword), vr, _encode(vr, value), validation_mode=config.IGNORE)


def _build_item(keys: Mapping[str, object]) -> Dataset:
    item = Dataset()
    for keyword, value in keys.items():
        vr = _vr_of(keyword)
        item.add(_element(keyword, vr, value))
    return item


def _dataset_to_keys(ds: Dataset, prefix: str = "") -> dict[str, object]:
    keys: dict[str, object] = {}
    for elem in ds:
        if elem.tag.element == 0:
            continue  # group lengths carry no query meaning
        if elem.tag.is_private or not elem.keyword:
            raise QueryError(
                f"{prefix}{elem.tag}: private or unknown elements cannot be expressed as keyword "
                "keys",
                f"{prefix}{elem.tag}",
            )
        keys[elem.keyword] = _from_pydicom(elem, prefix + elem.keyword)
    return keys


def _from_pydicom(elem: DataElement, path: str) -> object:
    value = elem.value
    if elem.VR == "SQ":
        items = list(value or [])
        if len(items) > 1:
            raise QueryError(
                f"{path}: Sequence Matching takes a single item, found {len(items)}", path
            )
        return _dataset_to_keys(items[0], path + ".") if items else None
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, MultiValue):
        values = [_plain(v) for v in value]
        if not values:
            return None
        if len(values) > 1 and elem.VR in _TEMPORAL_VRS:
            raise QueryError(
                f"{path}: several {elem.VR} values; a range is written 'start-end'", path
            )
        return tuple(values) if len(values) > 1 else values[0]
    return _plain(value)


def _plain(value: object) -> object:
    """Strip pydicom's value subclasses, which carry state the query does not want."""
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, datetime.datetime):
        return datetime.datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            value.tzinfo,
            # The fold tells which of a wall-clock time's two occurrences the end of DST made;
            # without it the UTC offset would be that of the first.
            fold=value.fold,
        )
    if isinstance(value, datetime.date):
        return datetime.date(value.year, value.month, value.day)
    if isinstance(value, datetime.time):
        return datetime.time(value.hour, value.minute, value.second, value.microsecond)
    if isinstance(value, float) and hasattr(value, "original_string"):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value


def _iter_strings(keys: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, VR, text) of every string value, recursing into sequence items."""
    for keyword, value in keys.items():
        path = prefix + keyword
        if isinstance(value, Mapping):
            yield from _iter_strings(value, path + ".")
        elif isinstance(value, str):
            yield path, _vr_of(keyword), value
        elif isinstance(value, tuple):
            for part in value:
                if isinstance(part, str):
                    yield path, _vr_of(keyword), part


_DEFAULT_REPERTOIRE = frozenset({"ISO_IR 6", "ISO 2022 IR 6"})


def _charset_terms(character_set: str) -> list[str]:
    terms = [t.strip() for t in character_set.split("\\")]
    for i, term in enumerate(terms):
        # PS3.3 C.12.1.1.2: only the first value may be empty (meaning the default repertoire).
        if term == "" and i == 0 and len(terms) > 1:
            continue
        if term not in python_encoding or term == "":
            raise QueryError(
                f"character_set: {term!r} is not a Specific Character Set defined term "
                "(e.g. 'ISO_IR 192' for UTF-8, 'ISO_IR 100' for Latin-1)",
                "SpecificCharacterSet",
            )
    return terms


def _encodable(text: str, terms: list[str]) -> bool:
    codecs = [
        "ascii" if (t in _DEFAULT_REPERTOIRE or t == "") else python_encoding[t] for t in terms
    ]
    if len(codecs) == 1:
        try:
            text.encode(codecs[0])
        except UnicodeError:
            return False
        return True
    # With code extensions each character may come from any of the listed repertoires.
    for char in text:
        for codec in codecs:
            try:
                char.encode(codec)
                break
            except UnicodeError:
                continue
        else:
            return False
    return True


def _has_matching_value(value: object) -> bool:
    if isinstance(value, Mapping):
        return any(_has_matching_value(v) for v in value.values())
    return value is not None


def _is_single_value(value: object) -> bool:
    if isinstance(value, tuple):
        return len(value) == 1
    if isinstance(value, str):
        return "*" not in value and "?" not in value and value != _EMPTY_VALUE
    return value is not None and not isinstance(value, Mapping)


@attrs.frozen
class Query:
    """A C-FIND query: a level, an information model and keys, checked as it is built.

    Build one with :meth:`patient`, :meth:`study`, :meth:`series`, :meth:`image`,
    :meth:`worklist` or :meth:`from_dataset`; derive variants with :meth:`with_keys`.
    """

    level: Level | None
    model: QueryModel
    keys: Mapping[str, object] = attrs.field(factory=dict, converter=_convert_keys)
    character_set: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.model, QueryModel):
            raise QueryError(f"model must be a QueryModel, not {self.model!r}")
        if self.model is QueryModel.WORKLIST:
            if self.level is not None:
                raise QueryError("a worklist query has no level: use Query.worklist(...)")
        elif self.level is None:
            raise QueryError(f"a {self.model.value} query needs a level (PATIENT, STUDY, ...)")
        elif self.level not in self.model.levels:
            available = ", ".join(lvl.value for lvl in self.model.levels)
            hint = (
                "; use model=QueryModel.PATIENT_ROOT"
                if self.level is Level.PATIENT
                else "; use model=QueryModel.STUDY_ROOT or PATIENT_ROOT"
            )
            raise QueryError(
                f"the {self.model.value} model has no {self.level.value} level "
                f"(its levels: {available}){hint}"
            )
        if self.character_set is not None:
            self._check_character_set(self.character_set)

    def _check_character_set(self, character_set: str) -> None:
        terms = _charset_terms(character_set)
        for path, vr, text in _iter_strings(self.keys):
            if vr in _CHARSET_VRS and not _encodable(text, terms):
                raise QueryError(
                    f"{path}: {text!r} cannot be encoded in character set {character_set!r}; "
                    "leave character_set=None to send UTF-8 (ISO_IR 192)",
                    path,
                )

    # -- builders -----------------------------------------------------------------------------

    @classmethod
    def _build(
        cls,
        level: Level | None,
        model: QueryModel,
        keys: Mapping[str, object],
        required_keys: bool,
        character_set: str | None,
    ) -> Query:
        if model is QueryModel.WORKLIST and level is not None:
            raise QueryError(f"the worklist has no {level.value} level: use Query.worklist(...)")
        if model is not QueryModel.WORKLIST and level is None:
            raise QueryError("Query.worklist() takes model=QueryModel.WORKLIST only")
        merged = dict(_normalize_keys(keys))
        if required_keys:
            merged = _with_required(level, model, merged)
        return cls(level=level, model=model, keys=merged, character_set=character_set)

    @classmethod
    def at_level(
        cls,
        level: Level,
        keys: Mapping[str, object],
        *,
        model: QueryModel = QueryModel.STUDY_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
    ) -> Query:
        """A query at ``level`` with ``keys`` given as a mapping (for code that builds them)."""
        return cls._build(level, model, keys, required_keys, character_set)

    @classmethod
    def patient(
        cls,
        *,
        model: QueryModel = QueryModel.PATIENT_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """A PATIENT-level query (Patient Root by default: Study Root has no PATIENT level)."""
        return cls._build(Level.PATIENT, model, keys, required_keys, character_set)

    @classmethod
    def study(
        cls,
        *,
        model: QueryModel = QueryModel.STUDY_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """A STUDY-level query."""
        return cls._build(Level.STUDY, model, keys, required_keys, character_set)

    @classmethod
    def series(
        cls,
        *,
        model: QueryModel = QueryModel.STUDY_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """A SERIES-level query; hierarchically it needs the StudyInstanceUID of one study."""
        return cls._build(Level.SERIES, model, keys, required_keys, character_set)

    @classmethod
    def image(
        cls,
        *,
        model: QueryModel = QueryModel.STUDY_ROOT,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """An IMAGE-level query; hierarchically it needs StudyInstanceUID and SeriesInstanceUID."""
        return cls._build(Level.IMAGE, model, keys, required_keys, character_set)

    @classmethod
    def worklist(
        cls,
        *,
        model: QueryModel = QueryModel.WORKLIST,
        required_keys: bool = True,
        character_set: str | None = None,
        **keys: object,
    ) -> Query:
        """A Modality Worklist query; step keys go in ``ScheduledProcedureStepSequence={...}``."""
        if model is not QueryModel.WORKLIST:
            raise QueryError(f"Query.worklist() takes model=QueryModel.WORKLIST, not {model}")
        return cls._build(None, model, keys, required_keys, character_set)

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        model: QueryModel | None = None,
        *,
        required_keys: bool = False,
    ) -> Query:
        """The query an existing identifier expresses.

        The level comes from QueryRetrieveLevel; without ``model`` a PATIENT identifier is read
        as Patient Root and any other as Study Root. A worklist identifier (which has no
        QueryRetrieveLevel) needs ``model=QueryModel.WORKLIST``. Required keys are not added
        unless asked, so that the identifier is reproduced as it was.
        """
        raw_level = ds.get("QueryRetrieveLevel")
        if model is QueryModel.WORKLIST:
            if raw_level:
                raise QueryError(
                    "QueryRetrieveLevel has no place in a worklist identifier", "QueryRetrieveLevel"
                )
            level = None
        else:
            if not raw_level:
                raise QueryError(
                    "the identifier has no QueryRetrieveLevel; for a worklist identifier pass "
                    "model=QueryModel.WORKLIST",
                    "QueryRetrieveLevel",
                )
            try:
                level = Level(str(raw_level).strip())
            except ValueError:
                raise QueryError(
                    f"QueryRetrieveLevel {raw_level!r} is none of PATIENT, STUDY, SERIES, IMAGE",
                    "QueryRetrieveLevel",
                ) from None
            if model is None:
                model = QueryModel.PATIENT_ROOT if level is Level.PATIENT else QueryModel.STUDY_ROOT
        charset = ds.get("SpecificCharacterSet")
        character_set: str | None = None
        if isinstance(charset, MultiValue):
            character_set = "\\".join(str(v) for v in charset) or None
        elif charset:
            character_set = str(charset)
        body = Dataset()
        for elem in ds:
            if elem.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet"):
                body.add(elem)
        return cls._build(level, model, _dataset_to_keys(body), required_keys, character_set)

    def with_keys(self, **keys: object) -> Query:
        """A new query with ``keys`` added, or replacing keys of the same name."""
        merged = dict(self.keys)
        merged.update(keys)
        return attrs.evolve(self, keys=merged)

    # -- views --------------------------------------------------------------------------------

    @property
    def matching_keys(self) -> dict[str, object]:
        """Keys with a value to match; a sequence counts when an item key has one."""
        return {k: v for k, v in self.keys.items() if _has_matching_value(v)}

    @property
    def return_keys(self) -> list[str]:
        """Keys given empty: the peer fills them in (universal matching)."""
        return [k for k, v in self.keys.items() if not _has_matching_value(v)]

    @property
    def effective_character_set(self) -> str | None:
        """The Specific Character Set :meth:`to_dataset` sends, or ``None`` for none."""
        if self.character_set is not None:
            return self.character_set
        if any(not text.isascii() for _, _, text in _iter_strings(self.keys)):
            return "ISO_IR 192"
        return None

    def sop_class_uid(self, service: str) -> str:
        """The SOP Class UID of ``service`` ("find", "move" or "get") for the query's model."""
        uids = {
            "find": self.model.find_sop_class,
            "move": self.model.move_sop_class,
            "get": self.model.get_sop_class,
        }
        if service not in uids:
            raise QueryError(f"service must be 'find', 'move' or 'get', not {service!r}")
        uid = uids[service]
        if uid is None:
            raise QueryError(
                f"the {self.model.value} model defines no C-{service.upper()} SOP class"
            )
        return uid

    # -- checks -------------------------------------------------------------------------------

    def validate(self, relational: bool = False) -> None:
        """Check the rules an SCP applies to the identifier, raising :class:`QueryError`.

        Hierarchical (baseline) queries, PS3.4 C.4.1.2.1: every level above the query level is
        pinned by a single value of its unique key, carries no other matching key, and no key
        belongs to a level below. ``relational=True`` (when the peer accepted relational
        queries in extended negotiation) lifts the rules about the levels above.
        """
        problems: list[tuple[str, str]] = []
        if self.level is None:
            self._worklist_problems(problems)
        else:
            self._hierarchy_problems(self.level, relational, problems)
        if problems:
            message = "; ".join(text for _, text in problems)
            raise QueryError(message, problems[0][0])

    def _worklist_problems(self, problems: list[tuple[str, str]]) -> None:
        for keyword in self.keys:
            if keyword in _STEP_ONLY_KEYS:
                problems.append(
                    (
                        keyword,
                        f"{keyword} belongs inside {_STEP_SEQUENCE} in a worklist query (PS3.4 "
                        f"Table K.6-1), where the SCP looks for it: Query.worklist("
                        f"{_STEP_SEQUENCE}={{{keyword!r}: ...}})",
                    )
                )

    def _hierarchy_problems(
        self, level: Level, relational: bool, problems: list[tuple[str, str]]
    ) -> None:
        levels = self.model.levels
        position = levels.index(level)
        above = levels[:position]
        if not relational:
            for upper in above:
                unique = _UNIQUE_KEY[upper]
                value = self.keys.get(unique)
                if value is None:
                    problems.append((unique, self._missing_unique_message(level, upper, unique)))
                elif not _is_single_value(value):
                    problems.append(
                        (
                            unique,
                            f"{unique} must be a single value in a hierarchical {level.value} "
                            f"query: it identifies the one {upper.value.lower()} to look in "
                            "(PS3.4 C.4.1.2.1), so no wildcard, list or range; query the "
                            f"{upper.value} level first, or use relational queries",
                        )
                    )
        for keyword, value in self.keys.items():
            key_level = self._level_of(keyword)
            if key_level is None or key_level is level:
                continue
            if _LEVEL_ORDER.index(key_level) > _LEVEL_ORDER.index(level):
                where = (
                    f"the {self.model.value} model has no {key_level.value} level"
                    if key_level not in levels
                    else f"query at the {key_level.value} level to match or return it"
                )
                problems.append(
                    (
                        keyword,
                        f"{keyword} is a {key_level.value}-level key, below this "
                        f"{level.value} query, which cannot carry it (PS3.4 C.4.1.2.1); {where}",
                    )
                )
            elif (
                not relational
                and key_level in above
                and keyword != _UNIQUE_KEY[key_level]
                and _has_matching_value(value)
            ):
                problems.append(
                    (
                        keyword,
                        f"{keyword} is a {key_level.value}-level key: a hierarchical "
                        f"{level.value} query matches the levels above only through their unique "
                        f"key ({_UNIQUE_KEY[key_level]}), so a peer would ignore or refuse "
                        f"{keyword}={value!r} (PS3.4 C.4.1.2.1); select the "
                        f"{key_level.value.lower()} first, or use relational queries",
                    )
                )

    def _missing_unique_message(self, level: Level, upper: Level, unique: str) -> str:
        text = (
            f"{unique} is missing: a hierarchical {level.value} query in the {self.model.value} "
            f"model needs the single {unique} of the {upper.value.lower()} above it "
            "(PS3.4 C.4.1.2.1)"
        )
        if level is Level.SERIES and upper is Level.STUDY:
            text += (
                "; find the study first, or let peer.find_series(...) walk the hierarchy "
                "(STUDY, then SERIES) for you"
            )
        elif level is Level.IMAGE and upper is Level.SERIES:
            text += "; find the series first (Query.series(...) or peer.find_series(...))"
        elif upper is Level.STUDY:
            text += "; find the study first (Query.study(...))"
        elif upper is Level.PATIENT:
            text += "; find the patient first (Query.patient(...)), or use model=STUDY_ROOT"
        return text + ", or, if the peer accepted relational queries, validate(relational=True)"

    def _level_of(self, keyword: str) -> Level | None:
        key_level = _KEY_LEVEL.get(keyword)
        if key_level is Level.PATIENT and Level.PATIENT not in self.model.levels:
            # Study Root folds the patient's attributes into the STUDY level (Table C.6-5).
            return Level.STUDY
        return key_level

    # -- encoding -----------------------------------------------------------------------------

    def to_dataset(self) -> Dataset:
        """The C-FIND identifier: every key encoded for its VR, empty for return keys."""
        ds = Dataset()
        charset = self.effective_character_set
        if charset is not None:
            terms = charset.split("\\")
            ds.SpecificCharacterSet = terms if len(terms) > 1 else terms[0]
        if self.level is not None:
            ds.QueryRetrieveLevel = self.level.value
        for keyword, value in self.keys.items():
            vr = _vr_of(keyword)
            ds.add(_element(keyword, vr, value))
        return ds

    def retrieve_identifier(self) -> Dataset:
        """The C-MOVE / C-GET identifier: QueryRetrieveLevel and the unique keys down to it.

        The unique key of the query level must have a value (one UID or a UID list); those of
        the levels above are included when they have one.
        """
        if self.level is None:
            raise QueryError("a worklist query cannot be retrieved (no C-MOVE / C-GET)")
        unique = _UNIQUE_KEY[self.level]
        value = self.keys.get(unique)
        if value is None or (isinstance(value, str) and not _is_single_value(value)):
            raise QueryError(
                f"{unique}: a {self.level.value} retrieve needs the {unique} value(s) to fetch",
                unique,
            )
        ds = Dataset()
        ds.QueryRetrieveLevel = self.level.value
        levels = self.model.levels
        for lvl in levels[: levels.index(self.level) + 1]:
            key = _UNIQUE_KEY[lvl]
            key_value = self.keys.get(key)
            if key_value is None:
                continue
            vr = _vr_of(key)
            ds.add(_element(key, vr, key_value))
            if vr in _CHARSET_VRS and isinstance(key_value, str) and not key_value.isascii():
                ds.SpecificCharacterSet = self.character_set or "ISO_IR 192"
        return ds


def _with_required(
    level: Level | None, model: QueryModel, keys: dict[str, object]
) -> dict[str, object]:
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
        step = out.get(_STEP_SEQUENCE)
        step_keys: dict[str, object] = dict(step) if isinstance(step, Mapping) else {}
        for keyword in _WORKLIST_STEP_KEYS:
            step_keys.setdefault(keyword, None)
        out[_STEP_SEQUENCE] = step_keys
    return out


def key_level(keyword: str) -> Level | None:
    """The query level an attribute belongs to (PS3.4 C.6), ``None`` if no level lists it."""
    return _KEY_LEVEL.get(keyword)
