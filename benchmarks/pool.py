"""The association pool: many small C-FINDs (1 match each) against DCMTK dcmqrscp.

Clients, each doing the same C-FINDs (SERIES level, one match), one after the other and 50 at a
time:

- aiodicom pooled: the default :class:`~aiodicom.PoolOptions` (associations reused, at most 4
  to the peer);
- aiodicom unpooled: ``PoolOptions(idle_timeout=0)``, a fresh association for every C-FIND (up
  to 50 at once);
- pynetdicom reusing its association (its best practice): one association for the sequential
  run; for 50 at a time, 50 threads with an association each (pynetdicom associations are not
  safe to share between threads), each reusing it.

A one-match C-FIND measures what a client spends per request, so the target cases
(``pool-find-seq``, ``pool-find-50``) ask a dcmqrscp whose archive holds only the first
:data:`SMALL_ARCHIVE` instances of the big series (the same study and series, so the same
query). dcmqrscp reads its whole index file on every C-FIND: against the runner's archive of
the 500-instance series it spends about 0.5 ms of its own per find, as much as the pooled
client's whole round trip. ``pool-find-seq-big`` runs the sequential case against that archive
too, as a reference (not a target); the 50-at-a-time case is not repeated there (pynetdicom's
50 threads can take 12 s a run).

Every client does one untimed C-FIND first (imports, first association). The ratios
pooled/unpooled and pooled/pynetdicom are logged after each case and kept in its note.

Runs as part of ``python -m benchmarks`` (``--only pool``); this module is also the worker
process of those clients (``python -m benchmarks.pool SPEC``). ``AIODICOM_BENCH_POOL_N``
overrides the number of C-FINDs (full: 1000, quick: 100; the quick run leaves pynetdicom out of
the 50-at-a-time case unless the number is given: its threads lose responses and wait out its
DIMSE timeout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

from benchmarks import _paths
from benchmarks.measure import Sample, _last_json_line, _sample_from, _worker_env, failed

if TYPE_CHECKING:
    from benchmarks.runner import Bench

WORKER_TIMEOUT = 600.0
AT_ONCE = 50
SMALL_ARCHIVE = 5
"""Instances in the dcmqrscp archive of the target cases: a one-match C-FIND there costs the
peer little, so the cases measure what each client spends per request."""


# --------------------------------------------------------------------------------------------
# The runner's side
# --------------------------------------------------------------------------------------------


def _run(library: str, params: dict[str, Any]) -> Sample:
    spec = json.dumps({"library": library, "params": params})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.pool", spec], capture_output=True, text=True,
            timeout=WORKER_TIMEOUT, env=_worker_env(library, "pool"), cwd=_paths.ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return failed(f"{library} pool: no result within {WORKER_TIMEOUT} s")
    result = _last_json_line(proc.stdout)
    if result is None:
        return failed(f"{library} pool exited {proc.returncode}: {proc.stderr[-2000:]}")
    return _sample_from(result, proc.stderr if not result.get("ok") else "")


def case_pool(bench: Bench) -> None:
    """Register and run the pool cases on ``bench`` (its corpus; the small dcmqrscp archive
    is started here, the 500-instance one is the runner's)."""
    from benchmarks.peers import start_dcmqrscp
    from benchmarks.runner import HOST

    if not bench.wanted("pool"):
        return
    assert bench.corpus is not None
    series = bench.corpus.big
    quick = bench.profile.name == "quick"
    n = int(os.environ.get("AIODICOM_BENCH_POOL_N", 100 if quick else 1000))
    base = {"called": "QRSCP", "study_uid": series.study_uid,
            "series_uid": series.series_uid, "n": n}
    small_keys = ("pool-find-seq", f"pool-find-{AT_ONCE}")
    if any(bench.wanted(key) for key in small_keys):
        bench.log(f"starting dcmqrscp (the first {SMALL_ARCHIVE} instances of the big series) "
                  "...")
        small = start_dcmqrscp(bench.profile.name, "dcmqrscp-small", [series], bench.dest,
                               log=bench.log, first=SMALL_ARCHIVE)
        bench.stoppers.append(small.stop)
        archive = f"dcmqrscp, {min(SMALL_ARCHIVE, series.n)}-instance archive"
        for key, at_once in zip(small_keys, (1, AT_ONCE), strict=True):
            _case(bench, key, {**base, "host": HOST, "port": small.port, "at_once": at_once},
                  archive, quick)
    # The same sequential finds against the archive of the whole series, for reference: there
    # dcmqrscp's own time per C-FIND (it reads its index file through on every query) is about
    # half the pooled client's wall time, which bounds every ratio.
    _case(bench, "pool-find-seq-big", {**base, "host": HOST, "port": bench.qr.port,
                                       "at_once": 1},
          f"dcmqrscp, {series.n}-instance archive; reference, not a target", quick)


def _case(bench: Bench, key: str, p: dict[str, Any], archive: str, quick: bool) -> None:
    from benchmarks.cases import Case, Client, Comparison

    if not bench.wanted(key):
        return
    n, at_once = p["n"], p["at_once"]
    pooled = "aiodicom pooled (default options)"
    unpooled = "aiodicom unpooled (idle_timeout=0)"
    pyn = "pynetdicom, association reused" + (" (one per thread)" if at_once > 1 else "")
    clients = [
        Client(pooled, "aiodicom", lambda: _run("aiodicom", {**p, "mode": "pooled"})),
        Client(unpooled, "aiodicom", lambda: _run("aiodicom", {**p, "mode": "unpooled"})),
    ]
    if at_once == 1 or not quick or "AIODICOM_BENCH_POOL_N" in os.environ:
        # 50 pynetdicom threads lose responses and then wait out its DIMSE timeout: too
        # slow for the smoke run.
        clients.append(Client(pyn, "pynetdicom", lambda: _run("pynetdicom", p)))
    if at_once > 1:
        clients.insert(1, Client(
            f"aiodicom pooled, max_associations={at_once}", "aiodicom",
            lambda: _run("aiodicom", {**p, "mode": "pooled", "max": at_once}),
        ))
    how = "one after the other" if at_once == 1 else f"{at_once} at a time"
    case = Case(
        key, f"{n} C-FINDs of 1 match each, {how} ({archive})", "matches/s", None, n, clients,
        [Comparison(pooled, pyn, None)],
    )
    bench.run_case(case)
    case.note = _ratios(case, pooled, unpooled, pyn)
    bench.log(f"    {case.note}")


def _ratios(case: Any, pooled: str, unpooled: str, pyn: str) -> str:
    import statistics

    def median_wall(label: str) -> float | None:
        walls = [s.wall for s in case.samples.get(label, []) if s.ok]
        return statistics.median(walls) if walls else None

    mine = median_wall(pooled)
    parts = []
    for label in (unpooled, pyn):
        other = median_wall(label)
        if mine and other:
            parts.append(f"pooled is {other / mine:.1f}x {label}")
    return "; ".join(parts) or "ratios unavailable (failed samples)"


# --------------------------------------------------------------------------------------------
# The worker's side (a process per measurement)
# --------------------------------------------------------------------------------------------


async def _aiodicom(p: dict[str, Any]) -> dict[str, Any]:
    import anyio

    import aiodicom
    from aiodicom import PoolOptions, Query
    from benchmarks.worker import Meter

    n, at_once = p["n"], p["at_once"]
    if p["mode"] == "unpooled":
        options = PoolOptions(idle_timeout=0, max_associations=max(4, at_once))
    else:
        options = PoolOptions(max_associations=p.get("max", PoolOptions().max_associations))
    query = Query.series(StudyInstanceUID=p["study_uid"], SeriesInstanceUID=p["series_uid"])
    async with aiodicom.Client(
        "AIOBENCH", peer=(p["host"], p["port"], p["called"]), pool=options
    ) as client:
        warm = len(await client.find(query).all())
        matches = 0

        async def caller(count: int) -> None:
            nonlocal matches
            for _ in range(count):
                found = len(await client.find(query).all())  # not 'matches += await ...',
                matches += found  # which would read 'matches' before the await

        m = Meter()
        async with anyio.create_task_group() as tasks:
            for index in range(at_once):
                tasks.start_soon(caller, n // at_once + (index < n % at_once))
        return m.result(count=n, ok=warm == 1 and matches == n, matches=matches)


def _pynetdicom(p: dict[str, Any]) -> dict[str, Any]:
    from pydicom.dataset import Dataset
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    from benchmarks.worker import EXPLICIT_VR_LE, IMPLICIT_VR_LE, Meter, _pyn_ae, _pyn_nodelay

    n, at_once = p["n"], p["at_once"]
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = p["study_uid"]
    identifier.SeriesInstanceUID = p["series_uid"]
    errors: list[str] = []
    matches = [0]
    lock = threading.Lock()
    ready = threading.Barrier(at_once + 1, timeout=300)

    def one_find(assoc: Any) -> int:
        found = 0
        for status, match in assoc.send_c_find(identifier, FIND):
            if status and status.Status in (0xFF00, 0xFF01) and match is not None:
                found += 1
        return found

    def thread(count: int) -> None:
        # One AE per thread: pynetdicom's associations of one AE lose responses when used from
        # several threads (see pyn_concurrency in benchmarks/worker.py).
        ae = _pyn_ae(p, "PYNBENCH")
        # A lost response would otherwise cost the default 120 s (as in pyn_concurrency).
        ae.dimse_timeout = 10
        ae.add_requested_context(FIND, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
        assoc = ae.associate(p["host"], p["port"], ae_title=p["called"],
                             evt_handlers=[(evt.EVT_CONN_OPEN, _pyn_nodelay)])
        try:
            if not assoc.is_established:
                errors.append("association not established")
                ready.abort()
                return
            first = one_find(assoc)  # untimed, like the others' first C-FIND
            ready.wait()
            found = sum(one_find(assoc) for _ in range(count))
            with lock:
                matches[0] += found
            if first != 1:
                errors.append(f"first C-FIND found {first}")
        finally:
            if assoc.is_established:
                assoc.release()

    threads = [
        threading.Thread(target=thread, args=(n // at_once + (i < n % at_once),), daemon=True)
        for i in range(at_once)
    ]
    for t in threads:
        t.start()
    ready.wait()
    m = Meter()
    for t in threads:
        t.join()
    # Its threads are known to lose responses with many concurrent associations: a C-FIND that
    # ended without its match is counted (lost_matches), not made a failed sample.
    return m.result(count=n, ok=not errors, matches=matches[0], lost_matches=n - matches[0],
                    error="; ".join(errors[:3]) or None)


def main(argv: list[str]) -> int:
    from benchmarks.worker import emit, peak_rss_kb

    spec = json.loads(argv[1])
    try:
        if spec["library"] == "aiodicom":
            import anyio

            result: dict[str, Any] = anyio.run(_aiodicom, spec["params"])
        else:
            result = _pynetdicom(spec["params"])
    except Exception as exc:  # reported, not raised: the runner records the failed sample
        import traceback

        traceback.print_exc()
        emit({"ok": False, "error": f"{type(exc).__name__}: {exc}", "peak_rss_kb": peak_rss_kb()})
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
