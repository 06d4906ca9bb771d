"""Helpers for testing code that uses aiodicom: synthetic studies (and, later, an embedded
Q/R SCP fixture)."""

from aiodicom.testing.synthetic import (
    DEFAULT_PATIENTS,
    PatientSpec,
    SeriesSpec,
    StudySpec,
    synthetic_datasets,
    synthetic_instances,
    synthetic_uid,
    write_synthetic,
)

__all__ = [
    "DEFAULT_PATIENTS",
    "PatientSpec",
    "SeriesSpec",
    "StudySpec",
    "synthetic_datasets",
    "synthetic_instances",
    "synthetic_uid",
    "write_synthetic",
]
