"""The bulk retrieval on a Dask cluster (aiodicom.bulk.cluster): a LocalCluster of 2 workers
gives the same files and report as the one-process run; the per-PACS association limit holds
across the cluster, counted where the PACS stands (the embedded Q/R SCP's own count of the
associations it serves, and a proxy in front of dcmqrscp); a rerun on the cluster
resumes from the journal; C-MOVE needs an AE title per worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import distributed
import pytest
from peers import LOOPBACK, require_executable
from peers.dcmtk import DCMQRSCP, DcmQrScp
from peers.proxy import TcpProxy
from pydicom import dcmread

from aiodicom import Client
from aiodicom.bulk.cluster import (
    ClusterLimiter,
    WorkerAE,
    _CallerEvents,
    retrieve_many_on_cluster,
)
from aiodicom.bulk.config import BulkConfig, ConfigError, PacsConfig
from aiodicom.bulk.events import BulkEvent, ItemFinished, PacsProgress, ProgressUpdate
from aiodicom.bulk.journal import JOURNAL_NAME, Journal
from aiodicom.bulk.manifest import ManifestItem, read_csv
from aiodicom.bulk.report import BulkReport
from aiodicom.bulk.runner import retrieve_many
from aiodicom.model import Level
from aiodicom.server import InstanceIndex
from aiodicom.testing.pytest_plugin import QRScp

LIMIT = 2


def _series_items(index: InstanceIndex, pacs: str) -> list[ManifestItem]:
    rows = index.connection.execute(
        "SELECT DISTINCT StudyInstanceUID, SeriesInstanceUID FROM instances "
        "ORDER BY SeriesInstanceUID"
    ).fetchall()
    return [ManifestItem.series(pacs, str(study), str(series)) for study, series in rows]


def _config(port: int, ae_title: str, **pacs: Any) -> BulkConfig:
    return BulkConfig.of(
        PacsConfig("qr", LOOPBACK, port, ae_title=ae_title, max_associations=LIMIT, **pacs),
        ae_title="AIOBULK",
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*.dcm"))
    }


def _outcome(report: BulkReport) -> dict[str, tuple[str, int, int]]:
    """What must agree between runs: per item, its status, instances and bytes."""
    return {key: (item.status, item.instances, item.bytes) for key, item in report.items.items()}


@pytest.fixture
async def local_cluster() -> Any:
    """Two workers in this process (threads), one task at a time each."""
    async with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, asynchronous=True,
        dashboard_address=None, worker_dashboard_address=None,
    ) as cluster, distributed.Client(cluster, asynchronous=True) as client:
        yield client


async def test_cluster_gives_the_files_and_report_of_one_process(
    aiodicom_qrscp: QRScp, local_cluster: distributed.Client, tmp_path: Path
) -> None:
    server = aiodicom_qrscp.server
    manifest = _series_items(aiodicom_qrscp.index, "qr")
    config = _config(aiodicom_qrscp.port, aiodicom_qrscp.ae_title)

    alone = await retrieve_many(manifest, config=config, output=tmp_path / "alone")
    server.reset_peak()
    seen: list[BulkEvent] = []
    clustered = await retrieve_many_on_cluster(
        manifest, config=config, output=tmp_path / "cluster", client=local_cluster,
        on_event=seen.append,
    )

    assert alone.complete and clustered.complete
    assert len(clustered.items) == len(manifest) == 10
    assert _outcome(clustered) == _outcome(alone)
    assert clustered.instances == len(aiodicom_qrscp.index) == 80
    files = _files(tmp_path / "cluster")
    assert files == _files(tmp_path / "alone")
    assert len(files) == 80
    # Both workers took part, and the PACS never saw more than its limit at once.
    assert server.peak_associations <= LIMIT
    # Progress reached the caller: every item's end, and snapshots summing the shares.
    finished = {e.key for e in seen if isinstance(e, ItemFinished)}
    assert finished == {item.key for item in manifest}
    snapshots = [e for e in seen if isinstance(e, ProgressUpdate)]
    assert snapshots and snapshots[-1].instances == 80


async def test_limit_holds_across_worker_processes(
    aiodicom_qrscp: QRScp, tmp_path: Path
) -> None:
    """Worker processes (not threads): each would allow LIMIT on its own; the cluster's
    semaphore keeps the SCP at LIMIT in all, and the journal makes the rerun fetch nothing."""
    server = aiodicom_qrscp.server
    manifest = _series_items(aiodicom_qrscp.index, "qr")
    config = _config(aiodicom_qrscp.port, aiodicom_qrscp.ae_title)
    output = tmp_path / "out"
    async with distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, asynchronous=True,
        dashboard_address=None, worker_dashboard_address=None,
    ) as cluster, distributed.Client(cluster, asynchronous=True) as client:
        first = await retrieve_many_on_cluster(
            manifest, config=config, output=output, client=client
        )
        pids = await client.run(_pid)
        assert len(set(pids.values())) == 2
        assert first.complete and first.instances == 80
        assert server.peak_associations <= LIMIT
        assert len(_files(output)) == 80

        served_before = server.served_associations
        again = await retrieve_many_on_cluster(
            manifest, config=config, output=output, client=client
        )
    assert again.complete
    assert {item.status for item in again.items.values()} == {"skipped"}
    assert again.instances == 0
    # The journal, not the PACS, said so: the rerun opened no association at all.
    assert server.served_associations == served_before


def _pid() -> int:
    return os.getpid()


@pytest.fixture
def dcmqrscp_loaded(
    tmp_path: Path, aiodicom_synthetic_files: list[Path]
) -> Iterator[tuple[DcmQrScp, list[tuple[str, str]]]]:
    """dcmqrscp serving the default synthetic studies; their (study, series) UIDs."""
    require_executable(DCMQRSCP)
    series = sorted({
        (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        for ds in (dcmread(path, stop_before_pixels=True) for path in aiodicom_synthetic_files)
    })
    server = DcmQrScp(tmp_path / "dcmqrscp", ae_title="QRSCP", max_associations=32)
    server.load(aiodicom_synthetic_files)
    with server:
        yield server, series


@pytest.mark.interop
async def test_limit_holds_at_dcmqrscp_behind_a_proxy(
    local_cluster: distributed.Client, tmp_path: Path, dcmqrscp_loaded: Any
) -> None:
    server, series = dcmqrscp_loaded
    async with TcpProxy(server.host, server.port) as proxy:
        config = _config(proxy.port, server.ae_title)
        manifest = [ManifestItem.series("qr", study, uid) for study, uid in series]
        report = await retrieve_many_on_cluster(
            manifest, config=config, output=tmp_path / "out", client=local_cluster
        )
    assert report.complete, report.summary()
    assert proxy.connections >= len(manifest)
    assert 1 <= proxy.peak_connections <= LIMIT


async def test_move_needs_an_ae_title_per_worker(
    aiodicom_qrscp: QRScp, local_cluster: distributed.Client, tmp_path: Path
) -> None:
    config = _config(aiodicom_qrscp.port, aiodicom_qrscp.ae_title, method="move")
    manifest = _series_items(aiodicom_qrscp.index, "qr")
    with pytest.raises(ConfigError, match="worker_ae_titles"):
        await retrieve_many_on_cluster(
            manifest, config=config, output=tmp_path / "x", client=local_cluster
        )


async def test_move_with_a_registered_ae_title_per_worker(
    aiodicom_qrscp: QRScp, local_cluster: distributed.Client, tmp_path: Path
) -> None:
    from peers import free_port

    identity = await local_cluster.scheduler.identity(n_workers=-1)
    names = [str(info["name"]) for info in identity["workers"].values()]
    titles = {}
    for n, name in enumerate(sorted(names)):
        port = free_port()
        titles[name] = WorkerAE(f"AIOWORKER{n}", port, listen_host=LOOPBACK)
        aiodicom_qrscp.add_move_destination(f"AIOWORKER{n}", LOOPBACK, port)
    config = _config(aiodicom_qrscp.port, aiodicom_qrscp.ae_title, method="move")
    manifest = _series_items(aiodicom_qrscp.index, "qr")
    report = await retrieve_many_on_cluster(
        manifest, config=config, output=tmp_path / "out", client=local_cluster,
        worker_ae_titles=titles,
    )
    assert report.complete, report.summary()
    assert len(_files(tmp_path / "out")) == 80
    # The SCP counts the associations opened to it (the deliveries go the other way).
    assert aiodicom_qrscp.server.peak_associations <= LIMIT


async def test_an_unknown_pacs_fails_before_any_task(
    aiodicom_qrscp: QRScp, local_cluster: distributed.Client, tmp_path: Path
) -> None:
    config = _config(aiodicom_qrscp.port, aiodicom_qrscp.ae_title)
    with pytest.raises(ConfigError, match="no PACS named 'elsewhere'"):
        await retrieve_many_on_cluster(
            [ManifestItem.study("elsewhere", "1.2.3")], config=config,
            output=tmp_path / "x", client=local_cluster,
        )
    await anyio.lowlevel.checkpoint()


async def test_a_manifest_file_is_read_by_each_task_for_its_share(
    aiodicom_qrscp: QRScp, local_cluster: distributed.Client, tmp_path: Path
) -> None:
    """A CSV manifest is not read by the caller: every task streams the file and keeps its
    share (by the stable hash of each item's key); together they cover it exactly once."""
    items = _series_items(aiodicom_qrscp.index, "qr")
    csv = tmp_path / "manifest.csv"
    csv.write_text("pacs,StudyInstanceUID,SeriesInstanceUID\n" + "".join(
        f"qr,{i.keys['StudyInstanceUID']},{i.keys['SeriesInstanceUID']}\n" for i in items
    ))
    config = _config(aiodicom_qrscp.port, aiodicom_qrscp.ae_title)
    report = await retrieve_many_on_cluster(
        read_csv(csv), config=config, output=tmp_path / "out", client=local_cluster,
        partitions=3,
    )
    assert report.complete
    assert set(report.items) == {i.key for i in items}
    assert all(item.attempts == 1 for item in report.items.values())
    assert len(_files(tmp_path / "out")) == 80


async def test_caller_side_events_are_bounded_and_snapshots_summed() -> None:
    received: list[BulkEvent] = []
    caller = _CallerEvents(received.append, None, limit=3)

    def message(kind: str, event: BulkEvent, share: int = 0) -> tuple[float, dict[str, Any]]:
        return (0.0, {"share": share, "kind": kind, "event": attrs.asdict(event)})

    progress = PacsProgress("qr", 1, 0, 10, 5, 500, 1.0, 100.0, 9.0, 1)
    caller.receive(message("ProgressUpdate", ProgressUpdate({"qr": progress}, 1.0), share=0))
    for n in range(4):
        caller.receive(message("ItemFinished", ItemFinished(f"k{n}", "qr", "done", 8, 800, 1)))
    caller.receive(message("ProgressUpdate", ProgressUpdate({"qr": progress}, 2.0), share=1))
    assert caller.dropped == 1  # the fourth item event found the buffer full
    caller.close()
    await caller.pump()
    assert [e.key for e in received if isinstance(e, ItemFinished)] == ["k0", "k1", "k2"]
    # One snapshot, the latest: both shares' counts added up per PACS.
    snapshots = [e for e in received if isinstance(e, ProgressUpdate)]
    assert len(snapshots) == 1
    assert snapshots[0].pacs["qr"].instances == 10
    assert snapshots[0].pacs["qr"].items_total == 20
    assert snapshots[0].elapsed == 2.0


def _cancel_a_waiter_then_take_the_lease(names: dict[str, str]) -> list[str]:
    """In a task: limit 1; a second slot is cancelled while it waits for the lease; the lease
    must come back to the pool (a third slot gets it) instead of staying with the gone task."""
    config = _config(1, "ANY", max_operations=None)
    config = attrs.evolve(config, pacs={"qr": attrs.evolve(config.pacs["qr"],
                                                             max_associations=1)})
    limiter = ClusterLimiter(config, names, None)
    steps: list[str] = []

    async def main() -> None:
        with anyio.fail_after(60):  # a safety net, not a measurement
            async with limiter.slot("qr"):
                steps.append("first holds")
                async with anyio.create_task_group() as tasks:
                    waiting = anyio.Event()

                    async def second() -> None:
                        waiting.set()
                        async with limiter.slot("qr"):
                            steps.append("second holds (wrong)")

                    tasks.start_soon(second)
                    await waiting.wait()
                    await anyio.lowlevel.checkpoint()
                    tasks.cancel_scope.cancel()
                steps.append("second cancelled")
            async with limiter.slot("qr"):
                steps.append("third holds")
        limiter.close()

    asyncio.run(main())
    return steps


async def test_a_cancelled_waiter_does_not_keep_a_lease(
    local_cluster: distributed.Client,
) -> None:
    name = "aiodicom-bulk-test-cancel-qr"
    semaphore = await distributed.Semaphore(
        max_leases=1, name=name, scheduler_rpc=local_cluster.scheduler, loop=local_cluster.loop
    )
    steps = await local_cluster.submit(
        _cancel_a_waiter_then_take_the_lease, {"qr": name}, pure=False
    )
    assert steps == ["first holds", "second cancelled", "third holds"]
    await semaphore.close()


def test_bulk_benchmark_smoke_run(tmp_path: Path) -> None:
    """``python -m benchmarks.bulk`` end to end on a tiny corpus (embedded SCPs, one process
    and a LocalCluster of 1): every row complete, within the limit. No timing asserted."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    env["AIODICOM_BENCH_WORK"] = str(tmp_path / "work")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bulk", "--quick", "--peers", "embedded",
         "--workers", "0,1", "--studies", "3", "--slices", "2"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| embedded")]
    assert len(rows) == 4
    for row in rows:
        assert "FAILED" not in row and "INCOMPLETE" not in row
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] in ("6", "18")  # instances: 3 studies x 2 slices per PACS
        assert all(int(peak.split()[1]) <= 4 for peak in cells[8].split(", "))


async def test_a_cancelled_caller_stops_the_shares(
    aiodicom_qrscp: QRScp, local_cluster: distributed.Client, tmp_path: Path
) -> None:
    """Dask cannot interrupt a running task: the shares watch the run's stop event, set when
    the caller leaves, and cancel their runner. A follow-up task on each worker (one thread
    each) can start only once the share before it has ended."""
    rows = aiodicom_qrscp.index.connection.execute(
        "SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID FROM instances"
    ).fetchall()
    manifest = [
        ManifestItem("qr", Level.IMAGE, {"StudyInstanceUID": study, "SeriesInstanceUID": series,
                                         "SOPInstanceUID": sop})
        for study, series, sop in rows
    ]
    config = _config(aiodicom_qrscp.port, aiodicom_qrscp.ae_title)
    output = tmp_path / "out"
    with anyio.CancelScope() as scope:

        def cancel_at_first(event: BulkEvent) -> None:
            if isinstance(event, ItemFinished):
                scope.cancel()

        await retrieve_many_on_cluster(
            manifest, config=config, output=output, client=local_cluster,
            on_event=cancel_at_first,
        )
    assert scope.cancelled_caught
    with anyio.fail_after(120):  # a safety net: the shares must end, not run to the last item
        workers = list((await local_cluster.scheduler.identity(n_workers=-1))["workers"])
        await local_cluster.gather([
            local_cluster.submit(_pid, workers=[w], pure=False) for w in workers
        ])
    assert aiodicom_qrscp.server.open_associations == 0
    with Journal(output / JOURNAL_NAME) as journal:
        done = [r for r in journal.records() if r.status == "done"]
    assert 1 <= len(done) < len(manifest)
    # The journal lets the next run finish the job.
    report = await retrieve_many_on_cluster(
        manifest, config=config, output=output, client=local_cluster
    )
    assert report.complete
    assert len(_files(output)) == 80


async def test_qrserver_counts_the_associations_it_serves(aiodicom_qrscp: QRScp) -> None:
    server = aiodicom_qrscp.server
    assert (server.open_associations, server.peak_associations) == (0, 0)
    async with Client("AIOCOUNT") as client:
        peer = client.peer(*aiodicom_qrscp.peer)
        async with peer.associate() as one, peer.associate() as two:
            await one.echo()
            await two.echo()
            assert server.open_associations == 2
            async with peer.associate() as three:
                await three.echo()
                assert (server.open_associations, server.peak_associations) == (3, 3)
            # A new observation starts from what is open now, whatever came before.
            server.reset_peak()
            assert server.peak_associations == server.open_associations
    assert server.served_associations == 3
