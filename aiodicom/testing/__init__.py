"""Helpers for testing code that uses aiodicom: synthetic studies; the pytest fixtures
(``aiodicom_synthetic_files``, ``aiodicom_index``, ``aiodicom_qrscp``: the embedded Q/R SCP) are
in :mod:`aiodicom.testing.pytest_plugin`."""

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
