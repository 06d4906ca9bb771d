"""What the benchmarks ran on: recorded with every result."""

from __future__ import annotations

import os
import platform
import struct
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from typing import Any

from benchmarks import _paths


def _first_line(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fp:
            for line in fp:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_bytes(field: str) -> int | None:
    """A field of /proc/meminfo (``MemTotal``, ``MemAvailable``) in bytes; ``None`` without it."""
    try:
        with open("/proc/meminfo") as fp:
            for line in fp:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _mem_total_gib() -> float:
    total = _meminfo_bytes("MemTotal")
    return total / 2**30 if total is not None else float("nan")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(_paths.ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(_paths.ROOT), "status", "--porcelain", "--", "aiodicom"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except OSError:
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + (" + uncommitted changes in aiodicom/" if dirty.stdout.strip() else "")


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as fp:
        fields = [int(v) for v in fp.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_percent(seconds: float = 0.5) -> float:
    """CPU used by the whole machine over ``seconds`` while we run nothing: other people's
    load (these machines are shared), in percent of all cores."""
    busy0, total0 = _cpu_times()
    time.sleep(seconds)
    busy1, total1 = _cpu_times()
    return 100.0 * (busy1 - busy0) / max(1, total1 - total0)


def wait_until_quiet(max_wait: float, threshold: float = 10.0) -> float:
    """Wait (at most ``max_wait`` seconds) until the machine is below ``threshold`` % busy;
    returns the last reading."""
    deadline = time.monotonic() + max_wait
    busy = busy_percent()
    while busy > threshold and time.monotonic() < deadline:
        busy = busy_percent(1.0)
    return busy


def warm_free_memory(nbytes: int) -> int:
    """Touch ``nbytes`` of fresh memory and give it back at once; returns the bytes touched.

    On a VM that hands its free memory back to the host (free page reporting, as on the
    Firecracker VMs of benchmarks/RESULTS.md), the first write to such a page faults in the
    host: about 10 us per 4 KiB page here, against 0.1-0.2 us for a page freed a moment ago.
    Every page a client writes to (page cache for files, memory for data sets) may be either,
    depending on what ran before it, and for a 263 MB retrieval that is up to half a second.
    Done just before each timed client (``--hot-memory``), the pages that client takes are
    ones freed a moment ago, for every client alike: the walls then measure the software,
    not the host's page faults. At most a quarter of the available memory is touched.
    """
    nbytes = max(0, min(nbytes, _mem_available() // 4))
    if nbytes:
        # A bytes object this large is mapped freshly and written whole (every page faulted
        # in), then unmapped when dropped: its pages go back to the free lists, warm.
        touched = b"\x01" * nbytes
        del touched
    return nbytes


def _mem_available() -> int:
    return _meminfo_bytes("MemAvailable") or 0


def _libpython_shared() -> bool:
    """The interpreter runs from a shared libpython (pyenv's and python.org's ``--enable-shared``
    builds) rather than having it built into its executable (Debian's, uv's)."""
    try:
        with open("/proc/self/maps") as fp:
            return any("libpython" in line for line in fp)
    except OSError:
        return False


def _reference_loop_ns(iterations: int = 50_000, rounds: int = 9) -> float:
    """Nanoseconds per iteration of a fixed loop of the kind a receiver runs for every element
    header it scans (unpack, compare, add), best of ``rounds``: how fast this interpreter, on
    this machine, does Python work, for comparing runs across machines and interpreter builds.
    Short rounds, the best of many: a shared VM's host takes CPU time away for seconds at a
    time (steal), and the best round is the one it took none from."""
    header = struct.Struct("<HHHH").unpack_from
    data = bytes(range(256)) * 32
    end = len(data) - 8
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        position = total = 0
        for _ in range(iterations):
            group, element, vr, length = header(data, position)
            total += group << 16 | element if vr != length else length
            position = position + 8 if position < end else 0
        best = min(best, time.perf_counter() - started)
    return best / iterations * 1e9


def interpreter() -> dict[str, Any]:
    """Which CPython build runs the clients, and how fast it does Python work.

    The library's Python work took 15-25 % longer on pyenv's default build (no profile-guided
    or link-time optimization, a shared libpython) than on Debian's optimized python3.11 on
    the same machine (benchmarks/RESULTS.md, run 16): a ratio to DCMTK depends on the
    interpreter as well as on the machine."""
    # Only what the build says of itself: Debian's optimized python3.11 keeps its LTO flags
    # out of sysconfig, so the absence of these flags proves nothing.
    config = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    flags = [flag for flag in ("--enable-optimizations", "--with-lto") if flag in config]
    return {
        "executable": os.path.realpath(sys.executable),
        "libpython": "shared library" if _libpython_shared() else "in the executable",
        "configure_flags": " ".join(flags),
        "reference_loop_ns": round(_reference_loop_ns(), 1),
    }


def describe(second_python: str | None = None) -> dict[str, Any]:
    """The machine, and the interpreters: this one, and the one ``--python`` names."""
    second = None
    if second_python:
        from benchmarks.interpreters import describe as ask

        second = ask(second_python)
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": round(_mem_total_gib(), 1),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": sys.version.split()[0],
        "interpreter": interpreter(),
        "second_interpreter": second,
        "aiodicom": _version("aiodicom") + f" (git {_git_commit()})",
        "pydicom": _version("pydicom"),
        "pynetdicom": _version("pynetdicom"),
        "anyio": _version("anyio"),
        "dcmtk": _first_line(["/usr/bin/dcmqrscp", "--version"]),
        "orthanc": _first_line(["/usr/sbin/Orthanc", "--version"]),
    }


def markdown(info: dict[str, Any]) -> str:
    return "\n".join([
        f"- CPU: {info['cpu']}, {info['nproc']} cores (nproc); RAM {info['ram_gib']} GiB",
        f"- OS: {info['os']}, kernel {info['kernel']}; Python {info['python']}",
        _interpreter_line(info.get("interpreter")),
        *([_interpreter_line(info["second_interpreter"], "Second interpreter (--python)")]
          if info.get("second_interpreter") else []),
        f"- aiodicom {info['aiodicom']}; pydicom {info['pydicom']}; anyio {info['anyio']}",
        f"- pynetdicom {info['pynetdicom']}; DCMTK: {info['dcmtk']}; Orthanc: {info['orthanc']}",
    ])


def _interpreter_line(about: dict[str, Any] | None, title: str = "Interpreter") -> str:
    if not about:  # results recorded before the interpreter was described
        return f"- {title}: not recorded"
    version = f"Python {about['version']}, " if "version" in about else ""
    return (
        f"- {title}: {version}{about['executable']}, libpython {about['libpython']}"
        + (f", configured {about['configure_flags']}" if about["configure_flags"] else "")
        + f"; reference loop {about['reference_loop_ns']} ns per iteration"
        " (machine.interpreter)"
    )
