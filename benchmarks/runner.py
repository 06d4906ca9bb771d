"""The benchmark run: peers up, every case measured client after client (A B C A B C ...).

Each case lists its clients; run ``r`` measures every client once before run ``r + 1`` starts,
so that a slow drift of the machine (page cache, CPU frequency, a noisy neighbour) touches all
clients alike. Reported per client: median wall time, throughput, client CPU seconds and peak
RSS of the client's process, and on aiodicom rows the speed ratios to pynetdicom and to DCMTK
measured in the same run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peers import free_port
from peers.dcmtk import ECHOSCU, STORESCP, STORESCU, StoreScp

from benchmarks import _paths, interpreters, machine
from benchmarks.cases import (
    Case,
    Client,
    Comparison,
    Row,
    summarize,
)
from benchmarks.corpus import Corpus, SeriesRef, ensure_corpus_in_child
from benchmarks.floor import MODES as FLOOR_MODES
from benchmarks.measure import (
    Sample,
    ToolServer,
    WorkerServer,
    failed,
    run_tool,
    run_worker,
    set_aside,
)
from benchmarks.peers import (
    AIO_AE,
    DCMTK_AE,
    MAX_PDU,
    PYN_AE,
    Destinations,
    dcmtk_args,
    new_destinations,
    start_dcmqrscp,
    start_orthanc,
)

HOST = "127.0.0.1"


def round_order(clients: int, run: int) -> list[int]:
    """The order of ``clients`` clients in round ``run``: a row of Williams' balanced Latin
    square. Over ``clients`` rounds (twice that for an odd number) every client runs in every
    place and right after every other client equally often.

    A rotation (A B C, B C A, C A B) gives every place alike but keeps the neighbours: B
    follows A in every round but one. In run 41 of benchmarks/RESULTS.md our C-MOVE to a
    directory followed our C-MOVE into memory in 13 of 16 rounds, and was slow in 9 of them;
    after movescu, 3 of 3 rounds were fast.
    """
    # The first row goes 0, 1, n-1, 2, n-2, ...: the differences between neighbours are then
    # all different mod n, and each later row adds one to every entry.
    first = [0]
    low, high = 1, clients - 1
    while len(first) < clients:
        first.append(low)
        low += 1
        if len(first) < clients:
            first.append(high)
            high -= 1
    order = [(place + run) % clients for place in first]
    if clients % 2 and (run // clients) % 2:
        order.reverse()  # an odd square is balanced by its rows and their mirror images
    return order


def settle() -> None:
    """Write back what the previous client wrote (and the discards of the blocks its truncated
    files freed: the file system here is mounted with ``discard``) before the next client is
    timed, so that no client pays for another's files."""
    os.sync()


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    name: str
    runs: int
    echo_n: int
    orthanc: bool
    concurrency: tuple[int, ...]
    pyn_concurrency: tuple[int, ...]
    concurrency_ops: int  # operations in total per concurrency sample (spread over associations)
    idle_n: int
    idle_seconds: float
    pyn_default_pdu: bool
    warmup: bool
    quiet_wait: float  # seconds to wait for other people's load to pass before each case


PROFILES = {
    "full": Profile(
        "full", runs=3, echo_n=200, orthanc=True, concurrency=(1, 10, 100, 500),
        pyn_concurrency=(1, 10, 100), concurrency_ops=1000, idle_n=100, idle_seconds=5.0,
        pyn_default_pdu=True, warmup=True, quiet_wait=120.0,
    ),
    "quick": Profile(
        "quick", runs=1, echo_n=20, orthanc=False, concurrency=(1, 10),
        pyn_concurrency=(), concurrency_ops=40, idle_n=10, idle_seconds=1.0,
        pyn_default_pdu=False, warmup=False, quiet_wait=0.0,
    ),
}


# --------------------------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, profile: Profile, only: set[str] | None, verbose: bool = True,
                 experiments: bool = False, uvloop: bool = False,
                 hot_memory: bool = False, python: str | None = None) -> None:
        self.profile = profile
        self.experiments = experiments
        self.uvloop = uvloop
        self.python = python  # --python: a second interpreter for aiodicom's rows
        self.machine_info: dict[str, Any] = {}  # machine.describe(), once the run is saved
        self.hot_memory = hot_memory
        self.only = only
        self.verbose = verbose
        self.work = _paths.WORK / profile.name
        self.out = self.work / "out"
        self._spent = 0  # output directories moved aside by _clear()
        self._run_id = time.strftime("%Y%m%d-%H%M%S")
        self.logs = self.work / "logs"
        self.cases: list[Case] = []
        self.corpus: Corpus | None = None
        self.dest: Destinations = new_destinations()
        self.stoppers: list[Callable[[], None]] = []
        self.started = time.monotonic()
        self.setup_seconds = 0.0

    def log(self, text: str) -> None:
        if self.verbose:
            elapsed = time.monotonic() - self.started
            print(f"[{elapsed:7.1f}s] {text}", flush=True)

    def wanted(self, key: str) -> bool:
        return self.only is None or any(key.startswith(k) for k in self.only)

    # -- set-up -----------------------------------------------------------------------------

    def setup(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log(f"corpus ({self.profile.name}) ...")
        self.corpus = ensure_corpus_in_child(self.profile.name)
        c = self.corpus
        self.log("starting dcmqrscp (big series) ...")
        self.qr = start_dcmqrscp(self.profile.name, "dcmqrscp", [c.big], self.dest, log=self.log)
        self.stoppers.append(self.qr.stop)
        self.log("starting dcmqrscp (many small instances) ...")
        self.qr_many = start_dcmqrscp(
            self.profile.name, "dcmqrscp-many", [c.many], self.dest, log=self.log
        )
        self.stoppers.append(self.qr_many.stop)
        self.orthanc = None
        if self.profile.orthanc and self._wants_orthanc():
            self.log("starting Orthanc ...")
            self.orthanc = start_orthanc(self.profile.name, [c.big], self.dest, log=self.log)
            self.stoppers.append(self.orthanc.stop)
        self.setup_seconds = time.monotonic() - self.started

    def _wants_orthanc(self) -> bool:
        return self.only is None or any("orthanc" in k for k in self.only)

    def teardown(self) -> None:
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception as exc:
                print(f"warning: stopping a peer failed: {exc}")
        # What clients wrote stays, emptied, in out/.spent (see _clear): deleting its thousands
        # of files here would slow every file created in the next minute, by the next run too.
        if self.out.exists():
            for leftover in self.out.iterdir():
                if leftover.name != ".spent":
                    self._clear(leftover)

    # -- running --------------------------------------------------------------------------------

    def run_case(self, case: Case) -> None:
        if not self.wanted(case.key):
            return
        if self.uvloop:
            from benchmarks import eventloop

            case.clients += eventloop.uvloop_twins(self, case)
        if self.python:
            case.clients += interpreters.twins(self, case, self.python)
        case.busy_before = machine.wait_until_quiet(self.profile.quiet_wait)
        self.log(f"case {case.key}: {case.title} (machine {case.busy_before:.0f} % busy before"
                 f"{'; free memory warmed before each client' if self.hot_memory else ''})")
        for label in case.warmup:
            client = next(c for c in case.clients if c.label == label)
            self._settle(case)
            sample = client.run()
            self.log(f"    warm-up {label}: {'ok' if sample.ok else 'FAILED ' + str(sample.error)}")
        for run in range(self.profile.runs):
            # Which client runs right after which changes what it inherits (the page cache the
            # previous one's output freed, the memory its exit gave back), and on a VM that is
            # worth more than the software's difference: each round's order is a row of a
            # balanced Latin square, so that every client takes every place and follows every
            # other alike (see round_order).
            for index in round_order(len(case.clients), run):
                client = case.clients[index]
                self._settle(case)
                sample = client.run()
                case.samples.setdefault(client.label, []).append(sample)
                status = "ok" if sample.ok else f"FAILED: {sample.error}"
                self.log(
                    f"    run {run + 1} {client.label:<34} wall {sample.wall:8.3f} s  "
                    f"cpu {sample.cpu:7.3f} s  rss {sample.peak_rss_kb / 1024:7.1f} MiB  {status}"
                )
        self.cases.append(case)

    def _settle(self, case: Case) -> None:
        settle()
        if self.hot_memory and case.work_bytes:
            # Twice the data (a file's page cache and the data set in memory) and some room.
            machine.warm_free_memory(2 * case.work_bytes + (64 << 20))

    # -- clients -------------------------------------------------------------------------------

    def _series_params(self, series: SeriesRef) -> dict[str, Any]:
        return {"study_uid": series.study_uid, "series_uid": series.series_uid, "expect": series.n}

    def _out_dir(self, name: str) -> Path:
        return self.out / name

    def _clear(self, path: Path) -> None:
        """Empty an output directory for the next client, without deleting a file: each is
        truncated (its data and page cache freed) and the directory moved aside into
        ``out/.spent``, which outlives the run (benchmarks/README.md).

        Deleting them would tax every client after: on ext4 without a journal (this VM's root
        file system) an inode deleted less than a minute ago is not reused, and finding a free
        one walks past every such inode of the group, so creating a file cost up to 400 us
        instead of 15 us after a few thousand deletions, more for whichever client's
        directory landed in the group where the most were deleted.
        """
        self._spent += 1
        # Named for this run: .spent outlives runs.
        set_aside(path, self.out / ".spent", f"{self._run_id}-{self._spent}")

    def _worker(self, library: str, task: str, params: dict[str, Any], clear: Path | None = None
                ) -> Callable[[], Sample]:
        def run() -> Sample:
            try:
                return run_worker(library, task, params)
            finally:
                if clear is not None:
                    self._clear(clear)

        run.worker_spec = (library, task, params, clear)  # type: ignore[attr-defined]
        return run

    # -- cases ---------------------------------------------------------------------------------

    def case_echo(self) -> None:
        if not self.wanted("echo"):
            return
        n = self.profile.echo_n
        scp = StoreScp(self.work / "peers" / "echo-storescp", ae_title="ECHOSCP", max_pdu=MAX_PDU)
        scp.start()
        try:
            peer = {"host": HOST, "port": scp.port, "called": scp.ae_title, "n": n}

            def echoscu_loop() -> Sample:
                wall = cpu = 0.0
                rss = 0
                for _ in range(n):
                    r = run_tool([ECHOSCU, "-aec", scp.ae_title, HOST, scp.port])
                    if r.returncode != 0:
                        return failed(f"echoscu exited {r.returncode}")
                    wall += r.wall
                    cpu += r.cpu
                    rss = max(rss, r.peak_rss_kb)
                return Sample(wall, cpu, rss, True, count=n)

            case = Case(
                "echo", f"associate + C-ECHO + release, {n} in a loop (peer: DCMTK storescp)",
                "ms/assoc", None, n,
                [
                    Client("aiodicom", "aiodicom", self._worker("aiodicom", "echo_loop", peer)),
                    Client("pynetdicom", "pynetdicom",
                           self._worker("pynetdicom", "echo_loop", peer)),
                    Client("echoscu (a process per call)", "dcmtk", echoscu_loop,
                           note="reference only: includes starting a process per association"),
                ],
                [Comparison("aiodicom", "pynetdicom", "echoscu (a process per call)")],
            )
            self.run_case(case)
        finally:
            scp.stop()

    def _find_case(self, key: str, peer_name: str, host: str, port: int, called: str,
                   series: SeriesRef) -> None:
        if not self.wanted(key):
            return
        params = {"host": host, "port": port, "called": called, **self._series_params(series)}

        def findscu(quiet: bool = True) -> Sample:
            log = self.logs / f"{key}-findscu.log"
            args = dcmtk_args("find", called, series.study_uid, series.series_uid, quiet=quiet)
            r = run_tool([*args, host, port], log=log)
            if r.returncode != 0:
                return failed(f"findscu exited {r.returncode}: {r.output}")
            return Sample(r.wall, r.cpu, r.peak_rss_kb, True, count=series.n, extra=r.extra())

        def findscu_checked() -> Sample:
            # Unmeasured check that findscu gets every match (the measured runs print nothing).
            findscu(quiet=False)
            text = (self.logs / f"{key}-findscu.log").read_text(errors="replace")
            got = text.count("(Pending)")
            if got != series.n:
                return failed(f"findscu saw {got} matches, expected {series.n}")
            return Sample(0.0, 0.0, 0, True)

        case = Case(
            key, f"C-FIND IMAGE level, {series.n} matches ({peer_name})", "matches/s", None,
            series.n,
            [
                Client("aiodicom", "aiodicom", self._worker("aiodicom", "find", params)),
                Client("pynetdicom", "pynetdicom", self._worker("pynetdicom", "find", params)),
                Client("findscu -q", "dcmtk", findscu),
            ],
            [Comparison("aiodicom", "pynetdicom", "findscu -q")],
        )
        check = findscu_checked()
        self.log(f"    findscu match count check: {'ok' if check.ok else check.error}")
        self.run_case(case)

    def case_find(self) -> None:
        assert self.corpus is not None
        self._find_case("find-dcmqrscp", "dcmqrscp", HOST, self.qr.port, "QRSCP", self.corpus.big)
        self._find_case(
            "find-many-dcmqrscp", "dcmqrscp", HOST, self.qr_many.port, "QRSCP", self.corpus.many
        )
        if self.orthanc is not None:
            self._find_case(
                "find-orthanc", "Orthanc", HOST, self.orthanc.port, "ORTHANC", self.corpus.big
            )

    def _retrieve_case(self, kind: str, peer_name: str, port: int, called: str) -> None:
        key = f"{kind}-{peer_name.lower()}"
        if not self.wanted(key):
            return
        assert self.corpus is not None
        series = self.corpus.big
        base = {"host": HOST, "port": port, "called": called, "kind": kind,
                **self._series_params(series)}
        aio = {**base, "ae_title": AIO_AE, "listen_port": self.dest.aiodicom}
        pyn = {**base, "ae_title": PYN_AE, "listen_port": self.dest.pynetdicom}
        aio_dir, pyn_dir, dcmtk_dir = (self._out_dir(f"{key}-{n}") for n in ("aio", "pyn", "dcmtk"))

        def dcmtk_get() -> Sample:
            self._clear(dcmtk_dir)
            dcmtk_dir.mkdir(parents=True)
            try:
                args = dcmtk_args("get", called, series.study_uid, series.series_uid, dcmtk_dir)
                r = run_tool([*args, HOST, port], log=self.logs / f"{key}-getscu.log")
                files = len(list(dcmtk_dir.iterdir()))
            finally:
                self._clear(dcmtk_dir)
            if r.returncode != 0 or files != series.n:
                return failed(f"getscu exited {r.returncode}, {files} files: {r.output}")
            return Sample(r.wall, r.cpu, r.peak_rss_kb, True, count=files, extra=r.extra())

        def dcmtk_move() -> Sample:
            self._clear(dcmtk_dir)
            dcmtk_dir.mkdir(parents=True)
            try:
                scp = ToolServer(
                    [STORESCP, "-aet", DCMTK_AE, "-od", dcmtk_dir, "--max-pdu", MAX_PDU, "+B",
                     self.dest.dcmtk],
                    self.dest.dcmtk, self.logs / f"{key}-storescp.log",
                )
                try:
                    args = dcmtk_args("move", called, series.study_uid, series.series_uid)
                    r = run_tool([*args, HOST, port], log=self.logs / f"{key}-movescu.log")
                finally:
                    scp_cpu, scp_rss = scp.stop()
                files = len(list(dcmtk_dir.iterdir()))
            finally:
                self._clear(dcmtk_dir)
            if r.returncode != 0 or files != series.n:
                return failed(f"movescu exited {r.returncode}, {files} files: {r.output}")
            return Sample(r.wall, r.cpu + scp_cpu, r.peak_rss_kb + scp_rss, True, count=files,
                          extra={"movescu_cpu": r.cpu, "storescp_cpu": scp_cpu,
                                 "storescp_rss_kb": scp_rss})

        dcmtk_label = ("getscu +B -pdu 131072 (disk)" if kind == "get"
                       else "movescu + storescp +B (disk)")
        clients = [
            Client("aiodicom memory", "aiodicom", self._worker("aiodicom", "retrieve", aio)),
            Client("aiodicom directory", "aiodicom", self._worker(
                "aiodicom", "retrieve", {**aio, "out_dir": str(aio_dir)}, clear=aio_dir)),
        ]
        if self.experiments:
            exp_dir = self._out_dir(f"{key}-aio-exp")
            clients.append(Client("aiodicom directory, experiment: whole, then written",
                                  "aiodicom",
                                  self._worker("aiodicom", "retrieve",
                                               {**aio, "out_dir": str(exp_dir), "sink": "whole"},
                                               clear=exp_dir)))
        if self.profile.pyn_default_pdu:
            clients.append(Client("pynetdicom memory, default PDU", "pynetdicom",
                                  self._worker("pynetdicom", "retrieve", pyn)))
        clients += [
            Client("pynetdicom memory, PDU 131072", "pynetdicom",
                   self._worker("pynetdicom", "retrieve", {**pyn, "max_pdu": MAX_PDU})),
            Client("pynetdicom directory, PDU 131072", "pynetdicom", self._worker(
                "pynetdicom", "retrieve",
                {**pyn, "max_pdu": MAX_PDU, "out_dir": str(pyn_dir)}, clear=pyn_dir)),
            Client(dcmtk_label, "dcmtk", dcmtk_get if kind == "get" else dcmtk_move),
        ]
        case = Case(
            key, f"C-{kind.upper()} of {series.n} CT slices, {series.megabytes:.0f} MB "
            f"({peer_name}, max PDU {MAX_PDU})", "MB/s", series.dataset_bytes, series.n, clients,
            [
                Comparison("aiodicom memory", "pynetdicom memory, PDU 131072", dcmtk_label),
                Comparison("aiodicom directory", "pynetdicom directory, PDU 131072", dcmtk_label),
            ],
            warmup=[dcmtk_label] if self.profile.warmup else [],
        )
        self.run_case(case)

    def case_retrieve(self) -> None:
        from benchmarks.fixed_cost import case_fixed_cost  # the tools' start-up (own file)

        peers = [("dcmqrscp", self.qr.port, "QRSCP")]
        if self.orthanc is not None:
            peers.append(("Orthanc", self.orthanc.port, "ORTHANC"))
        for peer_name, port, called in peers:
            for kind in ("get", "move"):
                self._retrieve_case(kind, peer_name, port, called)
        # dcmqrscp only: Orthanc answers a retrieval that matches nothing with a failure
        # (0xC000), on which movescu exits with an error and our call raises.
        case_fixed_cost(self, "dcmqrscp", self.qr.port, "QRSCP")

    def _store_case(self, key: str, series: SeriesRef) -> None:
        if not self.wanted(key):
            return
        files = [str(p) for p in series.files]

        def storescu(port: int, called: str) -> Any:
            return run_tool([STORESCU, "-aec", called, "-R", HOST, port, *files],
                            log=self.logs / f"{key}-storescu.log")

        def python_scp(
            library: str, sink: str | None = None, uvloop: bool = False,
            python: str | None = None, task: str = "serve_store",
        ) -> Callable[[], Sample]:
            out = self._out_dir(
                f"{key}-{library}{'-' + sink if sink else ''}{'-uvloop' if uvloop else ''}"
                f"{'-python' if python else ''}"
            )

            def run() -> Sample:
                port = free_port()
                params = {"ae_title": "STORESCP", "listen_port": port, "out_dir": str(out),
                          "max_pdu": MAX_PDU, "sink": sink, "uvloop": uvloop}
                if python:
                    params["python"] = python
                try:
                    server = WorkerServer(library, task, params)
                    try:
                        r = storescu(port, "STORESCP")
                    finally:
                        sample = server.finish()
                finally:
                    self._clear(out)
                if r.returncode != 0:
                    return failed(f"storescu exited {r.returncode}: {r.output}")
                received = sample.extra.get("files")
                if received != series.n:
                    return failed(f"{received} files written, expected {series.n}")
                sample.wall = r.wall
                sample.extra["storescu_cpu"] = r.cpu
                return sample

            return run

        def dcmtk_scp(bit_preserving: bool) -> Callable[[], Sample]:
            out = self._out_dir(f"{key}-dcmtk")

            def run() -> Sample:
                port = free_port()
                self._clear(out)
                out.mkdir(parents=True)
                try:
                    scp = ToolServer(
                        [STORESCP, "-aet", "STORESCP", "-od", out, "--max-pdu", MAX_PDU,
                         *(["+B"] if bit_preserving else []), port],
                        port, self.logs / f"{key}-storescp.log",
                    )
                    try:
                        r = storescu(port, "STORESCP")
                    finally:
                        cpu, rss = scp.stop()
                    written = len(list(out.iterdir()))
                finally:
                    self._clear(out)
                if r.returncode != 0 or written != series.n:
                    return failed(f"storescu exited {r.returncode}, {written} files: {r.output}")
                return Sample(r.wall, cpu, rss, True, count=written,
                              extra={"storescu_cpu": r.cpu})

            return run

        size = series.dataset_bytes / series.n
        size_text = f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
        case = Case(
            key, f"C-STORE receive: DCMTK storescu sends {series.n} objects of {size_text}, "
            "the SCP writes files", "MB/s", series.dataset_bytes, series.n,
            [
                Client("aiodicom acceptor + DirectorySink", "aiodicom", python_scp("aiodicom")),
                Client("pynetdicom SCP, PDU 131072", "pynetdicom", python_scp("pynetdicom")),
                Client("storescp -pdu 131072", "dcmtk", dcmtk_scp(False)),
                Client("storescp +B -pdu 131072", "dcmtk", dcmtk_scp(True)),
            ],
            [Comparison("aiodicom acceptor + DirectorySink", "pynetdicom SCP, PDU 131072",
                        "storescp -pdu 131072")],
            note="client CPU and RSS are the receiving SCP's (storescu's own are not counted)",
            # Untimed: storescu's first run reads the objects from disk, which the run timed
            # first (aiodicom's, 0.75 s where the next took 0.45 s) paid for everyone.
            warmup=["storescp +B -pdu 131072"] if self.profile.warmup else [],
        )
        if self.experiments:
            case.clients.insert(1, Client("aiodicom, experiment: whole, then written",
                                          "aiodicom", python_scp("aiodicom", "whole")))
            case.clients.insert(1, Client("aiodicom, experiment: written as it arrives",
                                          "aiodicom", python_scp("aiodicom", "arriving")))
            if key == "store-small":
                # The floor of a Python SCP here (benchmarks/floor.py): the library's codecs
                # without its layers, then with its reassembly, sink, service, state machine.
                for mode in reversed(FLOOR_MODES):
                    case.clients.insert(1, Client(
                        f"experiment: layer-free SCP ({mode}), not the library", "aiodicom",
                        python_scp("aiodicom", mode, task="serve_store_floor")))
        if self.uvloop:
            from benchmarks.eventloop import uvloop_label

            # The servers are not twinned by run_case (they are not plain workers): here.
            case.clients.insert(1, Client(uvloop_label("aiodicom acceptor + DirectorySink"),
                                          "aiodicom", python_scp("aiodicom", uvloop=True)))
        if self.python:
            case.clients.insert(1, Client(
                interpreters.label("aiodicom acceptor + DirectorySink", self.python),
                "aiodicom", python_scp("aiodicom", python=self.python)))
        self.run_case(case)

    def case_store(self) -> None:
        assert self.corpus is not None
        self._store_case("store-small", self.corpus.store_small)
        self._store_case("store-large", self.corpus.store_large)
        self._store_cpu_case("store-cpu", self.corpus.store_small)

    def _store_cpu_case(self, key: str, series: SeriesRef) -> None:
        """The storage SCP's own cost per small C-STORE, in one process (worker.aio_store_cpu):
        aiodicom only, a steadier number to follow from change to change than store-small,
        where storescu's own work and two processes waking each other dominate."""
        if not self.wanted(key):
            return
        out = self._out_dir(key)
        params = {"files": [str(p) for p in series.files], "out_dir": str(out),
                  "max_pdu": MAX_PDU}
        self.run_case(Case(
            key, f"C-STORE receive, the SCP's own cost: our acceptor and a raw client sending "
            f"{series.n} pre-encoded C-STOREs of the store-small objects, on one event loop in "
            "one process", "objects/s", series.dataset_bytes, series.n,
            [Client("aiodicom acceptor + DirectorySink, one process", "aiodicom",
                    self._worker("aiodicom", "store_cpu", params, clear=out))],
        ))

    def case_concurrency(self) -> None:
        if not (self.wanted("concurrency") or self.wanted("idle")):
            return
        assert self.corpus is not None
        port = free_port()
        server = WorkerServer(
            "aiodicom", "serve_echo", {"ae_title": "AIOECHO", "listen_port": port}
        )
        try:
            echo_peer = {"host": HOST, "port": port, "called": "AIOECHO"}
            find_peer = {"host": HOST, "port": self.qr.port, "called": "QRSCP",
                         "study_uid": self.corpus.big.study_uid}
            total = self.profile.concurrency_ops
            if self.wanted("concurrency"):
                for n in self.profile.concurrency:
                    ops = max(1, total // n)
                    clients = [
                        Client("aiodicom echo", "aiodicom", self._worker(
                            "aiodicom", "concurrency", {**echo_peer, "op": "echo", "n": n,
                                                        "ops": ops})),
                        Client("aiodicom find (dcmqrscp)", "aiodicom", self._worker(
                            "aiodicom", "concurrency", {**find_peer, "op": "find", "n": n,
                                                        "ops": ops})),
                    ]
                    comps = [Comparison("aiodicom echo", None, None)]
                    if n in self.profile.pyn_concurrency:
                        clients.append(Client("pynetdicom echo (threads)", "pynetdicom",
                                              self._worker("pynetdicom", "concurrency", {
                                                  **echo_peer, "n": n, "ops": ops})))
                        comps = [Comparison("aiodicom echo", "pynetdicom echo (threads)", None)]
                    self.run_case(Case(
                        f"concurrency-{n}", f"{n} concurrent associations in one process, "
                        f"{ops} operation(s) each once all are up (echo: aiodicom acceptor; "
                        "find: dcmqrscp)", "ops/s", None, n * ops, clients, comps,
                    ))
            if self.wanted("idle"):
                n, seconds = self.profile.idle_n, self.profile.idle_seconds
                idle = {**echo_peer, "n": n, "seconds": seconds}
                self.run_case(Case(
                    "idle", f"CPU used while {n} established associations sit idle for "
                    f"{seconds:g} s", "idle CPU %", None, n,
                    [
                        Client("aiodicom", "aiodicom", self._worker("aiodicom", "idle", idle)),
                        Client("pynetdicom", "pynetdicom",
                               self._worker("pynetdicom", "idle", idle)),
                    ],
                ))
        finally:
            server.finish()

    def case_lateness(self) -> None:
        from benchmarks import eventloop

        for case in eventloop.cases(self):
            self.run_case(case)  # which skips the cases not wanted

    def run_all(self) -> None:
        self.case_echo()
        self.case_find()
        self.case_retrieve()
        self.case_store()
        self.case_concurrency()
        self.case_lateness()
        from benchmarks.pool import case_pool  # the association pool's cases (own file)

        case_pool(self)

    # -- results -------------------------------------------------------------------------------

    def series_text(self) -> str:
        if self.corpus is None:
            return "no corpus"
        big = self.corpus.big
        return f"{big.megabytes:.0f} MB series of {big.n} CT slices {big.rows}x{big.columns}"

    def rows(self) -> list[Row]:
        return [row for case in self.cases for row in summarize(case)]

    def save(self) -> Path:
        path = self.work / "results.json"
        # Described once, for the results and the report alike: the reference loop is timed
        # anew on each call, and would differ between the two.
        self.machine_info = machine.describe(self.python)
        data = {
            "profile": asdict(self.profile),
            "hot_memory": self.hot_memory,
            "machine": self.machine_info,
            "setup_seconds": self.setup_seconds,
            "total_seconds": time.monotonic() - self.started,
            "series": self.series_text(),
            "cases": [
                {"key": c.key, "title": c.title, "unit": c.unit, "note": c.note,
                 "busy_before": c.busy_before,
                 "samples": {k: [asdict(s) for s in v] for k, v in c.samples.items()}}
                for c in self.cases
            ],
            "rows": [asdict(r) for r in self.rows()],
        }
        path.write_text(json.dumps(data, indent=1, default=str))
        return path
