"""What a benchmark case is (its clients, what they are compared with, their samples) and the
rows and speed ratios summarizing it: the data of :mod:`benchmarks.runner`, kept apart from the
running."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks.measure import Sample

if TYPE_CHECKING:
    from benchmarks.runner import Bench

FAMILIES = ("aiodicom", "pynetdicom", "dcmtk")


@dataclass
class Client:
    label: str
    family: str
    run: Callable[[], Sample]
    note: str = ""


@dataclass
class Comparison:
    """On the row of ``aio``: its speed over ``pyn``'s and over ``dcmtk``'s (same work)."""

    aio: str
    pyn: str | None
    dcmtk: str | None


@dataclass
class Case:
    key: str
    title: str
    unit: str  # "MB/s", "matches/s", "ms/assoc", "ops/s", "objects/s", "idle CPU"
    work_bytes: int | None
    work_count: int | None
    clients: list[Client]
    comparisons: list[Comparison] = field(default_factory=list)
    warmup: list[str] = field(default_factory=list)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    note: str = ""
    busy_before: float | None = None  # % of the machine busy with others' work before the case


@dataclass
class Row:
    case: str
    title: str
    client: str
    family: str
    runs: int
    failures: int
    wall: float | None
    throughput: float | None
    unit: str
    cpu: float | None
    peak_rss_mib: float | None
    rss_before_mib: float | None
    work_count: int | None = None
    busy_before: float | None = None
    vs_pyn: float | None = None
    vs_pyn_ref: str | None = None
    vs_dcmtk: float | None = None
    vs_dcmtk_ref: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The fastest and slowest wall time of the successful runs: on a VM whose speed swings
    #: between runs, a ratio inside this spread decides little.
    wall_min: float | None = None
    wall_max: float | None = None
    #: The middle half (first and third quartile) of the ratios to the DCMTK row taken round
    #: by round (both ran within seconds of each other): how far one round's verdict can stray.
    vs_dcmtk_rounds: tuple[float, float] | None = None


def _median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else None


def _throughput(case: Case, client: str, wall: float | None, samples: list[Sample]) -> float | None:
    if wall is None or wall <= 0:
        return None
    if case.unit == "ms/assoc":
        assert case.work_count
        return wall / case.work_count * 1000.0
    if case.unit == "MB/s":
        assert case.work_bytes
        return case.work_bytes / wall / 1e6
    if case.unit == "ops/s":
        ops = _median([s.extra.get("ops_wall", float("nan")) for s in samples if s.ok])
        count = _median([float(s.count or 0) for s in samples if s.ok])
        if ops and count:
            return count / ops
        return None
    if case.unit == "idle CPU %":
        cpu = _median([s.cpu for s in samples if s.ok])
        return None if cpu is None else cpu / wall * 100.0
    assert case.work_count
    return case.work_count / wall


def summarize(case: Case) -> list[Row]:
    rows: dict[str, Row] = {}
    for client in case.clients:
        samples = case.samples.get(client.label, [])
        good = [s for s in samples if s.ok]
        wall = _median([s.wall for s in good])
        rows[client.label] = Row(
            case=case.key, title=case.title, client=client.label, family=client.family,
            runs=len(samples), failures=len(samples) - len(good), wall=wall,
            throughput=_throughput(case, client.label, wall, good), unit=case.unit,
            cpu=_median([s.cpu for s in good]),
            peak_rss_mib=_median([s.peak_rss_kb / 1024 for s in good]),
            rss_before_mib=_median(
                [s.extra["rss_before_kb"] / 1024 for s in good if "rss_before_kb" in s.extra]
            ),
            error=next((s.error for s in samples if not s.ok and s.error), None),
            extra=_extra_medians(good),
            work_count=case.work_count,
            busy_before=case.busy_before,
            wall_min=min((s.wall for s in good), default=None),
            wall_max=max((s.wall for s in good), default=None),
        )
    for comp in case.comparisons:
        row = rows.get(comp.aio)
        if row is None:
            continue
        for ref, attr in ((comp.pyn, "vs_pyn"), (comp.dcmtk, "vs_dcmtk")):
            other = rows.get(ref) if ref else None
            if other is None:
                continue
            setattr(row, attr, _speed_ratio(case, row, other))
            setattr(row, attr + "_ref", ref)
        if comp.dcmtk and case.unit in _WALL_UNITS:
            row.vs_dcmtk_rounds = paired_rounds(
                [s.wall if s.ok else None for s in case.samples.get(comp.aio, [])],
                [s.wall if s.ok else None for s in case.samples.get(comp.dcmtk, [])],
            )
    return list(rows.values())


# Units computed from wall time for one amount of work: a round's speed ratio is ref / aio wall.
_WALL_UNITS = ("MB/s", "matches/s", "objects/s", "ms/assoc")


def paired_rounds(
    aio_walls: Sequence[float | None], ref_walls: Sequence[float | None]
) -> tuple[float, float] | None:
    """The first and third quartile of ``ref / aio`` wall time, round by round (sample i of
    each client ran in round i, one after the other); ``None`` with fewer than 4 rounds."""
    ratios = [
        ref / aio for aio, ref in zip(aio_walls, ref_walls, strict=False) if aio and ref and aio > 0
    ]
    if len(ratios) < 4:
        return None
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return q1, q3


def _extra_medians(samples: list[Sample]) -> dict[str, Any]:
    keys = {k for s in samples for k, v in s.extra.items() if isinstance(v, (int, float))}
    out: dict[str, Any] = {}
    for k in sorted(keys):
        m = _median(
            [float(s.extra[k]) for s in samples if isinstance(s.extra.get(k), (int, float))]
        )
        if m is not None:
            out[k] = m
    return out


def _speed_ratio(case: Case, aio: Row, other: Row) -> float | None:
    """How many times faster aiodicom is (> 1: faster)."""
    if aio.throughput is None or other.throughput is None or aio.throughput == 0:
        return None
    if case.unit in ("ms/assoc",):
        return other.throughput / aio.throughput
    if case.unit == "idle CPU %":
        return None
    if other.throughput == 0:
        return None
    return aio.throughput / other.throughput


def worker_twins(
    bench: Bench, case: Case, relabel: Callable[[str], str], params: dict[str, Any]
) -> list[Client]:
    """Each aiodicom worker of ``case`` once more with ``params`` added to its own, as rows
    labelled ``relabel(label)`` (``--uvloop``, ``--python``). Servers (C-STORE receive) are
    started differently and twinned where they are made; a twin is not twinned again."""
    twins = []
    for client in case.clients:
        spec = getattr(client.run, "worker_spec", None)
        if client.family != "aiodicom" or spec is None or params.keys() & spec[2].keys():
            continue
        library, task, own, clear = spec
        twins.append(Client(relabel(client.label), client.family,
                            bench._worker(library, task, {**own, **params}, clear)))
    return twins
