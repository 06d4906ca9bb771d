"""``python -m aiodicom qrscp`` and ``storescp`` as subprocesses (peers like DCMTK's), and the
``aiodicom`` command line run as a subprocess, both on this checkout's library."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset

from peers import LOOPBACK, PeerProcess, free_port, peer_env, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # The library of this checkout, not whichever copy the interpreter has installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return peer_env({"PYTHONPATH": path, "COLUMNS": "200", **(extra or {})})


def aiodicom(
    *args: str, timeout: float = 120.0, cwd: Path | None = None, env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m aiodicom ARGS`` (never raises on its exit status)."""
    return subprocess.run(
        [sys.executable, "-m", "aiodicom", *map(str, args)], capture_output=True, text=True,
        timeout=timeout, cwd=cwd or ROOT, env=cli_env(env), check=False,
    )


class CliServer:
    """``python -m aiodicom <command> PORT ...`` in its own process group; ``stop()`` sends
    SIGTERM and returns the exit code."""

    def __init__(self, command: str, args: Sequence[str], log_dir: Path,
                 ae_title: str, port: int | None = None) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self.ae_title = ae_title
        self.process = PeerProcess(
            [sys.executable, "-m", "aiodicom", command, str(self.port), *map(str, args)],
            log_path=log_dir / f"aiodicom-{command}-{self.port}.log", cwd=ROOT, env=cli_env(),
        )

    def start(self, timeout: float = 60.0) -> CliServer:
        popen = self.process.start()
        wait_for_port(self.host, self.port, timeout=timeout, proc=popen,
                      log_path=self.process.log_path)
        return self

    def stop(self) -> int | None:
        self.process.stop()
        assert self.process.popen is not None
        return self.process.popen.returncode

    def log_text(self) -> str:
        return self.process.log_text()

    @property
    def address(self) -> str:
        """HOST:PORT:AE, as the examples take ``--pacs``."""
        return f"{self.host}:{self.port}:{self.ae_title}"

    def __enter__(self) -> CliServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def qrscp(directory: Path, log_dir: Path, *, ae_title: str = "AIOQR",
          move_destinations: Sequence[tuple[str, str, int]] = (),
          synthetic: bool = True, extra: Sequence[str] = ()) -> CliServer:
    args = [str(directory), "-aet", ae_title, *extra]
    if synthetic:
        args.append("--synthetic")
    for ae, host, port in move_destinations:
        args += ["--move-dest", f"{ae}={host}:{port}"]
    return CliServer("qrscp", args, log_dir, ae_title)


def storescp(directory: Path, log_dir: Path, *, ae_title: str = "STORESCP",
             extra: Sequence[str] = ()) -> CliServer:
    return CliServer("storescp", ["-o", str(directory), "-aet", ae_title, *extra], log_dir,
                     ae_title)


def peer_args(server: Any) -> list[str]:
    """HOST PORT -aec AE of a peer (anything with .host, .port and .ae_title)."""
    return [server.host, str(server.port), "-aec", server.ae_title]


def library_find(
    server: Any, *, ssl_context: ssl.SSLContext | None = None, **keys: object
) -> list[Dataset]:
    """The library's own study-level C-FIND of ``server``: what the command line should show."""
    import anyio

    import aiodicom

    async def run() -> list[Dataset]:
        async with aiodicom.Client("AIODICOM", peer=(server.host, server.port, server.ae_title),
                                   ssl_context=ssl_context) as client:
            return await client.find(aiodicom.Query.study(**keys)).all()

    return anyio.run(run)
