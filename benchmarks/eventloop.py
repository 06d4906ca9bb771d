"""The event loop: how long aiodicom holds it, and aiodicom on uvloop.

Loop lateness (``python -m benchmarks --only lateness``): a ticker task on the same event loop
as aiodicom asks to wake every 5 ms and records how late it wakes; a web handler on that loop
would wait as long. Three kinds of work run meanwhile: 20 concurrent C-FINDs of 500 matches
each (dcmqrscp), a C-GET of the 263 MB series into a :class:`~aiodicom.sinks.DirectorySink`
and a C-MOVE of it into memory. The target (issue: a responsive loop) is p99 <= 10 ms and
max <= 50 ms in every case.

``AIODICOM_LATENESS_STACKS=<file>`` (diagnostics, not part of a normal run) also records where
the loop was stuck: a watchdog thread samples the main thread's stack every millisecond while
the ticker is more than :data:`STALL` late, and writes the stacks, counted, to that file.

uvloop (``python -m benchmarks --uvloop``, ``pip install uvloop``): every aiodicom worker runs a
second time on uvloop, as a row of its own next to the asyncio one.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.runner import Bench, Case, Client, Row

PERIOD = 0.005
"""How often the ticker asks to run (the 5 ms of the issue)."""
STALL = 0.004
"""Late by more than this, the diagnostics watchdog samples where the loop is."""
FIND_ASSOCIATIONS = 20
TARGET_P99_MS = 10.0
TARGET_MAX_MS = 50.0


# --------------------------------------------------------------------------------------------
# In the worker process
# --------------------------------------------------------------------------------------------


class Ticker:
    """Wakes every :data:`PERIOD` and records how late (seconds) each wake-up was."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self.beat = time.perf_counter()

    async def run(self) -> None:
        import anyio

        while True:
            due = time.perf_counter() + PERIOD
            await anyio.sleep(PERIOD)
            self.beat = now = time.perf_counter()
            self.late.append(max(0.0, now - due))

    def summary(self) -> dict[str, Any]:
        late = sorted(self.late)
        if not late:
            return {"ticks": 0}

        def pct(q: float) -> float:
            return late[min(len(late) - 1, int(q * len(late)))] * 1000.0

        return {"ticks": len(late), "late_p50_ms": pct(0.50), "late_p99_ms": pct(0.99),
                "late_max_ms": late[-1] * 1000.0,
                "late_over_10ms": sum(1 for v in late if v > 0.010)}


class StallSampler:
    """Diagnostics only: where the main thread is while the ticker is overdue."""

    def __init__(self, ticker: Ticker, path: str) -> None:
        self.ticker = ticker
        self.path = path
        self.main = threading.main_thread().ident
        self.stacks: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.001):
            if time.perf_counter() - self.ticker.beat < PERIOD + STALL:
                continue
            frame = sys._current_frames().get(self.main or 0)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            self.stacks[";".join(f"{Path(f.filename).name}:{f.name}:{f.lineno}"
                                 for f in stack[-14:])] += 1

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()
        with open(self.path, "w") as fp:
            for stack, count in self.stacks.most_common():
                fp.write(f"{count} {stack}\n")


async def aio_lateness(p: dict[str, Any]) -> dict[str, Any]:
    """The worker task: the work of ``p["work"]`` with the ticker running beside it."""
    import anyio

    import aiodicom
    from aiodicom.query import Query
    from aiodicom.sinks import DirectorySink, MemorySink
    from benchmarks.worker import Meter, count_files, fresh_dir

    work = p["work"]
    port = p.get("listen_port") if work == "move" else None
    series = Query.series(StudyInstanceUID=p["study_uid"], SeriesInstanceUID=p["series_uid"])
    image = Query.image(StudyInstanceUID=p["study_uid"], SeriesInstanceUID=p["series_uid"])
    out = fresh_dir(p.get("out_dir"))
    ticker = Ticker()
    sampler = None
    async with aiodicom.Client(p["ae_title"], port=port) as client:
        peer = client.peer(p["host"], p["port"], p["called"])
        result: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker.run)
            await anyio.sleep(0.05)  # the ticker's own baseline, before any work
            ticker.late.clear()
            if os.environ.get("AIODICOM_LATENESS_STACKS"):
                sampler = StallSampler(ticker, os.environ["AIODICOM_LATENESS_STACKS"])
            m = Meter()
            if work == "find":
                counts: list[int] = []

                async def one() -> None:
                    n = 0
                    async for _match in peer.find(image):
                        n += 1
                    counts.append(n)

                async with anyio.create_task_group() as finds:
                    for _ in range(p["associations"]):
                        finds.start_soon(one)
                result = m.result(count=sum(counts),
                                  ok=counts == [p["expect"]] * p["associations"])
            else:
                sink = DirectorySink(out) if out is not None else MemorySink()
                done = await (peer.move(series, sink=sink) if work == "move"
                              else peer.get(series, sink=sink))
                result = m.result(count=len(done.completed), bytes=done.bytes_received,
                                  ok=len(done.completed) == p["expect"] and done.ok)
                if out is not None:
                    result["files"] = count_files(out)
            if sampler is not None:
                sampler.finish()
            tg.cancel_scope.cancel()
    result.update(ticker.summary())
    result["uvloop"] = bool(p.get("uvloop"))
    if not result["ticks"]:
        result["ok"] = False
    return result


# --------------------------------------------------------------------------------------------
# In the runner
# --------------------------------------------------------------------------------------------


def cases(bench: Bench) -> list[Case]:
    """The lateness cases (keys ``lateness-*``) against the bench's dcmqrscp."""
    from benchmarks.peers import AIO_AE
    from benchmarks.runner import HOST, Case, Client

    assert bench.corpus is not None
    big = bench.corpus.big
    base = {"host": HOST, "port": bench.qr.port, "called": "QRSCP", "ae_title": AIO_AE,
            "study_uid": big.study_uid, "series_uid": big.series_uid, "expect": big.n}
    out = bench.out / "lateness-get-aio"
    specs = [
        ("lateness-find", f"loop lateness during {FIND_ASSOCIATIONS} concurrent C-FINDs of "
         f"{big.n} matches (dcmqrscp)", "matches/s", None, FIND_ASSOCIATIONS * big.n,
         {**base, "work": "find", "associations": FIND_ASSOCIATIONS,
          "expect": big.n}, None),
        ("lateness-get", f"loop lateness during a C-GET of {big.megabytes:.0f} MB to a "
         "directory (dcmqrscp)", "MB/s", big.dataset_bytes, big.n,
         {**base, "work": "get", "out_dir": str(out)}, out),
        ("lateness-move", f"loop lateness during a C-MOVE of {big.megabytes:.0f} MB into "
         "memory (dcmqrscp)", "MB/s", big.dataset_bytes, big.n,
         {**base, "work": "move", "listen_port": bench.dest.aiodicom}, None),
    ]
    return [
        Case(key, title + f"; a {PERIOD * 1000:.0f} ms ticker on the same loop", unit,
             work_bytes, count,
             [Client("aiodicom", "aiodicom", bench._worker("aiodicom", "lateness", params,
                                                           clear=clear))],
             note="lateness: medians over runs of each run's p50/p99/max")
        for key, title, unit, work_bytes, count, params, clear in specs
    ]


def table(rows: list[Row]) -> str:
    """The lateness rows against the targets (empty when none was measured)."""
    picked = [r for r in rows if "late_p99_ms" in r.extra]
    if not picked:
        return ""
    lines = [
        f"### Loop lateness ({PERIOD * 1000:.0f} ms ticker on aiodicom's loop; target p99 <= "
        f"{TARGET_P99_MS:.0f} ms, max <= {TARGET_MAX_MS:.0f} ms; medians over runs)",
        "",
        "| Case | Client | p50 (ms) | p99 (ms) | max (ms) | ticks > 10 ms | Met |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in picked:
        x = r.extra
        met = x["late_p99_ms"] <= TARGET_P99_MS and x["late_max_ms"] <= TARGET_MAX_MS
        lines.append(
            f"| {r.case} | {r.client} | {x['late_p50_ms']:.2f} | {x['late_p99_ms']:.2f} "
            f"| {x['late_max_ms']:.1f} | {x.get('late_over_10ms', 0):.0f} of "
            f"{x.get('ticks', 0):.0f} | {'yes' if met else '**NO**'} |"
        )
    return "\n".join(lines)


def uvloop_twins(bench: Bench, case: Case) -> list[Client]:
    """``--uvloop``: each aiodicom worker of ``case`` once more with uvloop as its event loop
    (``anyio.run(..., backend_options={"use_uvloop": True})``), as rows of their own."""
    from benchmarks.runner import Client

    twins = []
    for client in case.clients:
        spec = getattr(client.run, "worker_spec", None)
        if client.family != "aiodicom" or spec is None:
            continue  # servers (C-STORE receive) are started differently; not twinned
        library, task, params, clear = spec
        twins.append(Client(f"{client.label}, uvloop", client.family,
                            bench._worker(library, task, {**params, "uvloop": True}, clear)))
    return twins
