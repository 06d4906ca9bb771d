"""Shared by the bulk retrieval tests: a synthetic archive served by the embedded Q/R SCP that
counts what it sends, and checks of an output directory against the source instances."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import attrs
import pytest

import aiodicom.server.operations as operations
from aiodicom.bulk import ManifestItem
from aiodicom.fileio import split_part10
from aiodicom.instance import Instance
from aiodicom.server import InstanceIndex, QRServer
from aiodicom.testing.synthetic import PatientSpec, SeriesSpec, StudySpec, synthetic_instances

AE = "AIOBULK"


def cohort(studies: int, *, prefix: str = "BULK") -> list[PatientSpec]:
    """``studies`` patients of one study each, two series (CT and MR) per study."""
    return [
        PatientSpec(
            f"{prefix}-{n:04d}", f"Cohort^{n}", None, "19700101", "O",
            (StudySpec(
                "20240101", "120000", "COHORT", f"ACC{n:05d}", f"S{n:05d}", "",
                (SeriesSpec("CT", "AX CT", "AX", "CHEST"),
                 SeriesSpec("MR", "AX T1", "AX", "HEAD")),
            ),),
        )
        for n in range(studies)
    ]


@attrs.define
class Archive:
    """The instances of a synthetic cohort, by SOP Instance UID, and its studies."""

    instances: dict[str, Instance]
    studies: dict[str, list[str]]  # study UID -> SOP Instance UIDs
    series: dict[str, tuple[str, list[str]]]  # series UID -> (study UID, SOP UIDs)

    @classmethod
    def make(cls, studies: int, *, slices: int = 4, size: int = 16, prefix: str = "BULK"
             ) -> Archive:
        instances: dict[str, Instance] = {}
        by_study: dict[str, list[str]] = {}
        by_series: dict[str, tuple[str, list[str]]] = {}
        for instance in synthetic_instances(cohort(studies, prefix=prefix), rows=size,
                                            columns=size, slices=slices, seed=prefix):
            study, series = instance.peek_uids()
            assert study is not None and series is not None
            instances[instance.sop_instance_uid] = instance
            by_study.setdefault(study, []).append(instance.sop_instance_uid)
            by_series.setdefault(series, (study, []))[1].append(instance.sop_instance_uid)
        return cls(instances, by_study, by_series)

    def index(self) -> InstanceIndex:
        index = InstanceIndex()
        for instance in self.instances.values():
            index.store(instance)
        return index

    def study_items(self, pacs: str, studies: Iterable[str] | None = None) -> list[ManifestItem]:
        return [ManifestItem.study(pacs, uid) for uid in (studies or self.studies)]


def output_files(directory: Path) -> dict[str, Path]:
    """Final-name DICOM files under ``directory`` by SOP Instance UID (temporary files, which
    start with a dot, are not final names)."""
    return {p.stem: p for p in directory.rglob("*.dcm") if not p.name.startswith(".")}


def assert_output_matches(directory: Path, expected: dict[str, Instance] | dict[str, bytes],
                          ) -> None:
    """Exactly the expected instances are there, each file whole, its data set bytes those of
    the source."""
    files = output_files(directory)
    assert sorted(files) == sorted(expected)
    for uid, path in files.items():
        meta, data = split_part10(path.read_bytes())
        assert meta["sop_instance_uid"] == uid
        source = expected[uid]
        wanted = bytes(source.data) if isinstance(source, Instance) else source
        assert bytes(data) == wanted, f"{path} differs from the source"


@attrs.define
class SendCounter:
    """What the embedded SCP sent (C-STORE sub-operations), per SOP Instance UID; ``gate``
    (when set) holds every send after ``gate_after`` sends until it is set."""

    sent: Counter[str] = attrs.Factory(Counter)
    gate_after: int | None = None
    gate: anyio.Event = attrs.Factory(anyio.Event)
    reached: anyio.Event = attrs.Factory(anyio.Event)

    @property
    def total(self) -> int:
        return sum(self.sent.values())


def count_sends(monkeypatch: pytest.MonkeyPatch) -> SendCounter:
    """Count the C-STOREs the embedded SCP sends (C-MOVE and C-GET sub-operations)."""
    counter = SendCounter()
    real_store = operations.store

    async def counting_store(channel: object, items: list[Instance], **kwargs: object) -> object:
        if counter.gate_after is not None and counter.total >= counter.gate_after:
            counter.reached.set()
            await counter.gate.wait()
        for item in items:
            counter.sent[item.sop_instance_uid] += 1
        return await real_store(channel, items, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(operations, "store", counting_store)
    return counter


@asynccontextmanager
async def serving(archive: Archive, ae_title: str = "AIOQR") -> AsyncIterator[QRServer]:
    with archive.index() as index:
        async with QRServer(ae_title, index, listen_port=0) as server:
            yield server
