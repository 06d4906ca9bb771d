"""The parts of aiodicom.bulk that need no peer: configuration, manifests, the limiter, the
journal (several processes), events and reports."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from aiodicom.bulk import (
    BulkConfig,
    BulkReport,
    ConfigError,
    EventStream,
    Failure,
    ItemFinished,
    ItemReport,
    Journal,
    LocalLimiter,
    ManifestError,
    ManifestItem,
    ProgressUpdate,
    RetryPolicy,
    read_csv,
    read_json,
    read_manifest,
    shard,
)
from aiodicom.model import Level

PEERS_TOML = """
ae_title = "AIOSCU"
listen_port = 11113
max_operations = 6

[retry]
attempts = 3
base_delay = 0.5

[mypacs]
host = "pacs.example"
port = 11112
ae_title = "PACS"
method = "move"
our_ae_title = "AIOSCU"
our_port = 11113

[archive]
host = "10.0.0.2"
port = 104
max_associations = 2
dimse_timeout = 300
"""


def test_config_reads_the_peers_toml_shape(tmp_path: Path) -> None:
    path = tmp_path / "peers.toml"
    path.write_text(PEERS_TOML)
    config = BulkConfig.load(path)
    assert config.ae_title == "AIOSCU" and config.listen_port == 11113
    assert config.global_operations == 6
    assert config.retry == RetryPolicy(attempts=3, base_delay=0.5)
    mypacs, archive = config.get("mypacs"), config.get("archive")
    assert (mypacs.host, mypacs.port, mypacs.ae_title, mypacs.method) == (
        "pacs.example", 11112, "PACS", "move")
    assert (archive.method, archive.max_associations, archive.operations) == ("get", 2, 2)
    assert archive.timeouts.dimse == 300
    as_json = tmp_path / "pacs.json"
    as_json.write_text(json.dumps({"pacs": {"a": {"host": "h", "port": 1}}, "ae_title": "X"}))
    assert BulkConfig.load(as_json).get("a").port == 1
    with pytest.raises(ConfigError, match=r"no PACS named 'other'.*archive, mypacs"):
        config.get("other")


@pytest.mark.parametrize("text, message", [
    ('[a]\nhost = "h"\nport = 1\nmethod = "push"\n', "method must be 'get' or 'move'"),
    ('[a]\nhost = "h"\n', r"\[a\] needs host and port"),
    ('[a]\nhost = "h"\nport = 1\ncolour = 3\n', r"unknown keys \['colour'\]"),
    ('speed = 3\n[a]\nhost = "h"\nport = 1\n', "unknown setting 'speed'"),
    ('ae_title = "X"\n', "names no PACS"),
    ('[a]\nhost = "h"\nport = 1\nmax_associations = 0\n', "at least 1"),
])
def test_config_errors_say_what_to_change(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        BulkConfig.load(path)


def test_retry_delays_grow_exponentially_with_jitter_and_a_ceiling() -> None:
    policy = RetryPolicy(attempts=10, base_delay=1.0, multiplier=2.0, max_delay=10.0,
                         jitter=0.5)
    rng = random.Random(7)
    assert policy.delay(1, rng) == 0.0
    for attempt, ceiling in [(2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (60, 10.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # spread out, not in lockstep
    assert RetryPolicy(jitter=0).delay(3) == 2.0


def test_csv_manifest_levels_queries_and_stable_keys(tmp_path: Path) -> None:
    path = tmp_path / "cohort.csv"
    path.write_text(
        "pacs,level,find,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,PatientID,"
        "StudyDate\n"
        "a,,,1.2.3,,,,\n"
        "b,,,1.2.3,1.2.3.4,,,\n"
        "\n"
        "a,IMAGE,,1.2.3,1.2.3.4,1.2.3.4.5\\1.2.3.4.6,,\n"
        "b,STUDY,yes,,,,P1,20240101-20240131\n"
    )
    items = list(read_manifest(path))
    assert [(i.pacs, i.level, i.find) for i in items] == [
        ("a", Level.STUDY, False), ("b", Level.SERIES, False), ("a", Level.IMAGE, False),
        ("b", Level.STUDY, True),
    ]
    assert items[0].key == "a/STUDY/1.2.3"
    assert items[1].key == "b/SERIES/1.2.3/1.2.3.4"
    assert items[2].key == "a/IMAGE/1.2.3/1.2.3.4/1.2.3.4.5\\1.2.3.4.6"
    assert items[3].keys == {"PatientID": "P1", "StudyDate": "20240101-20240131"}
    assert items[3].key.startswith("b/find/STUDY/")
    assert [i.key for i in read_csv(path)] == [i.key for i in items]  # read again, same keys
    assert read_csv(path).count() == {"a": 2, "b": 2}
    # The same item from JSON has the same key.
    assert ManifestItem.from_mapping(items[3].to_json()).key == items[3].key


def test_manifest_rows_that_cannot_be_items(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("pacs,level,StudyInstanceUID\na,SERIES,1.2.3\n")
    with pytest.raises(ManifestError, match=r"line 2: a SERIES item needs SeriesInstanceUID"):
        list(read_csv(path))
    path.write_text("StudyInstanceUID\n1.2.3\n")
    with pytest.raises(ManifestError, match="no 'pacs' column"):
        list(read_csv(path))
    with pytest.raises(ManifestError, match=r"one value or a UID list"):
        ManifestItem.study("a", "1.2.*")


def test_json_manifests_are_streamed(tmp_path: Path) -> None:
    rows = [{"pacs": "a", "StudyInstanceUID": f"1.2.{n}"} for n in range(3000)]
    array = tmp_path / "m.json"
    array.write_text(json.dumps(rows, indent=1))
    lines = tmp_path / "m.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for path in (array, lines):
        assert [i.keys["StudyInstanceUID"] for i in read_json(path)] == [
            r["StudyInstanceUID"] for r in rows]
    # An array whose end is broken still yields its first items before the error: read one
    # object at a time, never the whole file first.
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(rows)[:-5000])
    stream = iter(read_json(broken))
    assert next(stream).keys["StudyInstanceUID"] == "1.2.0"
    with pytest.raises(ManifestError, match="invalid JSON"):
        list(stream)


def test_shards_partition_a_manifest() -> None:
    items = [ManifestItem.study("a" if n % 3 else "b", f"1.2.{n}") for n in range(500)]
    shares = [list(shard(items, 4, i)) for i in range(4)]
    keys = [item.key for share in shares for item in share]
    assert sorted(keys) == sorted(item.key for item in items)
    assert all(len(share) > 60 for share in shares)
    assert [i.key for i in shard(items, 4, 2)] == [i.key for i in shares[2]]
    with pytest.raises(ValueError):
        list(shard(items, 4, 4))


async def test_limiter_holds_limits_and_serves_pacs_in_turn() -> None:
    limiter = LocalLimiter({"a": 3, "b": 3}, total=2)
    order: list[str] = []
    release = anyio.Event()
    held = {"a": 0, "b": 0}
    worst = {"a": 0, "b": 0, "all": 0}

    async def use(pacs: str) -> None:
        async with limiter.slot(pacs):
            order.append(pacs)
            held[pacs] += 1
            worst[pacs] = max(worst[pacs], held[pacs])
            worst["all"] = max(worst["all"], sum(held.values()))
            await release.wait()
            held[pacs] -= 1

    async with anyio.create_task_group() as tasks:
        for _ in range(8):
            tasks.start_soon(use, "a")
        await anyio.wait_all_tasks_blocked()
        for _ in range(3):
            tasks.start_soon(use, "b")
        await anyio.wait_all_tasks_blocked()
        assert order == ["a", "a"] and limiter.in_use() == 2
        release.set()
    # b arrived after 8 callers of a, yet got every other freed slot.
    assert order[2:8] == ["b", "a", "b", "a", "b", "a"]
    assert worst["all"] <= 2 and limiter.peak("a") <= 2


async def test_limiter_cancelled_waiter_leaves_no_slot_behind() -> None:
    limiter = LocalLimiter({"a": 1})
    async with limiter.slot("a"):
        with anyio.move_on_after(0.01):
            async with limiter.slot("a"):
                pytest.fail("the slot is held")
    assert limiter.in_use("a") == 0
    async with limiter.slot("a"):
        assert limiter.in_use("a") == 1


def test_journal_keeps_unfinished_items_instances_only(tmp_path: Path) -> None:
    item = ManifestItem.study("a", "1.2.3")
    with Journal(tmp_path / "j.sqlite") as journal:
        for n in range(5):
            journal.add_instance(item.key, f"1.2.3.4.{n}", series="1.2.3.4", study="1.2.3",
                                 path=None, size=100)
        assert len(journal.instances(item.key)) == 5
        journal.finish(item, "failed", attempts=3, instances=5, bytes=500, error="x")
        assert len(journal.instances(item.key)) == 5  # kept: a later run resumes it
        journal.finish(item, "done", attempts=1, instances=0, bytes=0)
        record = journal.record(item.key)
        assert record is not None
        assert (record.status, record.attempts, record.instances, record.bytes) == (
            "done", 4, 5, 500)
        assert journal.instances(item.key) == []
        query = ManifestItem.query("a", "STUDY", PatientID="P")
        writer = journal.children_writer(query)
        writer.add(ManifestItem.study("a", f"1.2.{n}") for n in range(1200))
        assert journal.status(query.key) is None  # not expanded until finished
        assert writer.finish() == 1200
        children = list(journal.children(query))
        assert [c.keys["StudyInstanceUID"] for c in children] == [
            f"1.2.{n}" for n in range(1200)]
        assert all(c.parent == query.key for c in children)
        assert journal.status(query.key) == "expanded"


WRITER = """
import sys
from aiodicom.bulk import Journal, ManifestItem
journal = Journal(sys.argv[1], batch=7)
for n in range(300):
    item = ManifestItem.study("a", f"1.{sys.argv[2]}.{n}")
    journal.add_instance(item.key, f"1.{sys.argv[2]}.{n}.1", series=None, study=None,
                         path=None, size=1)
    journal.finish(item, "done", attempts=1, instances=1, bytes=1)
journal.close()
"""


def test_journal_shared_by_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    Journal(path).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)],
                         env={"PYTHONPATH": ":".join(sys.path)})
        for n in range(3)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    with Journal(path) as journal:
        records = list(journal.records())
    assert len(records) == 900 and {r.status for r in records} == {"done"}


def test_a_new_journal_opened_by_several_at_once_opens_for_all(tmp_path: Path) -> None:
    """Shares of a bulk run on a cluster whose caller did not make the journal first: they
    open it at the same moment, and all of them switching it to WAL must not fail any (it
    failed one round in twenty with four openers, on "database is locked")."""
    failed_rounds = 0
    for round_number in range(60):
        path = tmp_path / f"journal-{round_number}.sqlite"
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_it(path: Path = path, start: threading.Barrier = start,
                    errors: list[BaseException] = errors) -> None:
            start.wait()
            try:
                Journal(path).close()
            except Exception as exc:  # collected: a thread's exception would be lost
                errors.append(exc)

        # Threads here (not in the library): each has its own connection, which SQLite
        # locks against the others exactly as it would separate processes.
        openers = [threading.Thread(target=open_it) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
        failed_rounds += bool(errors)
    assert failed_rounds == 0


def _open_journals(
    base: Path, rounds: int, barrier: Any, failures: Any
) -> None:
    for round_number in range(rounds):
        barrier.wait()
        try:
            Journal(base / f"journal-{round_number}.sqlite").close()
        except Exception:
            with failures.get_lock():
                failures.value += 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="processes forked for the race")
def test_a_new_journal_opened_by_several_processes_at_once_opens_for_all(
    tmp_path: Path,
) -> None:
    """As the shares of a bulk run on a Dask cluster do when the caller could not make the
    journal first (a cluster of its own given as client): processes, not threads, each
    creating the same new journal at the same moment. Asking again at once after losing the
    switch to WAL failed 12 of 800 such openers; a loser must wait for the winner's lock."""
    context = multiprocessing.get_context("fork")
    openers = 4
    barrier = context.Barrier(openers)
    failures = context.Value("i", 0)
    processes = [
        context.Process(target=_open_journals, args=(tmp_path, 100, barrier, failures))
        for _ in range(openers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * openers
    assert failures.value == 0


async def test_event_stream_drops_old_snapshots_not_item_events() -> None:
    stream = EventStream(max_buffer=4)
    finished = [ItemFinished(f"k{n}", "a", "done", 1, 1, 1) for n in range(6)]
    for n in range(3):
        await stream.send(ProgressUpdate({}, float(n)))
    await stream.send(finished[0])
    await stream.send(ProgressUpdate({}, 9.0))  # full: the oldest snapshot goes
    received: list[object] = []

    async def produce() -> None:
        for event in finished[1:]:
            await stream.send(event)  # waits for room once snapshots are gone
        stream.close()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(produce)
        async for event in stream:
            received.append(event)
    assert [e for e in received if isinstance(e, ItemFinished)] == finished
    assert [e.elapsed for e in received if isinstance(e, ProgressUpdate)][-1] == 9.0


def test_reports_merge_and_round_trip() -> None:
    first = BulkReport(started=10.0, finished=20.0)
    first.add(ItemReport("a/STUDY/1", "a", "STUDY", "failed", instances=3, bytes=30,
                         attempts=5, failures=[Failure(5, "timeout", False)]))
    first.add(ItemReport("a/STUDY/2", "a", "STUDY", "done", instances=4, bytes=40,
                         attempts=1))
    second = BulkReport(started=15.0, finished=30.0)
    second.add(ItemReport("a/STUDY/1", "a", "STUDY", "done", instances=2, bytes=20,
                          attempts=1, resumed=3))
    second.add(ItemReport("b/SERIES/1/2", "b", "SERIES", "done", instances=1, bytes=10,
                          attempts=2, failures=[Failure(1, "rejected", False, retried=True)]))
    merged = BulkReport.merge([first, second])
    assert merged.complete and (merged.started, merged.finished) == (10.0, 30.0)
    one = merged.items["a/STUDY/1"]
    assert (one.status, one.instances, one.attempts, len(one.failures)) == ("done", 5, 6, 1)
    assert merged.instances == 10 and merged.bytes == 100 and merged.retries == 1
    again = BulkReport.from_json(merged.to_json())
    assert again.to_dict() == merged.to_dict()
    summary = merged.summary()
    assert "complete: 3 item(s)" in summary and "b: 1 done" in summary
    assert "INCOMPLETE" in first.summary() and "FAILED a/STUDY/1" in first.summary()


def test_config_takes_our_ae_title_and_port_from_peers_toml(tmp_path: Path) -> None:
    path = tmp_path / "peers.toml"
    path.write_text('[a]\nhost = "h"\nport = 1\nour_ae_title = "US"\nour_port = 4000\n'
                    '[b]\nhost = "h"\nport = 2\nour_ae_title = "US"\n')
    config = BulkConfig.load(path)
    assert (config.ae_title, config.listen_port) == ("US", 4000)
    path.write_text('[a]\nhost = "h"\nport = 1\nour_ae_title = "US"\n'
                    '[b]\nhost = "h"\nport = 2\nour_ae_title = "THEM"\n')
    with pytest.raises(ConfigError, match="set ae_title at the top"):
        BulkConfig.load(path)


def _refusal(status: int, *, interrupted: str | None = None, failed: int = 0) -> Exception:
    from aiodicom.services.retrieve import Progress, RetrieveError, RetrieveResult

    result = RetrieveResult(
        status=status, status_text="", error_comment=None, completed=(),
        failed=tuple(f"1.2.{n}" for n in range(failed)), warning=(), bytes_received=0,
        sub_operations=Progress(None, 0, failed, 0), interrupted=interrupted,
    )
    return RetrieveError(result)


@pytest.mark.parametrize("error, permanent", [
    (_refusal(0xA700), False),
    (_refusal(0xA702, failed=3), False),
    (_refusal(0xFE00), False),
    (_refusal(0xC000, interrupted="ConnectionClosed: gone"), False),
    (_refusal(0xA801), True),
    (_refusal(0xA900), True),
    (_refusal(0xC001), True),
    (_refusal(0x0122), True),
])
def test_failures_are_told_transient_or_permanent(error: Exception, permanent: bool) -> None:
    from aiodicom.bulk.fetch import classify
    from aiodicom.errors import (
        AssociationAborted,
        AssociationError,
        AssociationRejected,
        DicomTimeoutError,
    )

    assert classify(error).permanent is permanent
    assert not classify(AssociationRejected(2, 1, 2)).permanent  # rejected-transient
    assert classify(AssociationRejected(1, 1, 3)).permanent
    assert not classify(AssociationAborted("aborted", 2, 0)).permanent
    assert not classify(DicomTimeoutError("no answer")).permanent
    refused = AssociationError("cannot connect to h:1: [Errno 111] Connection refused")
    assert not classify(refused).permanent


async def test_a_move_pacs_needs_our_port(tmp_path: Path) -> None:
    from aiodicom.bulk import PacsConfig, retrieve_many

    config = BulkConfig.of(PacsConfig("a", "h", 1, method="move"))
    with pytest.raises(ConfigError, match=r"PACS a retrieved by C-MOVE: set listen_port"):
        await retrieve_many([], config=config, output=tmp_path)
