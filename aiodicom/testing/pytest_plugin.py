"""pytest fixtures for code that uses aiodicom (registered as the ``aiodicom`` pytest plugin).

* ``aiodicom_synthetic_files``: the default synthetic studies written once per session as
  Part 10 files (a list of paths; do not modify them);
* ``aiodicom_index``: a fresh in-memory :class:`~aiodicom.server.InstanceIndex` holding the
  same studies, for each test.

The embedded Q/R SCP fixture (the index served over the network) will join them.
Without the entry point, enable them with ``-p aiodicom.testing.pytest_plugin``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aiodicom.server import InstanceIndex
from aiodicom.testing.synthetic import synthetic_instances, write_synthetic

__all__ = ["aiodicom_index", "aiodicom_synthetic_files"]

# Small images: the fixtures are about the hierarchy and the geometry, not pixel volume.
_ROWS = _COLUMNS = 32
_SLICES = 8


@pytest.fixture(scope="session")
def aiodicom_synthetic_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The default synthetic studies as Part 10 files (32x32 pixels, 8 slices a series)."""
    return write_synthetic(
        tmp_path_factory.mktemp("aiodicom-synthetic"), rows=_ROWS, columns=_COLUMNS,
        slices=_SLICES,
    )


@pytest.fixture
def aiodicom_index() -> Iterator[InstanceIndex]:
    """An in-memory index holding the default synthetic studies, new for each test."""
    with InstanceIndex() as index:
        for instance in synthetic_instances(rows=_ROWS, columns=_COLUMNS, slices=_SLICES):
            index.store(instance)
        yield index
