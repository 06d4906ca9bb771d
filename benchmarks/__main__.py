"""``python -m benchmarks`` (full run, about 10-15 minutes) or ``python -m benchmarks --quick``
(smoke run, well under a minute). See benchmarks/README.md."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import pstats
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import _paths, eventloop, machine, measure, report
from benchmarks.cases import _WALL_UNITS, Row, paired_rounds
from benchmarks.runner import PROFILES, Bench


def _fill_rounds(rows: list[Row], cases: list[dict[str, Any]]) -> None:
    samples = {case["key"]: case["samples"] for case in cases}
    for row in rows:
        walls = samples.get(row.case, {})
        if row.vs_dcmtk_rounds is None and row.vs_dcmtk_ref and row.unit in _WALL_UNITS:
            row.vs_dcmtk_rounds = paired_rounds(*(
                [s["wall"] if s["ok"] else None for s in walls.get(label, [])]
                for label in (row.client, row.vs_dcmtk_ref)
            ))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: small corpus, 1 run")
    parser.add_argument("--runs", type=int, help="runs per client (default: 3, quick: 1)")
    parser.add_argument(
        "--only", help="comma-separated case prefixes, e.g. 'get,find-many,echo,store-small'"
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="run aiodicom's workers under cProfile; print their hottest functions",
    )
    parser.add_argument(
        "--experiments", action="store_true",
        help="add clients measuring proposed library changes (benchmarks/experiments.py)",
    )
    parser.add_argument(
        "--uvloop", action="store_true",
        help="also measure every aiodicom worker with uvloop as its event loop (rows ', uvloop')",
    )
    parser.add_argument(
        "--python", metavar="PATH",
        help="also measure every aiodicom client under this interpreter (its rows end in "
        "', python X.Y.Z'; it needs pydicom, anyio and attrs; benchmarks/interpreters.py)",
    )
    parser.add_argument(
        "--hot-memory", action="store_true",
        help="before each timed client of a case that moves data, touch and free twice its "
        "bytes, so that no client pays the VM's host for pages it writes (machine.py)",
    )
    parser.add_argument(
        "--py-spy", action="store_true",
        help="sample aiodicom's workers with py-spy (must be installed); raw stacks are kept",
    )
    parser.add_argument(
        "--report-only", metavar="RESULTS_JSON",
        help="print the report of an earlier run from its results.json, measure nothing",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the report")
    args = parser.parse_args(argv)

    if args.report_only:
        data = json.loads(Path(args.report_only).read_text())
        rows = [Row(**r) for r in data["rows"]]
        _fill_rounds(rows, data["cases"])  # a results.json from before they were kept
        text = render(rows, data["machine"], data["profile"]["name"], data["profile"]["runs"],
                      data.get("series", "263 MB series of 500 CT slices 512x512"),
                      data["setup_seconds"], data["total_seconds"], Path(args.report_only))
        print(text)
        return 0

    profile = PROFILES["quick" if args.quick else "full"]
    if args.runs:
        profile = dataclasses.replace(profile, runs=args.runs)
    only = {k.strip() for k in args.only.split(",") if k.strip()} if args.only else None
    bench = Bench(profile, only, verbose=not args.quiet, experiments=args.experiments,
                  uvloop=args.uvloop, hot_memory=args.hot_memory, python=args.python)
    if args.py_spy:
        measure.SAMPLING_DIR = bench.work / "py-spy"
        shutil.rmtree(measure.SAMPLING_DIR, ignore_errors=True)
    if args.profile:
        measure.PROFILE_DIR = bench.work / "profiles"
        shutil.rmtree(measure.PROFILE_DIR, ignore_errors=True)
    try:
        bench.setup()
        bench.run_all()
    finally:
        bench.teardown()
    results = bench.save()
    rows = bench.rows()
    text = render(rows, bench.machine_info, profile.name, profile.runs,
                  bench.series_text(), bench.setup_seconds, time.monotonic() - bench.started,
                  results)
    (bench.work / "report.md").write_text(text + "\n")
    print(text)
    if measure.PROFILE_DIR is not None:
        print_profiles(measure.PROFILE_DIR)
    failures = sum(r.failures for r in rows if r.family == "aiodicom" or r.family == "dcmtk")
    return 1 if failures else 0


def render(rows: list[Row], info: dict[str, Any], profile: str, runs: int, series: str,
           setup_seconds: float, total_seconds: float, results: Path) -> str:
    try:
        where = results.resolve().relative_to(_paths.ROOT)
    except ValueError:
        where = results
    errors = report.errors(rows)
    return "\n\n".join(part for part in [
        f"## Benchmark results ({profile} profile, {runs} run(s) per client)",
        machine.markdown(info),
        report.case_titles(rows),
        report.table(rows),
        "### Targets",
        report.targets_table(report.targets(rows)),
        eventloop.table(rows),
        "### Headline",
        report.headline(rows, info, series),
        ("### Failures\n\n" + errors) if errors else "",
        f"Set-up {setup_seconds:.0f} s, whole run {total_seconds / 60:.1f} min; raw samples: "
        f"{where}",
    ] if part)


def print_profiles(directory: Path, top: int = 25) -> None:
    for path in sorted(directory.glob("*.pstats")):
        out = io.StringIO()
        stats = pstats.Stats(str(path), stream=out)
        stats.sort_stats("tottime").print_stats(top)
        print(f"\n### cProfile {path.name} (by own time)\n")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


if __name__ == "__main__":
    sys.exit(main())
