"""Running one measurement in a child process and collecting what it cost.

Python clients run ``benchmarks.worker`` (it times its own work and reports its peak RSS).
DCMTK tools are timed from outside; their CPU time and peak RSS come from ``os.wait4``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peers import peer_env, wait_for_port

from benchmarks import _paths
from benchmarks.interpreters import worker_interpreter

WORKER_TIMEOUT = 600.0
PROFILE_DIR: Path | None = None
SAMPLING_DIR: Path | None = None
"""When set (``--py-spy``), aiodicom workers run under ``py-spy record`` (raw stacks here)."""
"""When set (``--profile``), aiodicom workers run under cProfile and leave their stats here."""
_profile_counter = 0


@dataclass
class Sample:
    wall: float
    cpu: float
    peak_rss_kb: int
    ok: bool
    count: int | None = None
    nbytes: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _worker_cmd(library: str, task: str, params: Mapping[str, Any]) -> list[str]:
    global _profile_counter
    params = dict(params)
    python = worker_interpreter(params)  # --python: a second interpreter's rows
    spec = json.dumps({"library": library, "task": task, "params": params})
    cmd = [python, "-m", "benchmarks.worker", spec]
    if SAMPLING_DIR is not None and library == "aiodicom" and task != "serve_echo":
        _profile_counter += 1
        SAMPLING_DIR.mkdir(parents=True, exist_ok=True)
        out = SAMPLING_DIR / f"{_profile_counter:03d}-{task}.txt"
        cmd = ["py-spy", "record", "--nonblocking", "-r", "1000", "-f", "raw", "-o", str(out),
               "--", *cmd]
    return cmd


def _worker_env(library: str = "", task: str = "") -> dict[str, str]:
    global _profile_counter
    env = dict(os.environ)
    if PROFILE_DIR is not None and library == "aiodicom" and task not in ("serve_echo",):
        _profile_counter += 1
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        env["AIODICOM_BENCH_PROFILE"] = str(PROFILE_DIR / f"{_profile_counter:03d}-{task}.pstats")
    # numpy, which pydicom imports (both Python libraries load it), starts a BLAS thread per
    # core that spins about 0.1 s of CPU right after the import: inside the timing of a client
    # measured right after its imports, on a 2-core machine a third runnable thread beside the
    # client and the peer. Neither library does linear algebra here; the timings, which leave
    # the imports out, should leave their aftermath out too.
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_paths.ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def _sample_from(result: Mapping[str, Any], error_text: str = "") -> Sample:
    known = {"wall", "cpu", "peak_rss_kb", "ok", "count", "bytes", "error"}
    error = result.get("error")
    if error and error_text:
        error = f"{error}\n{error_text[-2000:]}"
    return Sample(
        wall=float(result.get("wall", float("nan"))),
        cpu=float(result.get("cpu", float("nan"))),
        peak_rss_kb=int(result.get("peak_rss_kb", 0)),
        ok=bool(result.get("ok", False)),
        count=result.get("count"),
        nbytes=result.get("bytes"),
        error=error,
        extra={k: v for k, v in result.items() if k not in known},
    )


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def failed(error: str) -> Sample:
    return Sample(float("nan"), float("nan"), 0, False, error=error)


def run_worker(
    library: str, task: str, params: Mapping[str, Any], timeout: float = WORKER_TIMEOUT
) -> Sample:
    """Run one client measurement in a fresh interpreter."""
    try:
        proc = subprocess.run(
            _worker_cmd(library, task, params), capture_output=True, text=True,
            timeout=timeout, env=_worker_env(library, task), cwd=_paths.ROOT, check=False,
        )
    except subprocess.TimeoutExpired:
        return failed(f"{library} {task}: no result within {timeout} s")
    result = _last_json_line(proc.stdout)
    if result is None:
        return failed(f"{library} {task} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return _sample_from(result, proc.stderr if not result.get("ok") else "")


class WorkerServer:
    """A Python SCP worker (``serve_store``/``serve_echo``) running until :meth:`finish`."""

    def __init__(self, library: str, task: str, params: Mapping[str, Any]) -> None:
        self.label = f"{library} {task}"
        self.proc = subprocess.Popen(
            _worker_cmd(library, task, params), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=_worker_env(library, task), cwd=_paths.ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            rest = self.proc.communicate(timeout=30)
            raise RuntimeError(f"{self.label} did not start: {line}{rest[0]}{rest[1][-2000:]}")

    def finish(self, timeout: float = 60.0) -> Sample:
        try:
            out, err = self.proc.communicate("stop\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        result = _last_json_line(out)
        if result is None:
            return failed(f"{self.label} exited {self.proc.returncode}: {err[-2000:]}")
        return _sample_from(result, err if not result.get("ok") else "")


@dataclass
class ToolRun:
    wall: float
    cpu: float
    peak_rss_kb: int
    returncode: int
    output: str
    user_cpu: float = 0.0
    sys_cpu: float = 0.0
    minor_faults: int = 0

    def extra(self) -> dict[str, float]:
        return {"user_cpu": self.user_cpu, "sys_cpu": self.sys_cpu,
                "minor_faults": self.minor_faults}


def vm_hwm_kb(pid: int) -> int | None:
    """Peak RSS of a running process (``None`` once it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class HwmWatcher:
    """Follows the peak RSS of a child process by reading its VmHWM: every 5 ms for its first
    50 ms (a short tool such as echoscu is gone by then), then every ``interval`` seconds.

    ``ru_maxrss`` from ``wait4`` cannot be used: Linux carries the parent's peak RSS into the
    child's over fork + exec, so every tool would report at least this runner's size. VmHWM
    belongs to the address space the tool got at exec; it only grows, so the last reading
    before exit is the peak to within the interval (DCMTK's tools reach theirs early and keep
    it). Read rarely because only DCMTK's tools are watched: at one read per 5 ms throughout,
    the reads and this thread's wake-ups cost a tool 1-2 % of its wall time, measured
    against the same tool waited for unwatched, which the Python workers did not pay.
    """

    START_INTERVAL = 0.005
    START_PHASE = 0.05

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            value = vm_hwm_kb(self.pid)
            if value is not None:
                self.peak_kb = max(self.peak_kb, value)
            early = time.monotonic() - started < self.START_PHASE
            self._stop.wait(self.START_INTERVAL if early else self._interval)

    def stop(self) -> int:
        value = vm_hwm_kb(self.pid)
        if value is not None:
            self.peak_kb = max(self.peak_kb, value)
        self._stop.set()
        self._thread.join()
        return self.peak_kb


def _wait4(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, Any]:
    """Reap ``proc`` with its resource usage (Popen is told, so it never reaps it again).

    A blocking wait, with a one-shot timer to kill the tool if it overstays: no polling loop
    in this process while a DCMTK tool is timed. (A 1 ms poll used to run here, for DCMTK
    tools only: it cost them 1-2 % of their wall time against the Python workers, which this
    process waits for without polling.)"""
    killer = threading.Timer(timeout, proc.kill)
    killer.daemon = True
    killer.start()
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def run_tool(
    args: Sequence[str], *, timeout: float = WORKER_TIMEOUT, log: Path | None = None
) -> ToolRun:
    """Run a DCMTK tool with ``TCP_NODELAY=1``; wall, CPU and peak RSS of that process."""
    out_path = log or Path(os.devnull)
    with open(out_path, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(map(str, args)), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=peer_env(),
        )
        watcher = HwmWatcher(proc.pid)
        code, usage = _wait4(proc, timeout)
        wall = time.perf_counter() - t0
        peak = watcher.stop()
    text = out_path.read_text(errors="replace")[-3000:] if log is not None else ""
    return ToolRun(wall, usage.ru_utime + usage.ru_stime, peak, code, text,
                   usage.ru_utime, usage.ru_stime, usage.ru_minflt)


class ToolServer:
    """A DCMTK server (storescp) whose CPU time and peak RSS are collected when stopped."""

    def __init__(self, args: Sequence[str], port: int, log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(map(str, args)), stdout=self._out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=peer_env(), start_new_session=True,
        )
        self.watcher = HwmWatcher(self.proc.pid)
        wait_for_port("127.0.0.1", port, 20.0, self.proc, log)

    def stop(self) -> tuple[float, int]:
        """SIGTERM; returns (CPU seconds, peak RSS kB) of its whole life."""
        peak = self.watcher.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        _code, usage = _wait4(self.proc, 10.0)
        self._out.close()
        return usage.ru_utime + usage.ru_stime, peak


def set_aside(path: Path, spent: Path, name: str) -> None:
    """Empty an output directory without deleting a file: each is truncated (its data and page
    cache freed) and the directory moved to ``spent / name`` (see ``Bench._clear``: on this
    VM's ext4 without a journal, deleting thousands of files makes creating the next ones cost
    up to 400 us each instead of 15)."""
    if not path.exists():
        return
    for root, _, names in os.walk(path):
        for file_name in names:
            with contextlib.suppress(OSError):
                os.truncate(os.path.join(root, file_name), 0)
    spent.mkdir(parents=True, exist_ok=True)
    try:
        path.rename(spent / name)
    except OSError:
        # A rename onto an earlier run's directory fails: then the files are deleted after all.
        shutil.rmtree(path, ignore_errors=True)
