"""An Orthanc peer: ``/usr/sbin/Orthanc config.json`` with its own storage and free ports.

The Debian service (4242/8042, /etc/orthanc) is irrelevant: this never reads /etc/orthanc.
Orthanc's DICOM server listens on all interfaces; only loopback clients talk to it here.
Its REST API (``RemoteAccessAllowed: false``) only answers loopback.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from . import LOOPBACK, PeerProcess, PeerStartError, free_port, wait_for_port
from .corpus import InstanceInfo, iter_files
from .dcmtk import MoveDestination

__all__ = ["ORTHANC", "WORKLIST_PLUGIN", "Orthanc"]

ORTHANC = "/usr/sbin/Orthanc"
WORKLIST_PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"


class Orthanc:
    """An Orthanc server for one test session or one test.

    ``modalities``: ``{"AIOSCU": ("AIOSCU", "127.0.0.1", port)}`` - C-MOVE destinations must be
    listed (else C000).  They can also be added while running: :meth:`add_modality`.
    ``max_pdu``: ``MaximumPduLength`` (both directions; Orthanc's default is 16384).
    ``worklist_dir``: enable the Modality Worklist plugin on that directory of ``.wl`` files.
    ``extra_config``: any other configuration keys (e.g. ``{"LimitFindResults": 5}``).
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        ae_title: str = "ORTHANC",
        modalities: Mapping[str, MoveDestination | tuple[str, str, int]] | None = None,
        max_pdu: int | None = None,
        worklist_dir: Path | None = None,
        extra_config: Mapping[str, Any] | None = None,
        port: int | None = None,
        http_port: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.ae_title = ae_title
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.auto_ports = port is None and http_port is None
        self.modalities = {k: MoveDestination.of(v) for k, v in (modalities or {}).items()}
        self.max_pdu = max_pdu
        self.worklist_dir = Path(worklist_dir).resolve() if worklist_dir else None
        self.extra_config = dict(extra_config or {})
        self.verbose = verbose
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self._proc: PeerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    # -- configuration ------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "Name": f"aiodicom-test-{self.port}",
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.port,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DefaultEncoding": "Utf8",
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowFindWorklist": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckCalledAet": False,
            "DicomModalities": {
                name: [d.ae_title, d.host, d.port] for name, d in self.modalities.items()
            },
            "DicomModalitiesInDatabase": False,
            "DicomAssociationCloseDelay": 0,
            "SaveJobs": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "MetricsEnabled": False,
            "StableAge": 3600,
            "Plugins": [],
        }
        if self.max_pdu is not None:
            cfg["MaximumPduLength"] = self.max_pdu
        if self.worklist_dir is not None:
            cfg["Plugins"] = [WORKLIST_PLUGIN]
            cfg["Worklists"] = {"Enable": True, "Database": str(self.worklist_dir)}
        cfg.update(self.extra_config)
        return cfg

    def write_config(self) -> Path:
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        return self.config_path

    # -- process -------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Orthanc:
        """Start and wait for the REST API and the DICOM port.  If Orthanc dies before that
        and its ports were picked automatically, retry twice on fresh ports."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.write_config()
            args = [ORTHANC, *(["--verbose"] if self.verbose else []), str(self.config_path)]
            self._proc = PeerProcess(args, log_path=self.log_path, cwd=self.workdir)
            popen = self._proc.start()
            try:
                self._wait_ready(popen, timeout)
                return self
            except PeerStartError:
                died = popen.poll() is not None
                self.stop()
                if not (died and self.auto_ports and attempt < 2):
                    raise
                self.port, self.http_port = free_port(), free_port()
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self, popen: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if popen.poll() is not None:
                raise PeerStartError(
                    f"Orthanc exited with {popen.returncode}:\n{self.log_text()[-3000:]}"
                )
            try:
                self.rest("GET", "/system", timeout=2)
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise PeerStartError(
                        f"Orthanc REST API not answering after {timeout}s:\n"
                        f"{self.log_text()[-3000:]}"
                    ) from None
                time.sleep(0.05)
        wait_for_port(self.host, self.port, timeout, popen, self.log_path)

    def stop(self, wait: bool = True) -> None:
        """SIGTERM and wait (Orthanc needs ~3.5 s to shut down).

        ``wait=False`` only sends SIGTERM; :func:`peers.finish_stopping` (called by the conftest
        at the end of the session) waits for it - fine as ports and storage are never reused.
        """
        if self._proc is not None:
            if wait:
                self._proc.stop(timeout=20)
            else:
                self._proc.terminate()
            self._proc = None

    def restart(self, **changes: Any) -> Orthanc:
        """Stop, change attributes (e.g. ``max_pdu=4096``), start again with the same storage."""
        self.stop()
        for k, v in changes.items():
            if not hasattr(self, k):
                raise AttributeError(k)
            setattr(self, k, v)
        return self.start()

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Orthanc:
        return self.start() if not self.running() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Orthanc {self.ae_title}@{self.host}:{self.port} http={self.http_port}>"

    # -- REST ----------------------------------------------------------------------------------

    def rest(
        self,
        method: str,
        path: str,
        body: bytes | str | Mapping[str, Any] | list[Any] | None = None,
        *,
        content_type: str | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Call the REST API; returns decoded JSON (or raw bytes when not JSON)."""
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
            content_type = content_type or "application/octet-stream"
        elif isinstance(body, str):
            data = body.encode()
            content_type = content_type or "text/plain"
        else:
            data = json.dumps(body).encode()
            content_type = content_type or "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            if "json" in resp.headers.get("Content-Type", ""):
                return json.loads(raw) if raw else None
            return raw

    def upload(self, files: Iterable[Path | InstanceInfo]) -> list[str]:
        """POST each file to /instances; returns Orthanc's instance ids."""
        ids: list[str] = []
        for path in iter_files(files):
            answer = self.rest(
                "POST", "/instances", path.read_bytes(), content_type="application/dicom"
            )
            if not isinstance(answer, dict) or answer.get("Status") not in (
                "Success",
                "AlreadyStored",
            ):
                raise RuntimeError(f"Orthanc refused {path}: {answer!r}")
            ids.append(answer["ID"])
        return ids

    load = upload

    def statistics(self) -> dict[str, Any]:
        result: dict[str, Any] = self.rest("GET", "/statistics")
        return result

    def add_modality(
        self, name: str, ae_title: str | None = None, host: str = LOOPBACK, port: int = 104
    ) -> None:
        """Declare a DICOM modality (C-MOVE destination) at run time (PUT /modalities/name)."""
        dest = MoveDestination(ae_title or name, host, port)
        self.rest(
            "PUT",
            f"/modalities/{name}",
            {"AET": dest.ae_title, "Host": dest.host, "Port": dest.port},
        )
        self.modalities[name] = dest

    @contextlib.contextmanager
    def temporary_modality(
        self, name: str, ae_title: str | None = None, host: str = LOOPBACK, port: int = 104
    ) -> Iterator[MoveDestination]:
        """``with orthanc.temporary_modality("AIOSCU", "AIOSCU", host, port): ...``"""
        self.add_modality(name, ae_title, host, port)
        try:
            yield self.modalities[name]
        finally:
            self.remove_modality(name)

    def remove_modality(self, name: str) -> None:
        self.rest("DELETE", f"/modalities/{name}")
        self.modalities.pop(name, None)

    def clear(self) -> None:
        """Delete every patient (and so every instance) stored."""
        for pid in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{pid}")
