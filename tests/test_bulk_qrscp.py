"""Bulk retrieval against the embedded Q/R SCP: completeness, retries, permanent failures,
B000 retried for the failed instances only, resume after SIGKILL (a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest
from bulk_helpers import (
    AE,
    Archive,
    SendCounter,
    assert_output_matches,
    count_sends,
    output_files,
    serving,
)
from peers import LOOPBACK, free_port
from peers.proxy import TcpProxy

from aiodicom.bulk import (
    JOURNAL_NAME,
    BulkConfig,
    BulkReport,
    EventStream,
    ItemFinished,
    LocalLimiter,
    ManifestItem,
    PacsConfig,
    ProgressUpdate,
    RetryPolicy,
    retrieve_many,
)
from aiodicom.instance import Instance
from aiodicom.sinks import DirectorySink

pytestmark = pytest.mark.interop

@pytest.fixture
def send_counter(monkeypatch: pytest.MonkeyPatch) -> SendCounter:
    return count_sends(monkeypatch)


FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.05, max_delay=0.5)


def config_for(port: int, *, method: str = "get", listen_port: int | None = None,
               max_associations: int = 4, ae_title: str = "AIOQR") -> BulkConfig:
    return BulkConfig.of(
        PacsConfig("qr", LOOPBACK, port, ae_title, method=method,  # type: ignore[arg-type]
                   max_associations=max_associations),
        ae_title=AE, listen_port=listen_port, retry=FAST_RETRY,
    )


@pytest.mark.parametrize("method", ["get", "move"])
async def test_every_instance_once_unchanged(
    method: str, tmp_path: Path, send_counter: SendCounter
) -> None:
    archive = Archive.make(10)
    listen_port = free_port() if method == "move" else None
    studies = list(archive.studies)
    series_uid, (study_of_series, _) = next(
        (uid, value) for uid, value in archive.series.items() if value[0] == studies[-1]
    )
    manifest = [
        *archive.study_items("qr", studies[:-1]),
        ManifestItem.series("qr", study_of_series, series_uid),
        ManifestItem.query("qr", "SERIES", StudyInstanceUID=studies[-1], Modality="MR"),
    ]
    limiter = LocalLimiter({"qr": 4})
    stream = EventStream()
    seen: list[object] = []

    async def consume() -> None:
        async for event in stream:
            seen.append(event)

    async with serving(archive) as server, anyio.create_task_group() as tasks:
        if listen_port is not None:
            server.add_move_destination(AE, LOOPBACK, listen_port)
        tasks.start_soon(consume)
        report = await retrieve_many(
            manifest, config=config_for(server.listen_port, method=method,
                                        listen_port=listen_port),
            output=tmp_path, limiter=limiter, events=stream,
        )
    assert report.complete, report.summary()
    assert_output_matches(tmp_path, archive.instances)
    assert set(send_counter.sent.values()) == {1}  # nothing sent twice
    assert report.instances == len(archive.instances)
    assert 1 <= limiter.peak("qr") <= 4
    finished = [e for e in seen if isinstance(e, ItemFinished)]
    assert {e.key for e in finished} == set(report.items)
    last = [e for e in seen if isinstance(e, ProgressUpdate)][-1]
    assert last.pacs["qr"].instances == len(archive.instances)
    assert last.pacs["qr"].eta == 0.0

    # Again: the journal says everything is there; nothing is asked for.
    before = send_counter.total
    again = await _rerun(archive, manifest, tmp_path, method, listen_port)
    assert again.complete and send_counter.total == before
    # The query matched one series (the MR), which became an item of its own.
    assert again.counts() == {"skipped": len(manifest) - 1 + 1, "expanded": 1}


async def _rerun(archive: Archive, manifest: list[ManifestItem], output: Path, method: str,
                 listen_port: int | None):  # type: ignore[no-untyped-def]
    async with serving(archive) as server:
        if listen_port is not None:
            server.add_move_destination(AE, LOOPBACK, listen_port)
        return await retrieve_many(
            manifest, config=config_for(server.listen_port, method=method,
                                        listen_port=listen_port), output=output,
        )


async def test_transient_rejections_and_a_cut_connection_are_retried(
    tmp_path: Path, send_counter: SendCounter
) -> None:
    archive = Archive.make(6, slices=12, size=64)
    async with serving(archive) as server, TcpProxy(LOOPBACK, server.listen_port) as proxy:
        proxy.reject_next(3)
        # One connection cut inside a series: 64x64 16-bit images are ~8 kB each.
        proxy.cut_after(60_000)
        report = await retrieve_many(
            archive.study_items("qr"), config=config_for(proxy.port), output=tmp_path
        )
    assert report.complete, report.summary()
    assert proxy.rejected == 3 and proxy.cuts == 1
    assert_output_matches(tmp_path, archive.instances)
    reasons = [f.reason for item in report.items.values() for f in item.failures]
    assert sum("AssociationRejected" in r for r in reasons) == 3
    assert any("interrupted" in r or "Aborted" in r or "Closed" in r for r in reasons), reasons
    assert report.retries == 4
    assert all(f.retried and not f.permanent for i in report.items.values() for f in i.failures)
    # Only the instance in flight at the cut can have been sent twice.
    assert send_counter.total <= len(archive.instances) + 1


async def test_warning_retries_only_the_failed_instances(
    tmp_path: Path, send_counter: SendCounter
) -> None:
    archive = Archive.make(2, slices=5)
    refused = set(list(archive.instances)[3:5])
    refused_once: set[str] = set()

    class RefusingOnce(DirectorySink):
        async def __call__(self, instance: Instance) -> None:
            uid = instance.sop_instance_uid
            if uid in refused and uid not in refused_once:
                refused_once.add(uid)
                raise OSError("disk full (for the test)")
            await super().__call__(instance)

    async with serving(archive) as server:
        report = await retrieve_many(
            archive.study_items("qr"), config=config_for(server.listen_port),
            sink=RefusingOnce(tmp_path), output=tmp_path,
        )
    assert report.complete, report.summary()
    assert_output_matches(tmp_path, archive.instances)
    # Each instance sent once, the two refused ones twice: the retry asked for those alone.
    assert {uid for uid, n in send_counter.sent.items() if n == 2} == refused
    assert send_counter.total == len(archive.instances) + 2
    failures = [f for item in report.items.values() for f in item.failures]
    assert {f.status for f in failures} == {0xB000}
    assert sum(f.instances_failed for f in failures) == 2


async def test_permanent_failures_are_reported_not_retried(
    tmp_path: Path, send_counter: SendCounter
) -> None:
    archive = Archive.make(2)
    missing = ManifestItem.study("qr", "1.2.3.4.5.6.7.8.9")
    unknown_pacs = ManifestItem.study("nowhere", next(iter(archive.studies)))
    async with serving(archive) as server:
        # C-MOVE to an AE the SCP does not know: 0xA801.
        moved = await retrieve_many(
            archive.study_items("qr"),
            config=config_for(server.listen_port, method="move", listen_port=free_port()),
            output=tmp_path / "move",
        )
        report = await retrieve_many(
            [missing, unknown_pacs, *archive.study_items("qr")],
            config=config_for(server.listen_port), output=tmp_path / "get",
        )
    assert not moved.complete
    for item in moved.items.values():
        assert item.status == "failed" and item.attempts == 1
        assert item.failures[0].permanent and item.failures[0].status == 0xA801
        assert "A801" in item.failures[0].reason
    assert not report.complete
    assert report.items[missing.key].status == "failed"
    assert report.items[missing.key].attempts == 1
    assert "holds no such study" in report.items[missing.key].failures[0].reason
    assert report.items[unknown_pacs.key].status == "failed"
    assert "no PACS named 'nowhere'" in report.items[unknown_pacs.key].failures[0].reason
    assert report.counts() == {"failed": 2, "done": 2}
    assert "FAILED" in report.summary()
    # The failures are in the journal; a rerun tries them again and skips the done ones.
    journal = sqlite3.connect(tmp_path / "get" / JOURNAL_NAME)
    statuses = dict(journal.execute("SELECT key, status FROM items").fetchall())
    journal.close()
    assert statuses[missing.key] == "failed"


RUNNER = """
import json, sys, anyio
from pathlib import Path
from aiodicom.bulk import JOURNAL_NAME, BulkConfig, Journal, read_csv, retrieve_many
args = json.loads(sys.argv[1])
config = BulkConfig.from_mapping(args["config"])
# Every instance committed at once: the kill then finds items half done in the journal.
journal = Journal(Path(args["output"]) / JOURNAL_NAME, batch=1)
report = anyio.run(lambda: retrieve_many(read_csv(args["manifest"]), config=config,
                                          output=args["output"], journal=journal))
print(report.to_json())
"""


async def test_resume_after_sigkill_fetches_only_the_rest(
    tmp_path: Path, send_counter: SendCounter
) -> None:
    archive = Archive.make(12, slices=6, size=32)
    total = len(archive.instances)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("pacs,StudyInstanceUID\n" + "".join(
        f"qr,{uid}\n" for uid in archive.studies))
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    async with serving(archive) as server:
        args = json.dumps({
            "config": {"ae_title": AE, "retry": {"attempts": 3, "base_delay": 0.05},
                       "qr": {"host": LOOPBACK, "port": server.listen_port,
                              "ae_title": "AIOQR", "max_associations": 3}},
            "manifest": str(manifest), "output": str(output),
        })
        # The SCP stops sending half way; the runner is killed while it waits for the rest.
        send_counter.gate_after = total // 2 + 5  # inside a study
        process = await anyio.open_process([sys.executable, "-c", RUNNER, args], env=env)
        try:
            with anyio.fail_after(60):
                await send_counter.reached.wait()
            await _files_settle(output)
            process.send_signal(signal.SIGKILL)
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
            send_counter.gate.set()
        assert process.returncode == -signal.SIGKILL
        first_run = send_counter.total
        # Whatever has a final name is whole and right.
        partial = output_files(output)
        assert 0 < len(partial) < total
        assert_output_matches(output, {uid: archive.instances[uid] for uid in partial})
        recorded = _recorded_in_journal(output / JOURNAL_NAME)
        # Some items were left half done: the rerun asks for their missing instances by UID.
        assert _loose(output / JOURNAL_NAME) > 0
        assert 0 < recorded <= len(partial)

        send_counter.sent.clear()
        send_counter.gate_after = None
        result = await anyio.run_process([sys.executable, "-c", RUNNER, args], env=env)
    report = json.loads(result.stdout)
    assert report["complete"]
    assert_output_matches(output, archive.instances)
    # Only what the journal did not hold was sent again.
    assert send_counter.total == total - recorded
    assert first_run + send_counter.total >= total


async def _files_settle(directory: Path) -> None:
    """Wait (bounded) until the files written by the runner stop changing in number."""
    previous = -1
    with anyio.move_on_after(5):
        while True:
            count = len(output_files(directory)) if directory.exists() else 0
            if count == previous and count > 0:
                return
            previous = count
            await anyio.sleep(0.2)


def _recorded_in_journal(path: Path) -> int:
    """Instances the journal holds: those of finished items, and of unfinished ones."""
    db = sqlite3.connect(path)
    try:
        done = db.execute("SELECT COALESCE(SUM(instances), 0) FROM items WHERE status = 'done'"
                          ).fetchone()[0]
        loose = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        return int(done) + int(loose)
    finally:
        db.close()


def _loose(path: Path) -> int:
    """Instances of unfinished items in the journal."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
    finally:
        db.close()


async def test_an_item_listed_twice_is_fetched_once(
    tmp_path: Path, send_counter: SendCounter
) -> None:
    archive = Archive.make(3)
    items = archive.study_items("qr")
    async with serving(archive) as server:
        report = await retrieve_many(
            [*items, *items, items[0]], config=config_for(server.listen_port), output=tmp_path
        )
    assert report.complete and len(report.items) == 3
    assert set(send_counter.sent.values()) == {1}
    assert_output_matches(tmp_path, archive.instances)


async def test_cancelled_run_keeps_its_report_and_resumes(
    tmp_path: Path, send_counter: SendCounter
) -> None:
    archive = Archive.make(8, slices=6)
    report = BulkReport()
    async with serving(archive) as server:
        config = config_for(server.listen_port, max_associations=2)
        with anyio.CancelScope() as scope:

            def stop_after_two(event: object) -> None:
                if isinstance(event, ItemFinished) and len(report.counts()) and \
                        report.counts().get("done", 0) >= 2:
                    scope.cancel()

            await retrieve_many(archive.study_items("qr"), config=config, output=tmp_path,
                                report=report, on_event=stop_after_two)
        assert scope.cancelled_caught
        counts = report.counts()
        assert counts["done"] >= 2 and not report.complete
        first = send_counter.total
        assert first < len(archive.instances)
        again = await retrieve_many(archive.study_items("qr"), config=config, output=tmp_path)
    assert again.complete
    assert again.counts()["skipped"] == counts["done"]
    assert_output_matches(tmp_path, archive.instances)
    # Only instances in flight at the cancel can have been sent twice.
    assert send_counter.total <= len(archive.instances) + 2
