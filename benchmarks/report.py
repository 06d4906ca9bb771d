"""The markdown table, the speed targets checked against it, and the headline ratios."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.cases import Row
from benchmarks.fixed_cost import without_start

RATIO_PYN = "aiodicom ÷ pynetdicom"
RATIO_DCMTK = "aiodicom ÷ DCMTK"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def _throughput(row: Row) -> str:
    if row.throughput is None:
        return "FAILED" if row.failures else "-"
    if row.unit == "idle CPU %":
        return f"{row.throughput:.2f} % of a core"
    return f"{_num(row.throughput, 1 if row.unit != 'ms/assoc' else 2)} {row.unit}"


def _ratio(value: float | None, ref: str | None) -> str:
    if value is None or ref is None:
        return ""
    return f"**{value:.2f}x** vs {ref}"


def _wall(row: Row) -> str:
    """The median wall time, and its spread over the runs when there were several."""
    text = _num(row.wall, 3)
    low, high = row.wall_min, row.wall_max
    if row.wall is not None and low is not None and high is not None and high > low:
        text += f" ({_num(low, 3)}-{_num(high, 3)})"
    return text


def table(rows: Iterable[Row]) -> str:
    lines = [
        "| Case | Client | Median wall (s) (fastest-slowest) | Throughput | Client CPU (s) "
        "| Peak RSS (MiB) "
        f"| {RATIO_PYN} | {RATIO_DCMTK} |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    last_case = None
    for row in rows:
        case = row.case if row.case != last_case else ""
        last_case = row.case
        runs = f" ({row.failures}/{row.runs} runs FAILED)" if row.failures else ""
        lines.append(
            f"| {case} | {row.client}{runs} | {_wall(row)} | {_throughput(row)} "
            f"| {_num(row.cpu, 2)} | {_num(row.peak_rss_mib, 0)} "
            f"| {_ratio(row.vs_pyn, row.vs_pyn_ref)} | {_ratio(row.vs_dcmtk, row.vs_dcmtk_ref)} |"
        )
    return "\n".join(lines)


def case_titles(rows: Iterable[Row]) -> str:
    seen: dict[str, str] = {}
    for row in rows:
        busy = "" if row.busy_before is None else f" [machine {row.busy_before:.0f} % busy before]"
        seen.setdefault(row.case, row.title + busy)
    return "\n".join(f"- `{key}`: {title}" for key, title in seen.items())


def errors(rows: Iterable[Row]) -> str:
    out = [f"- {r.case} / {r.client}: {r.error.strip().splitlines()[-1][:300]}"
           for r in rows if r.error]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


def _find(rows: list[Row], case: str, client: str) -> Row | None:
    return next((r for r in rows if r.case == case and r.client == client), None)


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _rounds(row: Row) -> str:
    """How far single rounds stray: the middle half of the round-by-round ratios to DCMTK."""
    if row.vs_dcmtk_rounds is None:
        return ""
    low, high = row.vs_dcmtk_rounds
    return f" (rounds, middle half: {low:.2f}-{high:.2f}x)"


def _cpu_ratio(rows: list[Row], row: Row, ref: str | None) -> str:
    """The client CPU seconds of aiodicom and of ``ref`` for the same work."""
    other = _find(rows, row.case, ref) if ref else None
    if other is None or other.cpu is None or row.cpu is None:
        return ""
    return f" (client CPU {row.cpu:.2f} s vs {other.cpu:.2f} s)"


def _without_start(rows: list[Row], case: str, row: Row) -> str:
    """The same ratio with DCMTK's process start and exit left out (benchmarks/fixed_cost.py)."""
    dcmtk = _find(rows, case, row.vs_dcmtk_ref) if row.vs_dcmtk_ref else None
    ratio = without_start(rows, case, row, dcmtk) if dcmtk is not None else None
    return "" if ratio is None else f"; {ratio:.2f}x without DCMTK's process start-up"


def targets(rows: list[Row]) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for case in sorted({r.case for r in rows if r.case.startswith(("get-", "move-"))}):
        for client in ("aiodicom memory", "aiodicom directory"):
            row = _find(rows, case, client)
            if row is None:
                continue
            verdicts.append(Verdict(
                f"{case}, {client}: MB/s ≥ DCMTK ({row.vs_dcmtk_ref})",
                f"{_num(row.throughput, 0)} MB/s = {_x(row.vs_dcmtk)}{_rounds(row)}"
                + _without_start(rows, case, row) + _cpu_ratio(rows, row, row.vs_dcmtk_ref),
                _at_least(row.vs_dcmtk, 1.0),
            ))
            verdicts.append(Verdict(
                f"{case}, {client}: MB/s ≥ 4x pynetdicom ({row.vs_pyn_ref})",
                _x(row.vs_pyn) + _cpu_ratio(rows, row, row.vs_pyn_ref),
                _at_least(row.vs_pyn, 4.0),
            ))
    for case in sorted({r.case for r in rows if r.case.startswith("find-")}):
        row = _find(rows, case, "aiodicom")
        if row is None:
            continue
        verdicts.append(Verdict(
            f"{case}: matches/s ≥ findscu", f"{_num(row.throughput, 0)} matches/s = "
            f"{_x(row.vs_dcmtk)}{_rounds(row)}" + _without_start(rows, case, row)
            + _cpu_ratio(rows, row, row.vs_dcmtk_ref),
            _at_least(row.vs_dcmtk, 1.0),
        ))
        verdicts.append(Verdict(
            f"{case}: matches/s ≥ 5x pynetdicom",
            _x(row.vs_pyn) + _cpu_ratio(rows, row, row.vs_pyn_ref), _at_least(row.vs_pyn, 5.0)
        ))
    for case in sorted({r.case for r in rows if r.case.startswith("pool-find-")}):
        if case.endswith("-big"):
            continue  # the reference against the 500-instance archive, not a target
        pooled = _find(rows, case, "aiodicom pooled (default options)")
        if pooled is None or not pooled.throughput:
            continue
        for label, name in (("aiodicom unpooled (idle_timeout=0)", "unpooled"),
                            ("pynetdicom, association reused", "pynetdicom reusing one "
                             "association"),
                            ("pynetdicom, association reused (one per thread)",
                             "pynetdicom, one association per thread")):
            other = _find(rows, case, label)
            if other is None:
                continue
            ratio = pooled.throughput / other.throughput if other.throughput else None
            verdicts.append(Verdict(
                f"{case}: pooled C-FINDs ≥ 5x {name}",
                f"{_num(pooled.throughput, 0)} vs {_num(other.throughput, 0)} matches/s = "
                f"{_x(ratio)}", _at_least(ratio, 5.0),
            ))
    row = _find(rows, "echo", "aiodicom")
    if row is not None:
        verdicts.append(Verdict(
            "associate + echo + release ≥ 10x faster than pynetdicom",
            f"{_num(row.throughput, 2)} ms vs pynetdicom = {_x(row.vs_pyn)}",
            _at_least(row.vs_pyn, 10.0),
        ))
    for case in ("store-small", "store-large"):
        row = _find(rows, case, "aiodicom acceptor + DirectorySink")
        if row is None:
            continue
        bit = _find(rows, case, "storescp +B -pdu 131072")
        extra = ""
        if bit is not None and bit.throughput and row.throughput:
            extra = f"; vs storescp +B: {_x(row.throughput / bit.throughput)}"
        verdicts.append(Verdict(
            f"{case}: C-STORE receive MB/s ≥ DCMTK storescp"
            + (" (target set for small objects)" if case == "store-small" else " (reference)"),
            f"{_num(row.throughput, 0)} MB/s = {_x(row.vs_dcmtk)}{_rounds(row)}{extra}"
            + _cpu_ratio(rows, row, row.vs_dcmtk_ref),
            _at_least(row.vs_dcmtk, 1.0),
        ))
    conc = sorted({r.case for r in rows if r.case.startswith("concurrency-")},
                  key=lambda c: int(c.split("-")[1]))
    if conc:
        top = conc[-1]
        for client in ("aiodicom echo", "aiodicom find (dcmqrscp)"):
            row = _find(rows, top, client)
            if row is not None:
                verdicts.append(Verdict(
                    f"{top.split('-')[1]} concurrent associations in one process ({client})",
                    f"{row.runs - row.failures}/{row.runs} runs complete, "
                    f"{_num(row.throughput, 0)} ops/s, peak RSS {_num(row.peak_rss_mib, 0)} MiB",
                    row.failures == 0 and row.runs > 0,
                ))
    row = _find(rows, "idle", "aiodicom")
    if row is not None:
        verdicts.append(Verdict(
            "no CPU used by idle associations (< 0.5 % of one core)",
            _throughput(row), None if row.throughput is None else row.throughput < 0.5,
        ))
    for r in rows:
        if (r.client == "aiodicom directory" or (r.case == "store-large" and r.family ==
                                                 "aiodicom")) and r.peak_rss_mib is not None:
            verdicts.append(Verdict(
                f"{r.case} ({r.client}): peak RSS streaming to a directory < 150 MiB",
                f"{r.peak_rss_mib:.0f} MiB (of which {r.rss_before_mib or 0:.0f} MiB before "
                "the retrieval: interpreter and imports)",
                r.peak_rss_mib < 150,
            ))
    return verdicts


def targets_table(verdicts: list[Verdict]) -> str:
    lines = ["| Target | Measured | Met |", "|---|---|---|"]
    for v in verdicts:
        met = "n/a" if v.met is None else ("yes" if v.met else "**NO**")
        lines.append(f"| {v.target} | {v.measured} | {met} |")
    return "\n".join(lines)


def headline(rows: list[Row], machine: dict[str, object], series: str) -> str:
    """One paragraph of the ratios that matter, for the README."""
    parts: list[str] = []

    def retrieval(case: str, what: str) -> None:
        row = _find(rows, case, "aiodicom directory") or _find(rows, case, "aiodicom memory")
        mem = _find(rows, case, "aiodicom memory")
        if row is None or mem is None:
            return
        parts.append(
            f"{what}: {_num(mem.throughput, 0)} MB/s into memory and "
            f"{_num(row.throughput, 0)} MB/s to a directory ({_x(mem.vs_pyn)} / "
            f"{_x(row.vs_pyn)} pynetdicom, {_x(row.vs_dcmtk)} DCMTK to disk)"
        )

    retrieval("get-dcmqrscp", "C-GET from dcmqrscp")
    retrieval("move-dcmqrscp", "C-MOVE from dcmqrscp")
    retrieval("get-orthanc", "C-GET from Orthanc")
    retrieval("move-orthanc", "C-MOVE from Orthanc")
    for case, what in (("find-dcmqrscp", "C-FIND"), ("find-many-dcmqrscp", "C-FIND")):
        row = _find(rows, case, "aiodicom")
        if row is not None and row.throughput is not None:
            parts.append(
                f"{what} of {row.work_count:,} matches at {_num(row.throughput, 0)} matches/s "
                f"({_x(row.vs_pyn)} pynetdicom, {_x(row.vs_dcmtk)} findscu)"
            )
    row = _find(rows, "echo", "aiodicom")
    if row is not None:
        parts.append(
            f"associate + C-ECHO + release in {_num(row.throughput, 2)} ms "
            f"({_x(row.vs_pyn)} faster than pynetdicom)"
        )
    row = _find(rows, "store-small", "aiodicom acceptor + DirectorySink")
    if row is not None:
        parts.append(
            f"receiving small C-STOREs to disk at {_x(row.vs_dcmtk)} the speed of DCMTK storescp"
        )
    intro = (
        f"Measured in one run on a {machine.get('nproc')}-core {machine.get('cpu')} over "
        "loopback against real DCMTK and Orthanc peers (TCP_NODELAY on), medians of "
        f"alternating runs; {series}: "
    )
    return intro + "; ".join(parts) + "."
