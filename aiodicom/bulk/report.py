"""What a bulk run did, item by item: :class:`BulkReport`.

Per item: its status, instances and bytes received, duration, attempts, and every failure with
its reason and whether it was retried. :meth:`BulkReport.to_json` / :meth:`BulkReport.from_json`
round-trip it; :meth:`BulkReport.summary` is the readable form; :meth:`BulkReport.merge` joins
the reports of runs over parts of one manifest (the workers of a cluster, or a run and its
resumption) into one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

__all__ = ["BulkReport", "Failure", "ItemReport", "ItemStatus", "PacsTotals"]

ItemStatus = Literal["done", "skipped", "expanded", "failed", "cancelled"]
"""``done``: retrieved (wholly) in this run; ``skipped``: the journal says an earlier run
retrieved it; ``expanded``: a query whose matches became items of their own; ``failed``:
given up (a permanent failure, or the attempts ran out); ``cancelled``: the run stopped first."""

_FINISHED_OK = ("done", "skipped", "expanded")


@attrs.frozen
class Failure:
    """One failed attempt: ``retried`` unless it was permanent or the last one."""

    attempt: int
    reason: str
    permanent: bool
    status: int | None = None
    retried: bool = False
    instances_failed: int = 0
    """Sub-operations the PACS reported failed (a B000 warning), retried alone."""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class ItemReport:
    key: str
    pacs: str
    level: str
    status: ItemStatus = "cancelled"
    instances: int = 0
    """Instances received for this item in this run (the journal knows earlier runs')."""
    bytes: int = 0
    duration: float = 0.0
    attempts: int = 0
    failures: list[Failure] = attrs.Factory(list)
    resumed: int = 0
    """Instances an earlier run had already retrieved (not fetched again)."""
    parent: str | None = None
    children: int = 0
    """For an expanded query: the items it became."""

    @property
    def ok(self) -> bool:
        return self.status in _FINISHED_OK

    @property
    def retries(self) -> int:
        return sum(1 for f in self.failures if f.retried)

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["failures"] = [f.to_json() for f in self.failures]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemReport:
        values = dict(data)
        values["failures"] = [Failure(**f) for f in values.get("failures", [])]
        return cls(**values)


@attrs.define
class PacsTotals:
    items: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    instances: int = 0
    bytes: int = 0
    retries: int = 0


@attrs.define
class BulkReport:
    """Every item of a run, in the order they finished, keyed by :attr:`ItemReport.key`."""

    items: dict[str, ItemReport] = attrs.Factory(dict)
    started: float = 0.0
    """Wall-clock time (``time.time()``) the run started, and ended."""
    finished: float = 0.0

    # --- views ------------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every item was retrieved, now or by an earlier run."""
        return all(item.ok for item in self.items.values())

    @property
    def failed(self) -> list[ItemReport]:
        return [item for item in self.items.values() if item.status == "failed"]

    @property
    def instances(self) -> int:
        return sum(item.instances for item in self.items.values())

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.items.values())

    @property
    def retries(self) -> int:
        return sum(item.retries for item in self.items.values())

    @property
    def duration(self) -> float:
        return max(0.0, self.finished - self.started)

    def counts(self) -> dict[str, int]:
        """Items per status."""
        counts: dict[str, int] = {}
        for item in self.items.values():
            counts[item.status] = counts.get(item.status, 0) + 1
        return counts

    def per_pacs(self) -> dict[str, PacsTotals]:
        totals: dict[str, PacsTotals] = {}
        for item in self.items.values():
            total = totals.setdefault(item.pacs, PacsTotals())
            if item.status != "expanded":
                total.items += 1
            total.done += item.status == "done"
            total.skipped += item.status == "skipped"
            total.failed += item.status == "failed"
            total.instances += item.instances
            total.bytes += item.bytes
            total.retries += item.retries
        return totals

    # --- combining --------------------------------------------------------------------------

    def add(self, item: ItemReport) -> None:
        self.items[item.key] = item

    @classmethod
    def merge(cls, reports: Iterable[BulkReport]) -> BulkReport:
        """One report of several runs over parts of a manifest (a cluster's workers, or a
        run and its resumption). An item reported by several: the better outcome wins (done
        over skipped over failed over cancelled), counts and failures of all are kept."""
        merged = cls()
        starts: list[float] = []
        ends: list[float] = []
        for report in reports:
            if report.started:
                starts.append(report.started)
            if report.finished:
                ends.append(report.finished)
            for key, item in report.items.items():
                have = merged.items.get(key)
                if have is None:
                    merged.items[key] = attrs.evolve(item, failures=list(item.failures))
                    continue
                best = item if _rank(item.status) < _rank(have.status) else have
                merged.items[key] = attrs.evolve(
                    best,
                    instances=have.instances + item.instances,
                    bytes=have.bytes + item.bytes,
                    duration=have.duration + item.duration,
                    attempts=have.attempts + item.attempts,
                    failures=have.failures + item.failures,
                    resumed=max(have.resumed, item.resumed),
                    children=max(have.children, item.children),
                )
        merged.started = min(starts) if starts else 0.0
        merged.finished = max(ends) if ends else 0.0
        return merged

    # --- output -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "finished": self.finished,
            "complete": self.complete,
            "counts": self.counts(),
            "instances": self.instances,
            "bytes": self.bytes,
            "retries": self.retries,
            "per_pacs": {name: attrs.asdict(t) for name, t in self.per_pacs().items()},
            "items": [item.to_json() for item in self.items.values()],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> BulkReport:
        parsed: Mapping[str, Any] = json.loads(data) if isinstance(data, str) else data
        report = cls(started=parsed.get("started", 0.0), finished=parsed.get("finished", 0.0))
        for item in parsed.get("items", []):
            report.add(ItemReport.from_json(item))
        return report

    def summary(self, *, failures: int = 20) -> str:
        """A few lines for people: totals, per PACS, and the first ``failures`` failed items
        with their last reason."""
        counts = self.counts()
        state = "complete" if self.complete else "INCOMPLETE"
        seconds = self.duration
        rate = f", {self.bytes / seconds / 1e6:.1f} MB/s" if seconds > 0 else ""
        lines = [
            f"bulk retrieval {state}: {len(self.items)} item(s) "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + f"; {self.instances} instance(s), {_megabytes(self.bytes)} in {seconds:.1f} s"
            + rate + f"; {self.retries} retr{'y' if self.retries == 1 else 'ies'}",
        ]
        for name, total in sorted(self.per_pacs().items()):
            lines.append(
                f"  {name}: {total.done} done, {total.skipped} already there, "
                f"{total.failed} failed; {total.instances} instance(s), "
                f"{_megabytes(total.bytes)}, {total.retries} retr"
                f"{'y' if total.retries == 1 else 'ies'}"
            )
        failed = self.failed
        for item in failed[:failures]:
            reason = item.failures[-1].reason if item.failures else "no reason recorded"
            lines.append(f"  FAILED {item.key} after {item.attempts} attempt(s): {reason}")
        if len(failed) > failures:
            lines.append(f"  ... and {len(failed) - failures} more failed item(s) (see the "
                         "JSON report)")
        return "\n".join(lines)


def _rank(status: str) -> int:
    return {"done": 0, "expanded": 1, "skipped": 2, "failed": 3}.get(status, 4)


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"
