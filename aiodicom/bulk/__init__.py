"""Bulk retrieval: a manifest of studies, series or instances from several PACS, retrieved on
one event loop with per-PACS limits, retries, resume after a kill, progress and a report.

::

    from aiodicom.bulk import BulkConfig, read_manifest, retrieve_many

    config = BulkConfig.load("pacs.toml")
    report = await retrieve_many(read_manifest("cohort.csv"), config=config, output="out/")
    print(report.summary())

Interfaces (stable; the Dask scale-out builds on them):

* :mod:`~aiodicom.bulk.config`: :class:`PacsConfig` (``name, host, port, ae_title, method
  ("get"|"move"), max_associations, max_operations, timeouts``), :class:`RetryPolicy`
  (exponential backoff with jitter), :class:`BulkConfig` (``pacs`` by name, global
  ``max_operations``, our ``ae_title``/``listen_port``, ``retry``, ``idle_timeout``;
  :meth:`BulkConfig.load` reads TOML (the CLI's peers.toml shape) or JSON).
* :mod:`~aiodicom.bulk.manifest`: :class:`ManifestItem` (``pacs, level, keys, find, model``;
  ``.key`` is its stable identity), readers :func:`read_csv`, :func:`read_json`,
  :func:`read_manifest` (streamed; re-iterable :class:`ManifestFile`), any iterable or async
  iterable of items; partitions: :func:`select` (by predicate), :func:`shard` (``count``,
  ``index``: a stable hash of the item key).
* :mod:`~aiodicom.bulk.journal`: :class:`Journal` (SQLite, WAL, beside the output; several
  processes may share it): items done/failed/expanded, instances of unfinished items, the
  children of expanded queries.
* :mod:`~aiodicom.bulk.events`: :class:`ItemStarted`, :class:`ItemRetrying`,
  :class:`ItemFinished`, :class:`ProgressUpdate` (per PACS :class:`PacsProgress`: items done,
  instances, bytes, rates, ETA); ``on_event=`` callback or :class:`EventStream` (``events=``,
  ``async for``).
* :mod:`~aiodicom.bulk.report`: :class:`BulkReport` (per :class:`ItemReport`: status,
  instances, bytes, duration, attempts, :class:`Failure` list), ``to_json()``/``from_json()``,
  ``summary()``, ``BulkReport.merge(reports)``.
* :mod:`~aiodicom.bulk.limiter`: :class:`PacsLimiter` protocol (``slot(pacs) ->
  AsyncContextManager[None]``, entered around each operation on a PACS) and the in-process
  :class:`LocalLimiter` (per-PACS and global limits, round robin between PACS).
* :func:`retrieve_many` ``(manifest, *, config, output=None, sink=None, journal=None,
  limiter=None, on_event=None, events=None, report=None, ...) -> BulkReport``.

A worker of a cluster runs its share as ``retrieve_many(shard(manifest, n, i), config=...,
output=shared_dir, limiter=cluster_limiter)``: the same journal (in ``shared_dir``), its own
report, merged by the caller with :meth:`BulkReport.merge`.
"""

from aiodicom.bulk.config import BulkConfig, ConfigError, PacsConfig, RetryPolicy
from aiodicom.bulk.events import (
    BulkEvent,
    EventStream,
    ItemFinished,
    ItemRetrying,
    ItemStarted,
    PacsProgress,
    ProgressUpdate,
)
from aiodicom.bulk.journal import JOURNAL_NAME, Journal
from aiodicom.bulk.limiter import LocalLimiter, PacsLimiter
from aiodicom.bulk.manifest import (
    Manifest,
    ManifestError,
    ManifestFile,
    ManifestItem,
    read_csv,
    read_json,
    read_manifest,
    select,
    shard,
)
from aiodicom.bulk.report import BulkReport, Failure, ItemReport
from aiodicom.bulk.runner import retrieve_many

__all__ = [
    "JOURNAL_NAME",
    "BulkConfig",
    "BulkEvent",
    "BulkReport",
    "ConfigError",
    "EventStream",
    "Failure",
    "ItemFinished",
    "ItemReport",
    "ItemRetrying",
    "ItemStarted",
    "Journal",
    "LocalLimiter",
    "Manifest",
    "ManifestError",
    "ManifestFile",
    "ManifestItem",
    "PacsConfig",
    "PacsLimiter",
    "PacsProgress",
    "ProgressUpdate",
    "RetryPolicy",
    "read_csv",
    "read_json",
    "read_manifest",
    "retrieve_many",
    "select",
    "shard",
]
