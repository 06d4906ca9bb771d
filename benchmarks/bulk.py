"""Bulk retrieval at scale: ``python -m benchmarks.bulk`` (``--quick`` for a smoke run).

Many small studies (aiodicom.testing.synthetic: one series of a few 64x64 slices each) on
three PACS, retrieved by C-GET with at most 4 associations per PACS:

* one process (``retrieve_many``), 1 PACS, then the 3 PACS at once;
* a Dask ``LocalCluster`` of 1, 2 and 4 worker processes (``retrieve_many_on_cluster``), the 3
  PACS at once;

first against three embedded Q/R SCPs (``benchmarks/bulk_server.py``, a process each), then
against the real peers: two dcmqrscp and one Orthanc, each behind the tests' TCP proxy
(``tests/peers/proxy.py``) that tells how many associations the PACS had open at once.
Reported per case: instances/s, MB/s (data set bytes, 10^6), the most associations each PACS
saw at once, and peak RSS (the caller's process, and the largest worker's).

Every measured run is a process of its own (``python -m benchmarks.bulk measure '<json>'``)
writing into a fresh directory. The corpus and the peers' storage are kept under
``benchmarks/.work/bulk-<profile>/`` between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks import _paths, machine

HOST = "127.0.0.1"
LIMIT = 4  # associations per PACS
PACS_NAMES = ("pacs1", "pacs2", "pacs3")


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


def _patients(pacs_index: int, studies: int) -> list[Any]:
    from aiodicom.testing.synthetic import PatientSpec, SeriesSpec, StudySpec

    return [
        PatientSpec(
            f"BULK-{pacs_index}-{n:05d}", f"Bulk^Patient{n}", None, "19800101", "O",
            (StudySpec("20240101", "120000", "CT SMALL", f"A{pacs_index}{n:06d}",
                       f"S{n}", "Ref^Doctor",
                       (SeriesSpec("CT", "AX SMALL", "AX", "CHEST"),)),),
        )
        for n in range(studies)
    ]


def corpus(work: Path, studies: int, slices: int) -> dict[str, Path]:
    """One index directory per PACS (Part 10 files + the embedded SCP's index), made once."""
    from aiodicom.server import InstanceIndex
    from aiodicom.testing.synthetic import synthetic_instances

    directories = {}
    for k, name in enumerate(PACS_NAMES):
        directory = work / "corpus" / name
        marker = directory / "complete"
        if not marker.exists():
            shutil.rmtree(directory, ignore_errors=True)
            print(f"  generating {studies} studies x {slices} slices for {name} ...", flush=True)
            with InstanceIndex(directory) as index:
                for instance in synthetic_instances(
                    _patients(k, studies), seed=f"bulk-{name}", rows=64, columns=64,
                    slices=slices,
                ):
                    index.store(instance)
            marker.write_text("ok")
        directories[name] = directory
    return directories


def study_uids(directory: Path) -> list[str]:
    from aiodicom.server import InstanceIndex

    with InstanceIndex(directory) as index:
        rows = index.connection.execute(
            "SELECT DISTINCT StudyInstanceUID FROM instances ORDER BY StudyInstanceUID"
        ).fetchall()
    return [str(row[0]) for row in rows]


def part10_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.dcm"))


# --------------------------------------------------------------------------------------------
# Peers: each answers "how many associations at most since the last reset"
# --------------------------------------------------------------------------------------------


class EmbeddedPacs:
    """An embedded Q/R SCP in its own process (benchmarks/bulk_server.py)."""

    def __init__(self, directory: Path, ae_title: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_paths.ROOT),
                                                        env.get("PYTHONPATH", "")) if p)
        self.ae_title = ae_title
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bulk_server", str(directory), ae_title],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=_paths.ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"embedded SCP for {directory} did not start: {line}")
        self.port = int(line[1])

    def _ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def reset(self) -> None:
        self._ask("reset")

    def peak(self) -> int:
        return int(self._ask("stats")["peak"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(20)


class ProxiedPeer:
    """A real peer behind the tests' TCP proxy, which counts the connections open at once
    (run on an event loop in a thread of its own: benchmark infrastructure, not library)."""

    def __init__(self, server: Any, stack: ExitStack) -> None:
        self.server = server
        self.ae_title = server.ae_title
        self.proxy = stack.enter_context(_proxy_in_thread(HOST, server.port))
        self.port = self.proxy.port

    def reset(self) -> None:
        self.proxy.peak_connections = self.proxy.open_connections

    def peak(self) -> int:
        return int(self.proxy.peak_connections)


@contextmanager
def _proxy_in_thread(host: str, port: int) -> Iterator[Any]:
    import anyio
    import anyio.from_thread
    import anyio.lowlevel
    from peers.proxy import TcpProxy

    ready = threading.Event()
    running: dict[str, Any] = {}

    async def serve() -> None:
        stop = anyio.Event()
        async with TcpProxy(host, port) as proxy:
            running.update(proxy=proxy, stop=stop, token=anyio.lowlevel.current_token())
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=anyio.run, args=(serve,), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError(f"the proxy to {host}:{port} did not start")
    try:
        yield running["proxy"]
    finally:
        anyio.from_thread.run_sync(running["stop"].set, token=running["token"])
        thread.join(30)


@contextmanager
def embedded_peers(directories: dict[str, Path]) -> Iterator[dict[str, Any]]:
    peers: dict[str, Any] = {}
    try:
        for name, directory in directories.items():
            peers[name] = EmbeddedPacs(directory, name.upper())
        yield peers
    finally:
        for peer in peers.values():
            peer.stop()


@contextmanager
def real_peers(work: Path, directories: dict[str, Path]) -> Iterator[dict[str, Any]]:
    from peers.dcmtk import DcmQrScp
    from peers.orthanc import Orthanc

    from benchmarks.peers import MAX_PDU, _prepared

    with ExitStack() as stack:
        peers: dict[str, Any] = {}
        for name in PACS_NAMES[:2]:
            workdir = work / "peers" / name
            files = part10_files(directories[name])
            key = f"{name}:{len(files)}"
            loaded = _prepared(workdir, key)
            server = DcmQrScp(workdir, ae_title=name.upper(), max_pdu=MAX_PDU,
                              max_associations=64)
            if not loaded:
                print(f"  indexing {len(files)} instances into dcmqrscp {name} ...", flush=True)
                server.load(files)
                (workdir / "loaded.key").write_text(key)
            stack.enter_context(server.start())
            peers[name] = ProxiedPeer(server, stack)
        name = PACS_NAMES[2]
        workdir = work / "peers" / name
        files = part10_files(directories[name])
        key = f"{name}:{len(files)}"
        loaded = _prepared(workdir, key)
        orthanc = Orthanc(workdir, ae_title=name.upper(), max_pdu=MAX_PDU,
                          extra_config={"DicomScpTimeout": 600, "DicomThreadsCount": 8})
        orthanc.start()
        stack.callback(orthanc.stop)
        if not loaded:
            print(f"  uploading {len(files)} instances to Orthanc {name} ...", flush=True)
            orthanc.upload(files)
            (workdir / "loaded.key").write_text(key)
        peers[name] = ProxiedPeer(orthanc, stack)
        yield peers


# --------------------------------------------------------------------------------------------
# One measured run (in a process of its own)
# --------------------------------------------------------------------------------------------


def _config(spec: dict[str, Any]) -> Any:
    from aiodicom.bulk.config import BulkConfig, PacsConfig

    return BulkConfig.of(*(
        PacsConfig(name, HOST, port, ae_title=ae, method="get", max_associations=LIMIT)
        for name, (port, ae) in spec["pacs"].items()
    ), ae_title="AIOBULK", idle_timeout=spec.get("idle_timeout", 5.0))


def _warm() -> int:
    """Import what a task needs before the clock starts (once per worker process)."""
    import aiodicom.bulk.cluster
    import aiodicom.bulk.runner  # noqa: F401

    return _peak_rss_kb()


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _manifest(spec: dict[str, Any]) -> list[Any]:
    from aiodicom.bulk.manifest import ManifestItem

    return [ManifestItem.study(name, uid) for name, uids in spec["studies"].items()
            for uid in uids]


def _peak_rss_kb() -> int:
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    from aiodicom.bulk.runner import retrieve_many

    config, manifest, output = _config(spec), _manifest(spec), Path(spec["output"])
    workers = int(spec["workers"])
    worker_rss: list[int] = []
    worker_cpu = 0.0
    cpu0 = _cpu_seconds()
    if workers == 0:
        started = time.perf_counter()
        report = await retrieve_many(manifest, config=config, output=output)
        wall = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu0
    else:
        import distributed

        from aiodicom.bulk.cluster import retrieve_many_on_cluster

        async with distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, asynchronous=True,
            dashboard_address=None, worker_dashboard_address=None,
        ) as cluster, distributed.Client(cluster, asynchronous=True) as client:
            await client.run(_warm)  # the workers are up, aiodicom imported
            before = await client.run(_cpu_seconds)
            cpu0 = _cpu_seconds()
            started = time.perf_counter()
            report = await retrieve_many_on_cluster(
                manifest, config=config, output=output, client=client
            )
            wall = time.perf_counter() - started
            cpu = _cpu_seconds() - cpu0
            after = await client.run(_cpu_seconds)
            worker_cpu = sum(after[w] - before[w] for w in after)
            worker_rss = list((await client.run(_peak_rss_kb)).values())
    return {
        "wall": wall, "complete": report.complete, "instances": report.instances,
        "bytes": report.bytes, "items": len(report.items), "cpu": cpu + worker_cpu,
        "caller_rss_kb": _peak_rss_kb(), "worker_rss_kb": worker_rss,
    }


def measure_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_paths.ROOT), str(_paths.TESTS),
                                                    env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bulk", "measure", json.dumps(spec)],
        capture_output=True, text=True, env=env, cwd=_paths.ROOT, timeout=1800, check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    return {"error": f"exit {proc.returncode}: {proc.stderr[-3000:]}"}


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

CASES = (  # title, workers (0: one process), PACS, idle_timeout of the associations
    ("one process, 1 PACS", 0, 1, 5.0),
    ("one process, 3 PACS", 0, 3, 5.0),
    ("one process, 3 PACS, an association per item", 0, 3, 0.0),
    ("LocalCluster 1 worker, 3 PACS", 1, 3, 0.0),
    ("LocalCluster 2 workers, 3 PACS", 2, 3, 0.0),
    ("LocalCluster 4 workers, 3 PACS", 4, 3, 0.0),
)


def run_cases(label: str, peers: dict[str, Any], studies: dict[str, list[str]], work: Path,
              only_workers: set[int] | None, runs: int) -> list[dict[str, Any]]:
    """Every case once per round, ``runs`` rounds (A B C ... A B C ...); one row per case
    with the median wall time (the machine is shared: a neighbour's burst touches one
    sample of each case, not all of one)."""
    cases = [c for c in CASES if only_workers is None or c[1] in only_workers]
    samples: dict[str, list[dict[str, Any]]] = {c[0]: [] for c in cases}
    for round_number in range(runs):
        for title, workers, npacs, idle_timeout in cases:
            names = PACS_NAMES[:npacs]
            output = work / "out" / f"{label}-{workers}-{npacs}-{idle_timeout}"
            shutil.rmtree(output, ignore_errors=True)
            os.sync()
            for peer in peers.values():
                peer.reset()
            busy = machine.busy_percent(0.5)
            spec = {
                "pacs": {n: (peers[n].port, peers[n].ae_title) for n in names},
                "studies": {n: studies[n] for n in names},
                "output": str(output), "workers": workers, "idle_timeout": idle_timeout,
            }
            print(f"  {label}: {title} (round {round_number + 1}/{runs}) ...", flush=True)
            result = measure_in_child(spec)
            result.update(peers_peak={n: peers[n].peak() for n in names}, busy_before=busy)
            samples[title].append(result)
            shutil.rmtree(output, ignore_errors=True)
    rows = []
    for title, _workers, _npacs, _idle in cases:
        ok = [r for r in samples[title] if "error" not in r]
        if not ok:
            rows.append({"case": title, "peers": label, "error": samples[title][-1]["error"]})
            continue
        ok.sort(key=lambda r: r["wall"])
        row = dict(ok[len(ok) // 2])
        row.update(
            case=title, peers=label, runs=len(samples[title]), failed_runs=runs - len(ok),
            complete=all(r["complete"] for r in ok),
            peers_peak={n: max(r["peers_peak"][n] for r in ok) for n in row["peers_peak"]},
            busy=statistics.median(r["busy_before"] for r in samples[title]),
            samples=samples[title],
        )
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Peers | Case | Instances | MB | Median wall (s) | Instances/s | MB/s | CPU s per "
        "1000 instances (all processes of the client) | Most associations at once per PACS "
        "(SCP side; limit 4) | Peak RSS caller / largest worker (MiB) | Machine busy before |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['peers']} | {r['case']} | FAILED: "
                         f"{r['error'].splitlines()[-1][:120]} | | | | | | | | |")
            continue
        wall = r["wall"]
        peaks = ", ".join(f"{k} {v}" for k, v in r["peers_peak"].items())
        workers = r["worker_rss_kb"]
        rss = f"{r['caller_rss_kb'] / 1024:.0f}" + (
            f" / {max(workers) / 1024:.0f}" if workers else "")
        notes = "" if r["complete"] else " (INCOMPLETE)"
        if r.get("failed_runs"):
            notes += f" ({r['failed_runs']} run(s) failed)"
        lines.append(
            f"| {r['peers']} | {r['case']}{notes} | {r['instances']:,} | "
            f"{r['bytes'] / 1e6:.1f} | {wall:.2f} | {r['instances'] / wall:,.0f} | "
            f"{r['bytes'] / 1e6 / wall:.1f} | {1000 * r['cpu'] / max(1, r['instances']):.2f} | "
            f"{peaks} | {rss} | {r['busy']:.0f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["measure"]:
        print(json.dumps(asyncio.run(_measure(json.loads(argv[1])))), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bulk", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 studies per PACS")
    parser.add_argument("--studies", type=int, help="studies per PACS (default 150)")
    parser.add_argument("--slices", type=int, default=4, help="instances per study (4)")
    parser.add_argument("--peers", default="embedded,real",
                        help="'embedded', 'real' or both (default)")
    parser.add_argument("--workers", help="only these cases, e.g. '0,2' (0: one process)")
    parser.add_argument("--runs", type=int, help="rounds over the cases (default 3; quick 1)")
    args = parser.parse_args(argv)
    profile = "quick" if args.quick else "full"
    count = args.studies or (20 if args.quick else 150)
    work = _paths.WORK / f"bulk-{profile}"
    work.mkdir(parents=True, exist_ok=True)
    only = {int(w) for w in args.workers.split(",")} if args.workers else None
    runs = args.runs or (1 if args.quick else 3)
    started = time.monotonic()
    print(f"corpus: {count} studies x {args.slices} instances per PACS, 3 PACS", flush=True)
    directories = corpus(work, count, args.slices)
    studies = {name: study_uids(d) for name, d in directories.items()}
    rows: list[dict[str, Any]] = []
    kinds = {k.strip() for k in args.peers.split(",")}
    if "embedded" in kinds:
        with embedded_peers(directories) as peers:
            rows += run_cases("embedded Q/R SCP x3", peers, studies, work, only, runs)
    if "real" in kinds:
        with real_peers(work, directories) as peers:
            rows += run_cases("dcmqrscp x2 + Orthanc", peers, studies, work, only, runs)
    info = machine.describe()
    text = "\n\n".join([
        f"### Bulk retrieval ({profile}: {count} studies x {args.slices} instances of 64x64 "
        f"per PACS, C-GET, 4 associations per PACS; medians of {runs} alternating run(s))",
        machine.markdown(info),
        table(rows),
        f"Whole run {(time.monotonic() - started) / 60:.1f} min.",
    ])
    (work / "results.json").write_text(json.dumps({"rows": rows, "machine": info}, indent=2))
    (work / "report.md").write_text(text + "\n")
    print(text)
    return 0 if all("error" not in r and r["complete"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
