"""DCMTK peers: ``dcmqrscp`` (Q/R archive) and ``storescp`` servers, and the command-line SCUs.

Always absolute paths (/usr/bin/...): pynetdicom installs console scripts with the same names
ahead of DCMTK's on PATH.  Every tool runs with ``TCP_NODELAY=1``.  DCMTK servers listen on all
interfaces (no bind address option); only loopback clients talk to them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydicom import dcmread
from pydicom.dataset import Dataset

from . import (
    LOOPBACK,
    PeerProcess,
    PeerStartError,
    check_interop_allowed,
    free_port,
    peer_env,
    wait_for_port,
)
from .corpus import InstanceInfo, copy_files, iter_files

__all__ = [
    "DCMQRIDX",
    "DCMQRSCP",
    "ECHOSCU",
    "FINDSCU",
    "GETSCU",
    "MOVESCU",
    "STORESCP",
    "STORESCU",
    "DcmQrScp",
    "MoveDestination",
    "StoreScp",
    "echoscu",
    "find_datasets",
    "findscu",
    "getscu",
    "movescu",
    "read_responses",
    "run_tool",
    "storescu",
]

BIN = Path("/usr/bin")
DCMQRSCP = str(BIN / "dcmqrscp")
DCMQRIDX = str(BIN / "dcmqridx")
STORESCP = str(BIN / "storescp")
ECHOSCU = str(BIN / "echoscu")
FINDSCU = str(BIN / "findscu")
MOVESCU = str(BIN / "movescu")
GETSCU = str(BIN / "getscu")
STORESCU = str(BIN / "storescu")

Keys = Mapping[str, str] | Sequence[str]
Model = Literal["study", "patient", "worklist"]


@dataclass(frozen=True)
class MoveDestination:
    """An entry of dcmqrscp's HostTable / Orthanc's DicomModalities."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def of(cls, value: MoveDestination | tuple[str, str, int]) -> MoveDestination:
        if isinstance(value, MoveDestination):
            return value
        ae, host, port = value
        return cls(ae, host, int(port))


# --------------------------------------------------------------------------------------------
# dcmqrscp
# --------------------------------------------------------------------------------------------


class DcmQrScp:
    """A ``dcmqrscp`` archive with its own config file, storage area and index.

    ``load(files)`` copies files into the storage area and registers them with ``dcmqridx``
    (the storage area is the only place dcmqrscp serves from; its quota may delete files, so it
    always works on copies).  Move destinations come from the HostTable: pass
    ``move_destinations=[("AIOSCU", "127.0.0.1", port)]`` or call ``restart(...)``.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        ae_title: str = "QRSCP",
        move_destinations: Iterable[MoveDestination | tuple[str, str, int]] = (),
        max_pdu: int = 16384,
        fork: bool = True,
        port: int | None = None,
        max_associations: int = 16,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.ae_title = ae_title
        self.move_destinations = [MoveDestination.of(d) for d in move_destinations]
        self.max_pdu = max_pdu
        self.fork = fork
        self.port = port or free_port()
        self.auto_port = port is None
        self.max_associations = max_associations
        self.extra_args = list(extra_args)
        self.storage_dir = self.workdir / "storage"
        self.storage_dir.mkdir(exist_ok=True)
        self.files_dir = self.workdir / "files"
        self.config_path = self.workdir / "dcmqrscp.cfg"
        self.log_path = self.workdir / "dcmqrscp.log"
        self.loaded: list[Path] = []
        self._proc: PeerProcess | None = None

    # -- configuration ------------------------------------------------------------------------

    def write_config(self) -> Path:
        lines = [
            "# written by tests/peers/dcmtk.py",
            f"NetworkTCPPort  = {self.port}",
            f"MaxPDUSize      = {self.max_pdu}",
            f"MaxAssociations = {self.max_associations}",
            "",
            "HostTable BEGIN",
        ]
        for n, d in enumerate(self.move_destinations, start=1):
            lines.append(f"dest{n} = ({d.ae_title}, {d.host}, {d.port})")
        lines += [
            "HostTable END",
            "",
            "VendorTable BEGIN",
            "VendorTable END",
            "",
            "AETable BEGIN",
            # 500 studies is dcmqrscp's maximum; the quota deletes the oldest studies beyond it
            f'{self.ae_title} "{self.storage_dir}" RW (500, 4096mb) ANY',
            "AETable END",
            "",
        ]
        self.config_path.write_text("\n".join(lines))
        return self.config_path

    # -- data ----------------------------------------------------------------------------------

    def load(self, files: Iterable[Path | InstanceInfo]) -> list[Path]:
        """Copy ``files`` into the storage area and index them (works while running)."""
        start = len(self.loaded)
        dest = self.files_dir / f"batch{start:06d}"
        copies = copy_files(iter_files(files), dest)
        for i in range(0, len(copies), 200):  # keep the command line short
            chunk = copies[i : i + 200]
            proc = subprocess.run(
                [DCMQRIDX, str(self.storage_dir), *map(str, chunk)],
                capture_output=True,
                text=True,
                timeout=120,
                env=peer_env(),
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"dcmqridx failed ({proc.returncode}): {proc.stderr}")
        self.loaded += copies
        return copies

    # -- process -------------------------------------------------------------------------------

    @property
    def args(self) -> list[str]:
        mode = "--fork" if self.fork else "--single-process"
        return [DCMQRSCP, "-c", str(self.config_path), mode, *self.extra_args, str(self.port)]

    def start(self, timeout: float = 20.0) -> DcmQrScp:
        self._proc = _start_listening(self, timeout, before=self.write_config)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def restart(
        self,
        *,
        move_destinations: Iterable[MoveDestination | tuple[str, str, int]] | None = None,
        max_pdu: int | None = None,
        new_port: bool = True,
    ) -> DcmQrScp:
        """Restart with a new HostTable and/or max PDU, same storage and index.

        By default it listens on a new free port afterwards (``self.port`` is updated).
        """
        self.stop()
        if move_destinations is not None:
            self.move_destinations = [MoveDestination.of(d) for d in move_destinations]
        if max_pdu is not None:
            self.max_pdu = max_pdu
        if new_port:
            self.port = free_port()
            self.auto_port = True
        return self.start()

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> DcmQrScp:
        return self.start() if not self.running() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<DcmQrScp {self.ae_title}@{self.host}:{self.port} pdu={self.max_pdu}>"


# --------------------------------------------------------------------------------------------
# storescp
# --------------------------------------------------------------------------------------------


class StoreScp:
    """A DCMTK ``storescp`` writing every received instance into ``output_dir``.

    Accepts all storage SOP classes DCMTK knows and (``+xa``) all transfer syntaxes it supports.
    Single-process unless ``fork=True`` (then several associations at a time).
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        ae_title: str = "STORESCP",
        max_pdu: int | None = None,
        port: int | None = None,
        fork: bool = False,
        accept_all: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.ae_title = ae_title
        self.max_pdu = max_pdu
        self.port = port or free_port()
        self.auto_port = port is None
        self.fork = fork
        self.accept_all = accept_all
        self.extra_args = list(extra_args)
        self.output_dir = self.workdir / "received"
        self.output_dir.mkdir(exist_ok=True)
        self.log_path = self.workdir / "storescp.log"
        self._proc: PeerProcess | None = None

    @property
    def destination(self) -> MoveDestination:
        """This SCP as a move destination (HostTable / DicomModalities entry)."""
        return MoveDestination(self.ae_title, self.host, self.port)

    @property
    def args(self) -> list[str]:
        args = [STORESCP, "-aet", self.ae_title, "-od", str(self.output_dir)]
        if self.max_pdu is not None:
            args += ["--max-pdu", str(self.max_pdu)]
        if self.accept_all:
            args.append("+xa")
        if self.fork:
            args.append("--fork")
        return [*args, *self.extra_args, str(self.port)]

    def start(self, timeout: float = 20.0) -> StoreScp:
        self._proc = _start_listening(self, timeout)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def received_files(self) -> list[Path]:
        return sorted(p for p in self.output_dir.rglob("*") if p.is_file())

    def received_datasets(self) -> list[Dataset]:
        return [dcmread(p) for p in self.received_files()]

    def clear(self) -> None:
        """Remove everything received so far (between tests sharing one storescp)."""
        for p in self.output_dir.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> StoreScp:
        return self.start() if not self.running() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<StoreScp {self.ae_title}@{self.host}:{self.port}>"


def _start_listening(
    server: DcmQrScp | StoreScp, timeout: float, before: Callable[[], object] | None = None
) -> PeerProcess:
    """Start ``server.args`` and wait for its port.  If the process dies before listening and
    the port was picked automatically (someone else may have taken it meanwhile), retry twice
    on a fresh port."""
    for attempt in range(3):
        if before is not None:
            before()
        proc = PeerProcess(server.args, log_path=server.log_path, cwd=server.workdir)
        popen = proc.start()
        try:
            wait_for_port(server.host, server.port, timeout, popen, server.log_path)
            return proc
        except PeerStartError:
            died = popen.poll() is not None
            proc.stop()
            if not (died and server.auto_port and attempt < 2):
                raise
            server.port = free_port()
        except BaseException:
            proc.stop()
            raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Command-line clients
# --------------------------------------------------------------------------------------------


def run_tool(
    tool: str, args: Sequence[str], *, timeout: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool (absolute path) with ``TCP_NODELAY=1``; never raises on exit status."""
    check_interop_allowed(tool)
    return subprocess.run(
        [tool, *map(str, args)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=peer_env(),
        cwd=cwd,
        check=False,
    )


def _key_args(keys: Keys) -> list[str]:
    items = [f"{k}={v}" for k, v in keys.items()] if isinstance(keys, Mapping) else list(keys)
    out: list[str] = []
    for k in items:
        out += ["-k", k]
    return out


_MODEL_FLAG = {"study": "-S", "patient": "-P", "worklist": "-W"}


def _common(calling_ae: str, called_ae: str, max_pdu: int | None) -> list[str]:
    args = ["-aet", calling_ae, "-aec", called_ae]
    if max_pdu is not None:
        args += ["--max-pdu", str(max_pdu)]
    return args


def echoscu(
    host: str,
    port: int,
    called_ae: str,
    *,
    calling_ae: str = "ECHOSCU",
    args: Sequence[str] = (),
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    return run_tool(
        ECHOSCU, [*_common(calling_ae, called_ae, None), *args, host, str(port)], timeout=timeout
    )


def findscu(
    host: str,
    port: int,
    called_ae: str,
    keys: Keys,
    *,
    model: Model = "study",
    calling_ae: str = "FINDSCU",
    extract_dir: Path | None = None,
    max_pdu: int | None = None,
    args: Sequence[str] = (),
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """``findscu``; with ``extract_dir`` every response is written there (rsp0001.dcm, ...),
    read them with :func:`read_responses`.  Keys: ``{"QueryRetrieveLevel": "STUDY",
    "PatientName": ""}`` or ``["QueryRetrieveLevel=STUDY", "PatientName"]``."""
    extra: list[str] = []
    if extract_dir is not None:
        extract_dir.mkdir(parents=True, exist_ok=True)
        extra = ["-X", "-od", str(extract_dir)]
    return run_tool(
        FINDSCU,
        [
            _MODEL_FLAG[model],
            *_common(calling_ae, called_ae, max_pdu),
            *extra,
            *args,
            *_key_args(keys),
            host,
            str(port),
        ],
        timeout=timeout,
    )


def read_responses(extract_dir: Path) -> list[Dataset]:
    """The C-FIND identifiers written by ``findscu -X``, in arrival order."""
    return [dcmread(p) for p in sorted(extract_dir.glob("rsp*.dcm"))]


def find_datasets(
    host: str,
    port: int,
    called_ae: str,
    keys: Keys,
    *,
    extract_dir: Path,
    model: Model = "study",
    **kw: object,
) -> list[Dataset]:
    """Run ``findscu`` and return the matches; raises if findscu failed."""
    proc = findscu(host, port, called_ae, keys, model=model, extract_dir=extract_dir, **kw)  # type: ignore[arg-type]
    if proc.returncode != 0:
        raise RuntimeError(f"findscu failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return read_responses(extract_dir)


def movescu(
    host: str,
    port: int,
    called_ae: str,
    move_destination: str,
    keys: Keys,
    *,
    model: Literal["study", "patient"] = "study",
    calling_ae: str = "MOVESCU",
    max_pdu: int | None = None,
    args: Sequence[str] = (),
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """``movescu -aem <move_destination>`` (the destination must be a separate SCP)."""
    return run_tool(
        MOVESCU,
        [
            _MODEL_FLAG[model],
            *_common(calling_ae, called_ae, max_pdu),
            "-aem",
            move_destination,
            *args,
            *_key_args(keys),
            host,
            str(port),
        ],
        timeout=timeout,
    )


def getscu(
    host: str,
    port: int,
    called_ae: str,
    keys: Keys,
    *,
    output_dir: Path,
    model: Literal["study", "patient"] = "study",
    calling_ae: str = "GETSCU",
    max_pdu: int | None = None,
    args: Sequence[str] = (),
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    output_dir.mkdir(parents=True, exist_ok=True)
    return run_tool(
        GETSCU,
        [
            _MODEL_FLAG[model],
            *_common(calling_ae, called_ae, max_pdu),
            "-od",
            str(output_dir),
            *args,
            *_key_args(keys),
            host,
            str(port),
        ],
        timeout=timeout,
    )


def storescu(
    host: str,
    port: int,
    called_ae: str,
    files: Iterable[Path | InstanceInfo],
    *,
    calling_ae: str = "STORESCU",
    max_pdu: int | None = None,
    args: Sequence[str] = (),
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Send files in one association (``-R``: only propose the SOP classes present)."""
    paths = [str(p) for p in iter_files(files)]
    return run_tool(
        STORESCU,
        [
            *_common(calling_ae, called_ae, max_pdu),
            "-R",
            *args,
            host,
            str(port),
            *paths,
        ],
        timeout=timeout,
    )
