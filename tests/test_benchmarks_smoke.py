"""The benchmark smoke run (``python -m benchmarks --quick``) works end to end.

Behaviour only: every client of every case gets all its data from the real peers and the
report carries the ratio columns. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from peers import require_executable, require_module
from peers.dcmtk import (
    DCMQRIDX,
    DCMQRSCP,
    ECHOSCU,
    FINDSCU,
    GETSCU,
    MOVESCU,
    STORESCP,
    STORESCU,
)

ROOT = Path(__file__).resolve().parent.parent


def _with_repository_on_path() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.mark.interop
def test_quick_benchmark_prints_the_table_with_ratios() -> None:
    for tool in (DCMQRSCP, DCMQRIDX, ECHOSCU, FINDSCU, GETSCU, MOVESCU, STORESCP, STORESCU):
        require_executable(tool)
    require_module("pynetdicom")
    require_module("numpy")
    env = _with_repository_on_path()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--hot-memory"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out[-4000:]}\n{proc.stderr[-4000:]}"
    header = next(line for line in out.splitlines() if line.startswith("| Case |"))
    assert "aiodicom ÷ pynetdicom" in header and "aiodicom ÷ DCMTK" in header
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for case in ("echo", "find-dcmqrscp", "get-dcmqrscp", "move-dcmqrscp", "store-small",
                 "store-cpu", "concurrency-10", "idle"):
        assert any(row.startswith(f"| {case} |") for row in rows), case
    # Each retrieval's aiodicom rows carry both ratios, measured against the other clients.
    get_rows = rows[next(i for i, r in enumerate(rows) if r.startswith("| get-dcmqrscp |")):]
    assert "**" in get_rows[0] and "vs pynetdicom" in get_rows[0] and "vs getscu" in get_rows[0]
    assert "FAILED" not in out
    # dcmqrscp's fixed cost per query and retrieval is measured, and the targets also give the
    # ratios without DCMTK's process start-up.
    assert sum(row.startswith("| retrieve-fixed-dcmqrscp |") for row in rows) == 1
    assert "without DCMTK's process start-up" in out
    assert "### Targets" in out and "### Headline" in out
    # The loop-lateness cases run too, and their own table reports them.
    assert "### Loop lateness" in out
    for case in ("lateness-find", "lateness-get", "lateness-move"):
        assert sum(row.startswith(f"| {case} |") for row in rows) == 2, case
    # The raw samples say that free memory was warmed before each client.
    results = out.rsplit("raw samples: ", 1)[1].split()[0]
    assert json.loads((ROOT / results).read_text())["hot_memory"] is True


@pytest.mark.interop
def test_a_second_interpreter_gets_rows_and_ratios_of_its_own() -> None:
    """``--python``: every aiodicom client, the storage SCP included, once more under the given
    interpreter, compared with the same DCMTK rounds; the report says which interpreter."""
    for tool in (DCMQRSCP, DCMQRIDX, GETSCU, STORESCP, STORESCU):
        require_executable(tool)
    require_module("pynetdicom")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--only",
         "get-dcmqrscp,store-small", "--python", sys.executable],
        cwd=ROOT, env=_with_repository_on_path(), capture_output=True, text=True, timeout=120,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"{out[-4000:]}\n{proc.stderr[-4000:]}"
    suffix = f", python {sys.version.split()[0]} "
    twins = [line for line in out.splitlines() if line.startswith("| ") and suffix in line]
    assert sum("aiodicom memory" in t for t in twins) == 1
    assert sum("aiodicom directory" in t and "vs getscu" in t for t in twins) == 1
    assert sum("acceptor + DirectorySink" in t and "vs storescp" in t for t in twins) == 1
    assert "- Second interpreter (--python): Python " in out
    assert "FAILED" not in out


def test_the_interpreter_is_described_by_its_build_and_its_speed() -> None:
    from benchmarks import machine

    about = machine.interpreter()
    with open("/proc/self/maps") as maps:
        shared = "libpython" in maps.read()
    assert about["libpython"] == ("shared library" if shared else "in the executable")
    assert about["reference_loop_ns"] > 0
    line = machine.markdown({**machine.describe(), "interpreter": about})
    assert f"- Interpreter: {about['executable']}, libpython {about['libpython']}" in line


@pytest.mark.parametrize("clients", range(1, 9))
def test_each_client_runs_in_every_place_and_after_every_other_alike(clients: int) -> None:
    from collections import Counter
    from itertools import pairwise

    from benchmarks.runner import round_order

    rounds = clients if clients % 2 == 0 else 2 * clients
    orders = [round_order(clients, run) for run in range(rounds)]
    assert all(sorted(order) == list(range(clients)) for order in orders)
    places = Counter((place, client) for order in orders for place, client in enumerate(order))
    assert set(places.values()) == {rounds // clients}
    if clients > 1:
        follows = Counter(pair for order in orders for pair in pairwise(order))
        assert len(follows) == clients * (clients - 1)  # every ordered pair of two clients
        assert len(set(follows.values())) == 1


def test_hot_memory_touches_what_a_case_moves_but_never_more_than_a_quarter_of_free_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import machine

    assert machine.warm_free_memory(8 << 20) == 8 << 20
    assert machine.warm_free_memory(0) == 0
    monkeypatch.setattr(machine, "_mem_available", lambda: 40 << 20)
    assert machine.warm_free_memory(1 << 40) == 10 << 20


def test_the_table_shows_how_far_the_runs_spread() -> None:
    """A median alone hides that this VM's runs swing by a third: each row shows its fastest
    and slowest run next to it (one run, or runs all alike: the median alone)."""
    from benchmarks.cases import Row
    from benchmarks.report import table

    def row(client: str, walls: list[float]) -> Row:
        return Row(
            case="get-dcmqrscp", title="", client=client, family="aiodicom", runs=len(walls),
            failures=0, wall=sorted(walls)[len(walls) // 2], throughput=1.0, unit="MB/s",
            cpu=0.3, peak_rss_mib=50.0, rss_before_mib=None,
            wall_min=min(walls), wall_max=max(walls),
        )

    lines = table([row("spread", [0.309, 0.382, 0.492]), row("alike", [0.3, 0.3])]).splitlines()
    assert "| 0.382 (0.309-0.492) |" in lines[2]
    assert "| 0.300 |" in lines[3]


def test_targets_show_how_far_single_rounds_stray_from_the_median_ratio() -> None:
    """Each round runs aiodicom and DCMTK one after the other: the ratio of their walls in one
    round is what a single run would have concluded. The targets show the middle half of those,
    beside the ratio of the medians."""
    from benchmarks.cases import Row, paired_rounds
    from benchmarks.report import targets

    # DCMTK's wall / ours, round by round: 0.5, 0.8, 1.0, 1.0, 1.2, 2.0 (ours first).
    ours = [2.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    dcmtk = [1.0, 0.8, 1.0, 1.0, 1.2, 2.0]
    low, high = paired_rounds(ours, dcmtk) or (0.0, 0.0)
    assert low == pytest.approx(0.725) and high == pytest.approx(1.4)
    # A failed run (None) drops its round; too few rounds say nothing.
    assert paired_rounds([1.0, None, 1.0], [1.0, 1.0, 1.0]) is None

    row = Row(
        case="store-small", title="", client="aiodicom acceptor + DirectorySink",
        family="aiodicom", runs=6, failures=0, wall=1.0, throughput=60.0, unit="MB/s", cpu=0.4,
        peak_rss_mib=50.0, rss_before_mib=None, vs_dcmtk=1.0, vs_dcmtk_ref="storescp",
        vs_dcmtk_rounds=(0.75, 1.4),
    )
    (verdict,) = [v for v in targets([row]) if v.target.startswith("store-small")]
    assert "= 1.00x (rounds, middle half: 0.75-1.40x)" in verdict.measured


@pytest.mark.interop
def test_store_path_probe_splits_storescus_wall_into_ours_and_its() -> None:
    """``--storescu``: DCMTK's storescu sends the C-STOREs; each round says how many reads a
    C-STORE took, our time from its first bytes and from its last read, and storescu's, and our
    own after each response until the serving task waits again."""
    require_module("numpy")
    require_executable(STORESCU)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.store_path", "--quick", "--rounds", "1", "--storescu"],
        cwd=ROOT, env=_with_repository_on_path(), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("round 1:")]
    for part in ("us per C-STORE in all", "reads per C-STORE", "ours from its first bytes",
                 "from its last read", "storescu's turnaround",
                 "ours after the response until waiting again",
                 "reads per C-STORE tried on the socket for nothing"):
        assert part in line, line


def test_store_path_probe_splits_a_c_store_at_every_layer_boundary() -> None:
    """``python -m benchmarks.store_path`` times each boundary a C-STORE crosses in our
    storage SCP: every boundary is reached, in the order listed, with the two system calls
    that make the file among them."""
    require_module("numpy")  # the corpus generator draws its pixels with numpy
    from benchmarks.store_path import BOUNDARIES

    env = _with_repository_on_path()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.store_path", "--quick", "--rounds", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    lines = proc.stdout.splitlines()
    assert any("critical path" in line and "in writev and link" in line for line in lines)
    # Each boundary's line: the microseconds, then its label and layer.
    reported = [line.split(None, 1)[1] for line in lines if line.startswith("  ")]
    labels = [label for label, *_ in BOUNDARIES] + ["response handed to the transport"]
    assert [next(label for label in labels if text.startswith(label)) for text in reported] \
        == labels
