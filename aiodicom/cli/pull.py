"""``aiodicom pull MANIFEST -o DIR``: a bulk retrieval (:mod:`aiodicom.bulk`) from the command
line, with a progress bar per PACS and the report's summary; run again to resume."""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import anyio
import attrs
import click

from aiodicom.bulk import (
    BulkConfig,
    BulkEvent,
    BulkReport,
    ConfigError,
    ItemRetrying,
    ManifestError,
    ProgressUpdate,
    read_manifest,
    retrieve_many,
)
from aiodicom.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    PEERS_FILE,
    Args,
    CliError,
    human_bytes,
    is_terminal,
)
from aiodicom.cli.params import PORT, argument, command, option, output_options

__all__ = ["COMMANDS", "PULL_HELP", "pull"]

PULL_HELP = """\
Retrieve every study, series or instance listed in MANIFEST (CSV or JSON) from the PACS it
names, several PACS at once, into DIR (study/series/instance.dcm), with per-PACS limits,
retries and a journal in DIR: run the same command again after a failure or a kill and only
what is missing is fetched.

\b
MANIFEST (CSV): a header row, then one item per row:
  pacs,StudyInstanceUID,SeriesInstanceUID
  research_pacs,1.2.840.1.1,
  archive,1.2.840.1.2,1.2.840.1.2.7

Columns: pacs (a name from the config), level, find (yes: the other columns are a C-FIND to
expand), and DICOM keywords. The PACS come from --config (TOML or JSON) or peers.toml, each
with host, port, ae_title, method (get or move), max_associations. See docs/bulk.md.

\b
example:
  aiodicom pull cohort.csv -o out/ --config pacs.toml --report report.json
"""


def _config(args: Args) -> BulkConfig:
    path = Path(args.config) if args.config else Path(
        os.environ.get("AIODICOM_PEERS") or PEERS_FILE).expanduser()
    if not path.exists():
        raise CliError(f"no PACS configuration: {path} does not exist; give --config "
                       "pacs.toml (tables with host, port, ae_title, method)")
    try:
        config = BulkConfig.load(path)
        changes: dict[str, Any] = {}
        if args.aet:
            changes["ae_title"] = args.aet
        if args.listen_port is not None:
            changes["listen_port"] = args.listen_port
        if args.max_operations is not None:
            changes["max_operations"] = args.max_operations
        if args.attempts is not None:
            changes["retry"] = attrs.evolve(config.retry, attempts=args.attempts)
        return attrs.evolve(config, **changes) if changes else config
    except (ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from exc


class _Display:
    """A bar per PACS (items finished of those listed, instances, MB, MB/s, ETA) on a terminal;
    retries as log lines; nothing with -q or when stderr is not a terminal."""

    def __init__(self, args: Args) -> None:
        # rich (the extra 'cli') is imported when the command runs, not when the CLI is built.
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.enabled = is_terminal(args)
        self._tasks: dict[str, Any] = {}
        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"), console=self._console,
        ) if self.enabled else None

    def showing(self) -> AbstractContextManager[object]:
        """The bars drawn for the life of the block (nothing to draw: nothing done)."""
        return self._progress if self._progress is not None else nullcontext()

    def __call__(self, event: BulkEvent) -> None:
        if isinstance(event, ItemRetrying) and self.enabled:
            self._console.print(
                f"[yellow]retry[/] {event.key} (attempt {event.attempt}, in "
                f"{event.delay:.1f} s): {event.reason}", highlight=False)
        if not isinstance(event, ProgressUpdate) or self._progress is None:
            return
        for name, pacs in event.pacs.items():
            task = self._tasks.get(name)
            if task is None:
                task = self._tasks[name] = self._progress.add_task(name, total=None, detail="")
            eta = f", ETA {_duration(pacs.eta)}" if pacs.eta is not None else ""
            failed = f", {pacs.items_failed} failed" if pacs.items_failed else ""
            detail = (f"{pacs.instances} inst, {human_bytes(pacs.bytes)}, "
                      f"{pacs.rate_bytes / 1e6:.1f} MB/s{failed}{eta}")
            self._progress.update(
                task, total=pacs.items_total, completed=pacs.items_done + pacs.items_failed,
                detail=detail,
            )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@command("pull", "retrieve a manifest of studies/series from several PACS, resumable",
         PULL_HELP)
@argument("manifest", metavar="MANIFEST", type=click.Path(path_type=Path),
          help="the items to retrieve: CSV, or JSON (an array or JSON Lines)")
@option("-o", "--output", metavar="DIR", type=click.Path(path_type=Path), required=True,
        section="pull", help="where the files go; the journal (resume) is kept there too")
@option("--config", metavar="FILE", type=click.Path(path_type=Path), section="pull",
        help="the PACS (TOML or JSON; default: peers.toml, $AIODICOM_PEERS)")
@option("--report", metavar="FILE", type=click.Path(path_type=Path), section="pull",
        help="write the report (every item: status, counts, attempts, failures) as JSON")
@option("-aet", "--aetitle", "aet", metavar="AET", section="pull",
        help="our AE title (default: the config's, else AIODICOM)")
@option("--listen-port", type=PORT, metavar="PORT", section="pull",
        help="our acceptor's port, for PACS retrieved by C-MOVE (default: the config's)")
@option("--max-operations", type=click.IntRange(min=1), metavar="N", section="pull",
        help="operations at once over every PACS (default: the config's)")
@option("--attempts", type=click.IntRange(min=1), metavar="N", section="pull",
        help="tries per item (default: the config's, else 5); transient failures wait with "
             "exponential backoff and jitter between tries")
@output_options()
async def pull(args: Args) -> int:
    """Exit 0 when every item is there (now or from an earlier run), 3 when some failed."""
    config = _config(args)
    manifest_path = Path(args.manifest)
    if not manifest_path.is_file():
        raise CliError(f"manifest {manifest_path} is not a file")
    manifest = read_manifest(manifest_path)
    report = BulkReport()
    try:
        display = _Display(args)
        with display.showing():
            await retrieve_many(manifest, config=config, output=args.output, report=report,
                                on_event=display)
    except ManifestError as exc:
        raise CliError(f"manifest {manifest_path}: {exc}") from exc
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    finally:
        with anyio.CancelScope(shield=True):
            if args.report:
                Path(args.report).write_text(report.to_json(), encoding="utf-8")
            if report.items and not args.quiet:
                print(report.summary(), file=sys.stderr)
    return EXIT_OK if report.complete else EXIT_FAILURE


COMMANDS = (pull,)
