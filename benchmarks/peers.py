"""The real peers of a benchmark run: dcmqrscp (two archives, and a small third one for the
pool cases) and Orthanc, with cached storage.

Both are started with ``TCP_NODELAY=1`` (``tests/peers`` does it for every peer) and a maximum
PDU of 131072 bytes, the largest DCMTK accepts. Their storage (dcmqrscp's index, Orthanc's
database) is kept under ``benchmarks/.work/<profile>/peers`` and reused while the corpus is the
same, so only the first run pays for loading 263 MB into them.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peers import free_port
from peers.dcmtk import FINDSCU, GETSCU, MOVESCU, DcmQrScp
from peers.orthanc import Orthanc

from benchmarks import _paths
from benchmarks.corpus import Corpus, SeriesRef

MAX_PDU = 131072

# Move destinations known to both archives; each client receives on its own port.
AIO_AE = "AIOBENCH"
PYN_AE = "PYNBENCH"
DCMTK_AE = "DCMTKSCP"


def dcmtk_args(
    kind: str, called: str, study_uid: str, series_uid: str, out: Path | None = None,
    quiet: bool = True,
) -> list[Any]:
    """How the runs compare DCMTK's tools: findscu (IMAGE level, ``-q`` unless ``quiet`` is
    false), getscu +B into ``out``, or movescu to ``DCMTK_AE``, for one series, before the
    peer's host and port. The C-FIND, retrieval and retrieve-fixed cases share them, so that a
    fixed cost is measured with the very options of the run it is taken off."""
    if kind == "find":
        keys = ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study_uid}",
                f"SeriesInstanceUID={series_uid}", "SOPInstanceUID", "InstanceNumber",
                "SOPClassUID"]
        head: list[Any] = [FINDSCU, *(["-q"] if quiet else []), "-S", "-aec", called]
    else:
        keys = ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study_uid}",
                f"SeriesInstanceUID={series_uid}"]
        head = ([GETSCU, "-S", "+B", "-pdu", MAX_PDU, "-aec", called, "-od", out]
                if kind == "get" else
                [MOVESCU, "-S", "-pdu", MAX_PDU, "-aec", called, "-aem", DCMTK_AE])
    return head + [arg for key in keys for arg in ("-k", key)]


@dataclass
class Destinations:
    aiodicom: int
    pynetdicom: int
    dcmtk: int

    def table(self) -> list[tuple[str, str, int]]:
        return [
            (AIO_AE, "127.0.0.1", self.aiodicom),
            (PYN_AE, "127.0.0.1", self.pynetdicom),
            (DCMTK_AE, "127.0.0.1", self.dcmtk),
        ]


def new_destinations() -> Destinations:
    return Destinations(free_port(), free_port(), free_port())


def _cache_key(series: list[SeriesRef]) -> str:
    text = "|".join(f"{s.series_uid}:{s.n}:{s.dataset_bytes}" for s in series)
    return hashlib.sha256(text.encode()).hexdigest()


def _prepared(workdir: Path, key: str) -> bool:
    marker = workdir / "loaded.key"
    if marker.exists() and marker.read_text() == key:
        return True
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    return False


def start_dcmqrscp(
    profile: str, name: str, series: list[SeriesRef], destinations: Destinations,
    max_associations: int = 600, log: object = print, first: int | None = None,
) -> DcmQrScp:
    """dcmqrscp serving ``series`` (only the ``first`` instances of each, if given) from the
    cached storage ``peers/<name>``."""
    workdir = _paths.WORK / profile / "peers" / name
    key = _cache_key(series) + ("" if first is None else f":first={first}")
    loaded = _prepared(workdir, key)
    server = DcmQrScp(
        workdir, ae_title="QRSCP", move_destinations=destinations.table(), max_pdu=MAX_PDU,
        max_associations=max_associations,
    )
    if not loaded:
        for s in series:
            files = s.files[:first]
            if callable(log):
                log(f"  indexing {len(files)} instances ({s.key}) into dcmqrscp {name} ...")
            server.load(files)
        (workdir / "loaded.key").write_text(key)
    return server.start()


def start_orthanc(
    profile: str, series: list[SeriesRef], destinations: Destinations, log: object = print
) -> Orthanc:
    workdir = _paths.WORK / profile / "peers" / "orthanc"
    key = _cache_key(series)
    loaded = _prepared(workdir, key)
    server = Orthanc(
        workdir,
        modalities={ae: (ae, host, port) for ae, host, port in destinations.table()},
        max_pdu=MAX_PDU,
        extra_config={"DicomScpTimeout": 600, "LimitFindResults": 0, "LimitFindInstances": 0},
    )
    server.start()
    if not loaded:
        for s in series:
            if callable(log):
                log(f"  uploading {s.n} instances ({s.key}) to Orthanc ...")
            server.upload(s.files)
        (workdir / "loaded.key").write_text(key)
    return server


def corpus_series(corpus: Corpus) -> dict[str, SeriesRef]:
    return {"big": corpus.big, "many": corpus.many}
