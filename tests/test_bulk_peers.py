"""Bulk retrieval from DCMTK dcmqrscp and Orthanc at once, and through faults: rejections, a
connection cut mid-series, Orthanc killed mid-transfer and restarted, permanent failures."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from bulk_helpers import AE, output_files
from peers import LOOPBACK, free_port, in_thread
from peers.corpus import Corpus, InstanceInfo, SeriesInfo, bulk_patient_spec, generate_corpus
from peers.dcmtk import DcmQrScp
from peers.orthanc import Orthanc
from peers.proxy import TcpProxy

from aiodicom.bulk import (
    BulkConfig,
    BulkEvent,
    LocalLimiter,
    ManifestItem,
    PacsConfig,
    ProgressUpdate,
    RetryPolicy,
    retrieve_many,
)
from aiodicom.fileio import split_part10

pytestmark = pytest.mark.interop


def source_bytes(info: InstanceInfo) -> bytes:
    return bytes(split_part10(info.path.read_bytes())[1])


def assert_files_are(output: Path, expected: list[InstanceInfo]) -> None:
    """Each expected instance once under its final name, its data set bytes those served."""
    files = output_files(output)
    assert sorted(files) == sorted(i.sop_instance_uid for i in expected)
    for info in expected:
        meta, data = split_part10(files[info.sop_instance_uid].read_bytes())
        assert bytes(data) == source_bytes(info)
        assert meta["transfer_syntax_uid"] == info.transfer_syntax_uid


def series_item(pacs: str, corpus: Corpus, series: SeriesInfo) -> ManifestItem:
    study = next(s for s in corpus.studies if series in s.series)
    return ManifestItem.series(pacs, study.study_instance_uid, series.series_instance_uid)


async def test_dcmqrscp_and_orthanc_at_once_four_associations_each(
    tmp_path: Path, corpus: Corpus, dcmqrscp_factory: Callable[..., DcmQrScp],
    orthanc: Orthanc,
) -> None:
    listen_port = free_port()
    dcmqrscp = dcmqrscp_factory(move_destinations=[(AE, LOOPBACK, listen_port)])
    whole_study = corpus.studies[0]  # retrieved at STUDY level from dcmqrscp
    queried = corpus.studies[2]  # its patient's only study: found by C-FIND on Orthanc
    assert len(corpus.patient(queried.patient_id).studies) == 1
    rest = [s for s in corpus.series
            if s not in whole_study.series and s not in queried.series]
    limiter = LocalLimiter({"dcmtk": 4, "orthanc": 4})
    async with TcpProxy(dcmqrscp.host, dcmqrscp.port) as to_dcmtk, \
            TcpProxy(orthanc.host, orthanc.port) as to_orthanc:
        config = BulkConfig.of(
            PacsConfig("dcmtk", LOOPBACK, to_dcmtk.port, dcmqrscp.ae_title, method="move",
                       max_associations=4),
            PacsConfig("orthanc", LOOPBACK, to_orthanc.port, orthanc.ae_title, method="get",
                       max_associations=4),
            ae_title=AE, listen_port=listen_port,
        )
        manifest = [
            ManifestItem.study("dcmtk", whole_study.study_instance_uid),
            ManifestItem.query("orthanc", "STUDY", PatientID=queried.patient_id),
            *(series_item("dcmtk" if n % 2 else "orthanc", corpus, series)
              for n, series in enumerate(rest)),
        ]
        report = await retrieve_many(manifest, config=config, output=tmp_path,
                                     limiter=limiter)
    assert report.complete, report.summary()
    assert report.retries == 0
    assert_files_are(tmp_path, corpus.instances)
    assert report.instances == len(corpus.instances)  # each arrived once
    # What each PACS saw: never more than 4 associations of ours at once.
    assert 1 <= to_dcmtk.peak_connections <= 4
    assert 1 <= to_orthanc.peak_connections <= 4
    assert limiter.peak("dcmtk") <= 4 and limiter.peak("orthanc") <= 4
    totals = report.per_pacs()
    assert totals["dcmtk"].instances > 0 and totals["orthanc"].instances > 0


async def test_rejections_and_a_cut_mid_series_against_dcmqrscp(
    tmp_path: Path, corpus: Corpus, dcmqrscp: DcmQrScp,
) -> None:
    biggest = max(corpus.series, key=lambda s: len(s.instances))
    study = next(s for s in corpus.studies if biggest in s.series)
    async with TcpProxy(dcmqrscp.host, dcmqrscp.port) as proxy:
        proxy.reject_next(2)
        # Two instances and a bit of the third: the cut falls inside the series.
        proxy.cut_after(2 * len(source_bytes(biggest.instances[0])) + 4000)
        config = BulkConfig.of(
            PacsConfig("dcmtk", LOOPBACK, proxy.port, dcmqrscp.ae_title, max_associations=4),
            ae_title=AE, retry=RetryPolicy(attempts=5, base_delay=0.1, max_delay=1),
        )
        report = await retrieve_many(
            [ManifestItem.series("dcmtk", study.study_instance_uid,
                                 biggest.series_instance_uid)],
            config=config, output=tmp_path,
        )
    assert report.complete, report.summary()
    assert proxy.rejected == 2 and proxy.cuts == 1
    assert_files_are(tmp_path, biggest.instances)
    (item,) = report.items.values()
    assert item.attempts == 4 and item.retries == 3
    assert all(not f.permanent for f in item.failures)


async def test_orthanc_killed_mid_transfer_and_restarted(
    tmp_path: Path, orthanc_factory: Callable[..., Orthanc],
) -> None:
    bulk = generate_corpus(tmp_path / "corpus", (bulk_patient_spec(120),))
    server = orthanc_factory(load_corpus=False)
    server.upload(bulk.instances)
    (study,) = bulk.studies
    halfway = anyio.Event()

    def watch(event: BulkEvent) -> None:
        if isinstance(event, ProgressUpdate) and event.instances >= 20:
            halfway.set()

    config = BulkConfig.of(
        PacsConfig("orthanc", LOOPBACK, server.port, server.ae_title, max_associations=2),
        ae_title=AE, retry=RetryPolicy(attempts=10, base_delay=0.5, max_delay=3),
    )
    killed_at: list[int] = []

    async def kill_and_restart() -> None:
        await halfway.wait()
        assert server.pid is not None
        killed_at.append(len(output_files(tmp_path / "out")))
        os.killpg(server.pid, signal.SIGKILL)
        await in_thread(server.restart)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(kill_and_restart)
        report = await retrieve_many(
            [ManifestItem.study("orthanc", study.study_instance_uid)], config=config,
            output=tmp_path / "out", on_event=watch, progress_interval=0,
        )
    assert report.complete, report.summary()
    assert killed_at and killed_at[0] < len(bulk.instances)
    assert_files_are(tmp_path / "out", bulk.instances)
    (item,) = report.items.values()
    assert item.retries >= 1 and all(not f.permanent for f in item.failures)


async def test_permanent_failures_from_real_peers(
    tmp_path: Path, corpus: Corpus, dcmqrscp_factory: Callable[..., DcmQrScp],
    orthanc: Orthanc,
) -> None:
    # Neither PACS knows our AE as a move destination: dcmqrscp answers A801, Orthanc C000.
    dcmqrscp = dcmqrscp_factory()
    config = BulkConfig.of(
        PacsConfig("dcmtk", LOOPBACK, dcmqrscp.port, dcmqrscp.ae_title, method="move"),
        PacsConfig("orthanc", LOOPBACK, orthanc.port, orthanc.ae_title, method="move"),
        ae_title=AE, listen_port=free_port(),
        retry=RetryPolicy(attempts=4, base_delay=0.05),
    )
    study = corpus.studies[0].study_instance_uid
    report = await retrieve_many(
        [ManifestItem.study("dcmtk", study), ManifestItem.study("orthanc", study)],
        config=config, output=tmp_path,
    )
    assert report.counts() == {"failed": 2}
    for item in report.items.values():
        assert item.attempts == 1 and item.retries == 0
        (failure,) = item.failures
        assert failure.permanent
    assert report.items[f"dcmtk/STUDY/{study}"].failures[0].status == 0xA801
    assert "move destination" in report.items[f"orthanc/STUDY/{study}"].failures[0].reason
    assert not output_files(tmp_path)
