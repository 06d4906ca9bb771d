"""Real DICOM peers for the test-suite: DCMTK, Orthanc and pynetdicom, on free loopback ports.

Everything here is test infrastructure (the library itself must never wait or poll like this).

* :mod:`peers.corpus` - deterministic corpus generation (pydicom) and its description.
* :mod:`peers.dcmtk` - ``dcmqrscp`` / ``storescp`` servers and the DCMTK command-line clients.
* :mod:`peers.orthanc` - an Orthanc server with its own storage, ports and configuration.
* :mod:`peers.pynetdicom_scp` - in-process pynetdicom Verification and C-FIND SCPs.

Rules (DEVELOPER): a test that cannot find a peer FAILS when ``CI=true`` and is skipped
otherwise, with the reason - use :func:`require_executable` / :func:`missing_peer`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import pytest

__all__ = [
    "LOOPBACK",
    "PeerProcess",
    "PeerStartError",
    "finish_stopping",
    "free_port",
    "in_ci",
    "in_thread",
    "missing_peer",
    "peer_env",
    "require_executable",
    "require_module",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Missing peers: fail in CI, skip elsewhere
# --------------------------------------------------------------------------------------------


# The test being run, told by conftest.py, so that starting a peer can check the test says it
# talks to one: `pytest -m "not interop"` must start no peer, and a marker derived from fixture
# names alone misses tests that pick their peer with request.getfixturevalue().
_current_test_is_interop: bool | None = None  # None: not under pytest (benchmarks, scripts)


def set_current_test(is_interop: bool | None) -> None:
    global _current_test_is_interop
    _current_test_is_interop = is_interop


def check_interop_allowed(what: str) -> None:
    """Refuse to start ``what`` (a peer process or server) from a test not marked interop."""
    if _current_test_is_interop is False:
        raise RuntimeError(
            f"this test starts {what} but is not marked interop: add "
            "@pytest.mark.interop (or pytestmark = pytest.mark.interop in its module)"
        )


def in_ci() -> bool:
    """True when running under CI (``CI=true``): missing peers are then failures."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_peer(reason: str) -> NoReturn:
    """Fail the test in CI, skip it elsewhere, with ``reason``."""
    if in_ci():
        pytest.fail(f"required DICOM peer missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_executable(path: str | os.PathLike[str]) -> str:
    """Return ``path`` if it is an executable file; else fail (CI) or skip (elsewhere).

    Always give the absolute path: pynetdicom installs console scripts named like the DCMTK
    tools (findscu, storescp, ...) that come first on PATH.
    """
    p = Path(path)
    if not (p.is_file() and os.access(p, os.X_OK)):
        hint = "apt-get install dcmtk orthanc"
        missing_peer(f"{p} not found or not executable ({hint})")
    return str(p)


def require_module(name: str) -> None:
    """Import check for an optional Python peer (e.g. pynetdicom)."""
    try:
        __import__(name)
    except ImportError as exc:
        missing_peer(f"Python module {name!r} not importable: {exc} (pip install -e '.[test]')")


# --------------------------------------------------------------------------------------------
# Ports, environment, readiness
# --------------------------------------------------------------------------------------------

_port_lock = threading.Lock()
_recent_ports: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """A currently free TCP port on ``host`` (bind to port 0, then release it).

    The port is not reserved; ports handed out by this process are not handed out again.
    """
    with _port_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _recent_ports:
                _recent_ports.add(port)
                return port
    raise RuntimeError("could not find a free port")


def peer_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for DCMTK tools and Orthanc: ``TCP_NODELAY=1`` (else ~44 ms per C-STORE)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


class PeerStartError(RuntimeError):
    pass


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 20.0,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Wait (bounded) until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise PeerStartError(
                f"process {proc.args!r} exited with {proc.returncode} before listening on "
                f"{host}:{port}\n{_tail(log_path)}"
            )
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise PeerStartError(
                    f"nothing listening on {host}:{port} after {timeout}s\n{_tail(log_path)}"
                ) from None
            time.sleep(0.05)


def _tail(log_path: Path | None, n: int = 40) -> str:
    if log_path is None or not log_path.exists():
        return ""
    lines = log_path.read_text(errors="replace").splitlines()
    return "--- log tail ---\n" + "\n".join(lines[-n:])


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking helper (e.g. ``dcmtk.movescu``) from an async test without blocking the
    event loop - needed whenever the loop also serves something the helper talks to (e.g. an
    aiodicom Storage SCP receiving a C-MOVE).  ``await in_thread(movescu, host, port, ...)``."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


# --------------------------------------------------------------------------------------------
# Server processes in their own process group
# --------------------------------------------------------------------------------------------

_live: set[PeerProcess] = set()
_stopping: set[PeerProcess] = set()
_live_lock = threading.Lock()


class PeerProcess:
    """A server process started in its own session/process group, output to a log file.

    ``stop()`` signals the whole group (``--fork`` children included), waits, then SIGKILLs.
    Processes still alive at interpreter exit are stopped by an ``atexit`` hook.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else peer_env()
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> subprocess.Popen[bytes]:
        if self.popen is not None and self.popen.poll() is None:
            raise RuntimeError("already running")
        check_interop_allowed(self.args[0])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n=== start: {' '.join(self.args)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with _live_lock:
            _live.add(self)
        return self.popen

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait for the leader (SIGKILL after ``timeout``)."""
        self.terminate()
        self.wait_stopped(timeout)

    def terminate(self) -> None:
        """SIGTERM the process group without waiting; :func:`finish_stopping` waits later.

        For peers that take seconds to shut down (Orthanc: ~3.5 s) and whose ports and
        directories are never reused: tests need not wait for them one by one.
        """
        p = self.popen
        if p is not None and p.returncode is None:
            self._signal_group(p, signal.SIGTERM)
        with _live_lock:
            _live.discard(self)
            _stopping.add(self)

    def wait_stopped(self, timeout: float = 10.0) -> None:
        p = self.popen
        if p is not None and p.returncode is None:
            # Wait for the leader WITHOUT reaping it, so its pid (= our process group id)
            # cannot be reused while we SIGKILL what is left of the group (--fork children).
            deadline = time.monotonic() + timeout
            while not self._exited_unreaped(p) and time.monotonic() < deadline:
                time.sleep(0.02)
            self._signal_group(p, signal.SIGKILL)
            p.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        with _live_lock:
            _live.discard(self)
            _stopping.discard(self)

    @staticmethod
    def _exited_unreaped(p: subprocess.Popen[bytes]) -> bool:
        try:
            info = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    @staticmethod
    def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
        # start_new_session=True: the process group id is the leader's pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def finish_stopping(timeout: float = 20.0) -> None:
    """Wait for every process sent SIGTERM by :meth:`PeerProcess.terminate` (and kill
    leftovers after ``timeout``)."""
    with _live_lock:
        stopping = list(_stopping)
    deadline = time.monotonic() + timeout
    for proc in stopping:
        proc.wait_stopped(max(0.1, deadline - time.monotonic()))


@atexit.register
def _stop_all() -> None:  # pragma: no cover - safety net
    with _live_lock:
        live = list(_live)
    for proc in live:
        with contextlib.suppress(Exception):
            proc.terminate()
    with contextlib.suppress(Exception):
        finish_stopping(timeout=5)
