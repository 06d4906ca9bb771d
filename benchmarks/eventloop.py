"""The event loop: how long aiodicom holds it, and aiodicom on uvloop.

Loop lateness (``python -m benchmarks --only lateness``): a ticker task on the same event loop
as aiodicom asks to wake every 5 ms and records how late it wakes; a web handler on that loop
would wait as long. Three kinds of work run meanwhile: 20 concurrent C-FINDs of 500 matches
each (dcmqrscp), a C-GET of the 263 MB series into a :class:`~aiodicom.sinks.DirectorySink`
and a C-MOVE of it into memory. The target is p99 <= 10 ms and
max <= 50 ms in every case.

``AIODICOM_LATENESS_STACKS=<file>`` (diagnostics, not part of a normal run) also records where
the loop was stuck: the main thread's stack, sampled every millisecond while the ticker is
more than :data:`STALL` late, written counted to that file.

uvloop (``python -m benchmarks --uvloop``, ``pip install uvloop``): every aiodicom worker runs a
second time on uvloop, as a row of its own next to the asyncio one.
"""

from __future__ import annotations

import collections
import gc
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.cases import Case, Client, Row
    from benchmarks.runner import Bench

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


def run_delay() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as fp:
            return int(fp.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class Ticker:
    """Wakes every :data:`PERIOD` and records how late (seconds) each wake-up was.

    Also how late it was once the time this process waited for a CPU is taken off ("held"):
    on a 2-core machine shared with the peer's processes (dcmqrscp forks one per association)
    much of the lateness is the kernel running someone else, which no event loop can avoid.
    """

    def __init__(self) -> None:
        self.late: list[float] = []
        self.held: list[float] = []
        self.beat = time.perf_counter()

    async def run(self) -> None:
        import anyio

        while True:
            waited = run_delay()
            due = time.perf_counter() + PERIOD
            await anyio.sleep(PERIOD)
            self.beat = now = time.perf_counter()
            late = max(0.0, now - due)
            self.late.append(late)
            self.held.append(max(0.0, late - (run_delay() - waited)))

    def summary(self) -> dict[str, Any]:
        if not self.late:
            return {"ticks": 0}
        out: dict[str, Any] = {"ticks": len(self.late)}
        for name, values in (("late", sorted(self.late)), ("held", sorted(self.held))):

            def pct(q: float, values: list[float] = values) -> float:
                return values[min(len(values) - 1, int(q * len(values)))] * 1000.0

            out.update({f"{name}_p50_ms": pct(0.50), f"{name}_p99_ms": pct(0.99),
                        f"{name}_max_ms": values[-1] * 1000.0,
                        f"{name}_over_10ms": sum(1 for v in values if v > 0.010)})
        return out


class GcPauses:
    """The garbage collector's pauses while measuring: they hold the loop like any step."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int]] = []
        self._since = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._since = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._since, info["generation"]))

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, Any]:
        return {"gc_count": len(self.pauses), "gc_full": sum(1 for _, g in self.pauses if g == 2),
                "gc_max_ms": max((d for d, _ in self.pauses), default=0.0) * 1000.0}


class StallSampler:
    """Diagnostics only: where the main thread is while the ticker is overdue.

    A 1 ms interval timer (SIGALRM) interrupts the main thread between bytecodes, so the stack
    it records is the Python code that holds the loop (a sampling thread would mostly see the
    moments the main thread releases the GIL, in system calls).
    """

    def __init__(self, ticker: Ticker, path: str) -> None:
        self.ticker = ticker
        self.path = path
        self.stacks: collections.Counter[str] = collections.Counter()
        self.previous = signal.signal(signal.SIGALRM, self._sample)
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        if frame is None or time.perf_counter() - self.ticker.beat < PERIOD + STALL:
            return
        names: list[str] = []
        while frame is not None and len(names) < 16:
            code = frame.f_code
            names.append(f"{Path(code.co_filename).name}:{code.co_name}:{frame.f_lineno}")
            frame = frame.f_back
        self.stacks[";".join(reversed(names))] += 1

    def finish(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self.previous)
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
    pauses = GcPauses()
    sampler = None
    async with aiodicom.Client(p["ae_title"], listen_port=port) as client:
        peer = client.peer(p["host"], p["port"], p["called"])
        result: dict[str, Any] = {}
        if p.get("gc_freeze", True):
            # What a latency-minded application does once started: without it, a full
            # collection scans the ~40,000 objects of the imports (12 ms here) whenever the
            # allocations of some request trigger one, whoever made them.
            gc.freeze()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker.run)
            await anyio.sleep(0.05)  # the ticker's own baseline, before any work
            ticker.late.clear()
            ticker.held.clear()
            pauses.start()
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
            pauses.stop()
            if sampler is not None:
                sampler.finish()
            tg.cancel_scope.cancel()
    result.update(ticker.summary())
    result.update(pauses.summary())
    result["gc_frozen"] = bool(p.get("gc_freeze", True))
    result["uvloop"] = bool(p.get("uvloop"))
    if not result["ticks"]:
        result["ok"] = False
    return result


# --------------------------------------------------------------------------------------------
# In the runner
# --------------------------------------------------------------------------------------------


def cases(bench: Bench) -> list[Case]:
    """The lateness cases (keys ``lateness-*``) against the bench's dcmqrscp."""
    from benchmarks.cases import Case, Client
    from benchmarks.peers import AIO_AE
    from benchmarks.runner import HOST

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
        "| Case | Client | p50 (ms) | p99 (ms) | max (ms) | ticks > 10 ms | Met "
        "| held p99 / max (ms) | longest GC pause (ms) |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in picked:
        x = r.extra
        met = x["late_p99_ms"] <= TARGET_P99_MS and x["late_max_ms"] <= TARGET_MAX_MS
        held = (f"{x['held_p99_ms']:.2f} / {x['held_max_ms']:.1f}" if "held_p99_ms" in x
                else "-")
        gc_pause = f"{x['gc_max_ms']:.1f}" if "gc_max_ms" in x else "-"
        lines.append(
            f"| {r.case} | {r.client} | {x['late_p50_ms']:.2f} | {x['late_p99_ms']:.2f} "
            f"| {x['late_max_ms']:.1f} | {x.get('late_over_10ms', 0):.0f} of "
            f"{x.get('ticks', 0):.0f} | {'yes' if met else '**NO**'} | {held} | {gc_pause} |"
        )
    lines += [
        "",
        "Late: how late the ticker woke. Held: the same less the time this process waited for "
        "a CPU meanwhile (Linux schedstat run delay): the part the event loop is answerable "
        "for, on a 2-core machine the peer's processes share. The garbage collector's "
        "start-up heap is frozen (gc.freeze()) before measuring, as a latency-minded "
        "application does; the longest collection still counted is shown.",
    ]
    return "\n".join(lines)


def uvloop_label(label: str) -> str:
    """The label of the uvloop row of the aiodicom row ``label``: the one place it is built."""
    return f"{label}, uvloop"


def uvloop_twins(bench: Bench, case: Case) -> list[Client]:
    """``--uvloop``: each aiodicom worker of ``case`` once more with uvloop as its event loop
    (``anyio.run(..., backend_options={"use_uvloop": True})``), as rows of their own."""
    from benchmarks.cases import worker_twins

    return worker_twins(bench, case, uvloop_label, {"uvloop": True})
