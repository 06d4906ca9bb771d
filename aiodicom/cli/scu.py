"""``aiodicom echo``, ``find``, ``move``, ``get`` and ``store``: the service user commands, each
a few calls of the public :class:`~aiodicom.Client` API."""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from aiodicom.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_WARNING,
    Args,
    CliError,
    client_for,
    resolve_peer,
)
from aiodicom.cli.keys import build_query, query_options
from aiodicom.cli.params import (
    PORT,
    Command,
    argument,
    command,
    network_options,
    option,
    peer_arguments,
    preformatted,
    stack,
)
from aiodicom.client import Client
from aiodicom.errors import QueryError
from aiodicom.model import Level, QueryModel
from aiodicom.query import Query
from aiodicom.services.commitment_registry import CommitmentTimeout
from aiodicom.services.find import (
    Find,
    FindOptions,
    FindResult,
    HierarchicalFind,
    HierarchyResult,
)
from aiodicom.services.retrieve import (
    InstanceArrived,
    Progress,
    RetrieveError,
    RetrieveResult,
)
from aiodicom.services.store import StoreOutcome
from aiodicom.sinks import DirectorySink, MemorySink
from aiodicom.status import StatusCategory, status_category

__all__ = ["COMMANDS", "echo", "find", "get", "move", "retrieve", "store"]

_UNIQUE = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
           Level.SERIES: "SeriesInstanceUID", Level.IMAGE: "SOPInstanceUID"}


# -- echo ------------------------------------------------------------------------------------


@command("echo", "C-ECHO a peer (echoscu)",
         "Open an association, send a C-ECHO, release; prints the round trip.")
@peer_arguments()
@network_options()
async def echo(args: Args) -> int:
    peer = resolve_peer(args)
    started = time.perf_counter()
    async with client_for(args, peer) as client:
        await client.echo()
    if not args.quiet:
        print(f"C-ECHO {peer.ae_title} at {peer.host}:{peer.port}: success "
              f"({(time.perf_counter() - started) * 1000:.1f} ms)")
    return EXIT_OK


# -- find ------------------------------------------------------------------------------------


def _columns(query_keys: list[str]) -> list[str]:
    return [k for k in query_keys if k not in ("QueryRetrieveLevel", "SpecificCharacterSet")]


@command(
    "find", "C-FIND: matches as a table, DICOM JSON or files (findscu)",
    "Ask a peer what it holds. Keys as DCMTK's findscu: -k PatientID=123 matches, "
    "-k StudyDescription asks for a key.\n\n" + preformatted(
        "examples:\n"
        "  aiodicom find 127.0.0.1 11112 -aec PACS -k PatientID=123 -k StudyDate\n"
        "  aiodicom find mypacs -L SERIES -k StudyInstanceUID=1.2.3 --json"),
)
@peer_arguments()
@query_options()
@option("--json", "json_output", is_flag=True, section="find output (default: a table)",
        help="print the matches as a DICOM JSON array (PS3.18 F.2)")
@option("-o", "--output", type=click.Path(path_type=Path), metavar="DIR",
        section="find output (default: a table)",
        help="write each match as a DICOM file DIR/rsp0001.dcm, ... (not with --json)")
@option("--cancel-after", type=click.IntRange(min=1), metavar="N",
        section="find output (default: a table)", help="send C-CANCEL after N matches")
@option("--relational", is_flag=True, section="extended negotiation",
        help="propose relational queries")
@option("--fuzzy", is_flag=True, section="extended negotiation",
        help="propose fuzzy semantic matching of person names")
@option("--datetime", is_flag=True, section="extended negotiation",
        help="propose combined date and time range matching")
@option("--timezone", is_flag=True, section="extended negotiation",
        help="propose timezone adjustment")
@network_options()
async def find(args: Args) -> int:
    peer = resolve_peer(args)
    query = build_query(args)
    options = FindOptions(relational=args.relational, datetime_matching=args.datetime,
                          fuzzy_names=args.fuzzy, timezone_adjustment=args.timezone)
    if args.json_output and args.output is not None:
        raise CliError("give --json or -o/--output, not both")
    matches: list[Dataset] = []
    async with client_for(args, peer) as client:
        find = _match_stream(client, query, options)
        async with find:
            async for match in find:
                matches.append(match)
                if args.output is not None:
                    _write_response(args.output, len(matches), match, query)
                if args.cancel_after is not None and len(matches) >= args.cancel_after:
                    break  # leaving 'async with' sends C-CANCEL
        result = find.result
    assert result is not None
    category, status_text = _outcome(result)
    if args.json_output:
        json.dump([m.to_json_dict() for m in matches], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    elif args.output is None:  # the table is the data: printed with -q too
        from aiodicom.cli.output import print_table

        print_table(matches, _columns(list(query.keys)),
                    title=f"{query.level.value if query.level else 'WORKLIST'} "
                          f"({len(matches)} matches)")
    for warning in result.warnings if not args.quiet else ():
        print(f"warning: {warning}", file=sys.stderr)
    if not args.quiet and not args.json_output:
        print(f"{len(matches)} matches; {status_text}"
              + (" (cancelled)" if result.cancelled else ""), file=sys.stderr)
    if category is StatusCategory.FAILURE:
        return EXIT_FAILURE
    return EXIT_WARNING if result.warnings or category is StatusCategory.WARNING else EXIT_OK


def _write_response(directory: Path, number: int, match: Dataset, query: Query) -> None:
    """``DIR/rsp0001.dcm``: the match as a Part 10 file, as findscu -X writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    out = copy.copy(match)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(query.sop_class_uid("find"))
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.file_meta = meta
    out.save_as(directory / f"rsp{number:04d}.dcm", enforce_file_format=True)


def _match_stream(
    client: Client, query: Query, options: FindOptions | None = None
) -> Find | HierarchicalFind:
    """The C-FIND of ``query``; a SERIES or IMAGE query with keys of the levels above, which a
    hierarchical C-FIND cannot carry, walks the levels instead (``client.find_series`` /
    ``find_images``: a query per level on one association), unless relational queries were
    asked for."""
    options = options or FindOptions()
    if query.level in (Level.SERIES, Level.IMAGE) and not options.relational \
            and query.model is not QueryModel.PATIENT_STUDY_ONLY:
        try:
            query.validate()
        except QueryError:
            walk = client.find_series if query.level is Level.SERIES else client.find_images
            keys: dict[str, Any] = dict(query.keys)
            return walk(model=query.model, character_set=query.character_set, **keys)
    return client.find(query, options=options)


def _outcome(result: FindResult | HierarchyResult) -> tuple[StatusCategory, str]:
    """The worst status category of a find (of each of a walk's C-FINDs) and its text."""
    results = result.results if isinstance(result, HierarchyResult) else [result]
    worst = max(results, key=lambda r: _SEVERITY[status_category(r.status)])
    return status_category(worst.status), worst.status_text


_SEVERITY = {StatusCategory.SUCCESS: 0, StatusCategory.PENDING: 0, StatusCategory.CANCEL: 1,
             StatusCategory.WARNING: 2, StatusCategory.FAILURE: 3}


# -- move and get ----------------------------------------------------------------------------


def _retrieve_direct(query_keys: dict[str, object], level: Level | None) -> bool:
    """Whether the keys say exactly what to retrieve (the unique keys down to the level, no
    other matching key), so that no C-FIND is needed first."""
    if level is None:
        return False
    unique = set(_UNIQUE.values())
    matching = {k for k, v in query_keys.items() if v not in (None, "")}
    return _UNIQUE[level] in matching and matching <= unique


_HOW = {
    "move": "by C-MOVE to our own storage SCP (or to --dest)",
    "get": "by C-GET on the same association",
    "retrieve": 'by the method peers.toml names for the peer (method = "move" or "get"; C-GET '
                "when it names none), or --method",
}


def _listener_options(section: str, what: str, default: str) -> list[Any]:
    """``--our-port`` and ``--listen-host``: where our acceptor listens for the peer."""
    return [
        option("--our-port", "listen_port", type=PORT, metavar="PORT", section=section,
               help=f"the port of our {what} (the peer must know our AE title at this port; "
                    f"default: peers.toml's our_port, {default})"),
        option("--listen-host", default="127.0.0.1", metavar="ADDRESS", section=section,
               help=f"the address of our {what} (default 127.0.0.1, as the library's; "
                    "0.0.0.0 for a PACS on another machine)"),
    ]


def _retrieve_command(method: str) -> Command:
    """``move``, ``get`` or ``retrieve`` (either, as peers.toml or --method says)."""
    tool = {"move": "movescu", "get": "getscu"}.get(method)

    async def run(args: Args) -> int:
        if method != "retrieve":
            return await _retrieve(args, method)
        return await _retrieve(args, args.method or resolve_peer(args).method or "get")

    section = f"C-{method.upper()}"
    options = [
        peer_arguments(), query_options(worklist=False),
        option("-o", "--output", type=click.Path(path_type=Path), default=Path("."),
               metavar="DIR", section=section,
               help="where the instances are written (default: here)"),
    ]
    if method == "retrieve":
        options.append(option("--method", type=click.Choice(["move", "get"]), section=section,
                              help="override the peer's method from peers.toml"))
    if method in ("move", "retrieve"):
        options += [
            option("--dest", metavar="AET", section=section,
                   help="move to this AE instead of to us (nothing is written here)"),
            *_listener_options(section, "storage SCP", "else 11113"),
        ]
    stack([*options, network_options()])(run)
    return command(
        method,
        f"C-{method.upper()} with progress ({tool})" if tool else
        "C-MOVE or C-GET, as peers.toml says for the peer",
        f"Retrieve what the keys select {_HOW[method]}. When the keys are not just the unique "
        "key of the level, a C-FIND at that level comes first and each match is retrieved."
        "\n\n" + preformatted(
            "example:\n"
            f"  aiodicom {method} mypacs -k PatientID=123 -k StudyDate=20240101- -o received/"),
    )(run)


async def _retrieve(args: Args, method: str) -> int:
    from aiodicom.cli.output import Bar

    peer = resolve_peer(args)
    query = build_query(args)
    destination = getattr(args, "dest", None)
    kwargs: dict[str, Any] = {}
    if method == "move" and destination is None:
        kwargs["listen_port"] = args.listen_port or peer.our_port or 11113
        kwargs["listen_host"] = args.listen_host
    results: list[RetrieveResult] = []
    failures: list[str] = []
    async with client_for(args, peer, **kwargs) as client:
        if _retrieve_direct(dict(query.keys), query.level):
            targets: list[Any] = [query]
        else:
            targets = await _match_stream(client, query).all()
            if not targets:
                if not args.quiet:
                    print("nothing matched the keys: nothing to retrieve", file=sys.stderr)
                return EXIT_OK
        sink = None if destination else DirectorySink(args.output)  # C-MOVE elsewhere: none
        with Bar(args, f"C-{method.upper()}", None) as bar:
            done = 0
            for target in targets:
                retrieval = (
                    client.move(target, destination, sink=sink) if method == "move"
                    # (an empty DirectorySink is falsy: it has a length)
                    else client.get(target, sink=sink if sink is not None else MemorySink())
                )
                base = done
                try:
                    async with retrieval:
                        async for event in retrieval:
                            if isinstance(event, InstanceArrived):
                                bar.update(add_bytes=event.instance.size)
                            elif isinstance(event, Progress):
                                _progress(bar, event, base)
                    result = retrieval.result
                except RetrieveError as exc:
                    result = exc.result
                    failures.append(str(exc))
                assert result is not None
                counts = result.sub_operations
                done = base + (counts.completed or len(result.completed))
                bar.update(completed=done)
                results.append(result)
    return _retrieve_summary(args, method, results, failures, bar, destination)


def _progress(bar: Any, event: Progress, base: int) -> None:
    known = [n for n in (event.remaining, event.completed, event.failed, event.warning)
             if n is not None]
    total = base + sum(known) if event.remaining is not None else None
    bar.update(completed=base + (event.completed or 0) + (event.warning or 0), total=total,
               failed=event.failed or 0, warning=event.warning or 0)


def _retrieve_summary(
    args: Args, method: str, results: list[RetrieveResult], failures: list[str],
    bar: Any, destination: str | None,
) -> int:
    completed = sum(r.sub_operations.completed or len(r.completed) for r in results)
    failed_uids = [uid for r in results for uid in r.failed]
    warning_uids = [uid for r in results for uid in r.warning]
    failed = max(len(failed_uids), sum(r.sub_operations.failed or 0 for r in results))
    warning = max(len(warning_uids), sum(r.sub_operations.warning or 0 for r in results))
    if not args.quiet:
        where = f"to {destination}" if destination else f"into {args.output}"
        print(f"C-{method.upper()} {where}: {completed} completed, {failed} failed, "
              f"{warning} warning; {bar.summary_bytes()}", file=sys.stderr)
        for uid in failed_uids:
            print(f"failed: {uid}", file=sys.stderr)
    for text in failures:
        print(f"aiodicom {method}: {text}", file=sys.stderr)
    if failures or failed or any(not r.ok for r in results):
        return EXIT_FAILURE
    return EXIT_WARNING if warning else EXIT_OK


# -- store -----------------------------------------------------------------------------------


def _files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file()
                            and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise CliError(f"{path}: no such file or directory")
    return files


@command("store", "C-STORE files and directories (storescu)",
         "Send DICOM files (directories are walked) with a progress bar; files that are not "
         "DICOM are reported and skipped. With --commit, the peer is then asked for storage "
         "commitment of the files it stored, and its answer is shown: which it keeps safe, "
         "which not and why.")
# One argument list: an optional PORT cannot be told from the first file by position alone.
@argument("targets", metavar="HOST|NAME [PORT] FILE_OR_DIR...", nargs=-1, required=True,
          help="the peer (host and port, or a name from peers.toml), then the files and "
               "directories to send")
@option("--commit", is_flag=True, section="storage commitment",
        help="ask the peer to commit what it stored (N-ACTION) and wait for its answer; exit "
             "code 3 unless every file was committed")
@option("--commit-timeout", type=click.FloatRange(min=0), default=60.0, metavar="SECONDS",
        section="storage commitment",
        help="how long to wait for the answer (default 60)")
@stack(_listener_options(
    "storage commitment", "acceptor, for the answer",
    "else none: then the answer must come on the request's association"))
@network_options()
async def store(args: Args) -> int:
    from aiodicom.cli.output import Bar

    targets = list(args.targets)
    args.peer = targets.pop(0)
    args.port = targets.pop(0) if targets and targets[0].isdigit() else None
    peer = resolve_peer(args)
    if not targets:
        raise CliError("name the files or directories to send after the peer")
    files = _files([Path(t) for t in targets])
    if not files:
        raise CliError("no files to send in " + ", ".join(targets))
    kwargs: dict[str, Any] = {}
    listen_port = args.listen_port if args.listen_port is not None else peer.our_port
    if args.commit and listen_port is not None:
        kwargs = {"listen_port": listen_port, "listen_host": args.listen_host}
    stored: list[StoreOutcome] = []
    warned = 0
    failed: list[str] = []
    async with client_for(args, peer, **kwargs) as client:
        with Bar(args, "C-STORE", len(files)) as bar:
            for file in files:
                # One file per call so that the bar moves; the pool keeps the association for
                # the next file when it needs the same presentation contexts.
                result = await client.store([file])
                for outcome in result.outcomes:
                    category = status_category(outcome.status)
                    if category is StatusCategory.SUCCESS:
                        stored.append(outcome)
                    elif category is StatusCategory.WARNING:
                        stored.append(outcome)
                        warned += 1
                    else:
                        comment = f" ({outcome.error_comment})" if outcome.error_comment else ""
                        failed.append(f"{outcome.source}: {outcome.status_text}{comment}")
                    bar.update(advance=1, add_bytes=outcome.bytes_sent, failed=len(failed),
                               warning=warned)
        if not args.quiet:
            print(f"C-STORE to {peer.ae_title}: {len(stored) - warned} stored, {len(failed)} "
                  f"failed, {warned} warning; {bar.summary_bytes()}", file=sys.stderr)
            for text in failed:
                print(f"failed: {text}", file=sys.stderr)
        committed = await _commit(args, client, peer.ae_title, stored) if args.commit \
            else True
    if failed or not committed:
        return EXIT_FAILURE
    return EXIT_WARNING if warned else EXIT_OK


async def _commit(args: Args, client: Client, peer_ae_title: str,
                  stored: list[StoreOutcome]) -> bool:
    """Storage commitment of what was stored; whether every file was committed."""
    if not stored:
        if not args.quiet:
            print("storage commitment: nothing was stored, nothing to commit", file=sys.stderr)
        return True
    try:
        result = await client.commit(stored, timeout=args.commit_timeout)
    except CommitmentTimeout as exc:
        print(f"aiodicom store: no storage commitment answer from {peer_ae_title} within "
              f"{args.commit_timeout} s (transaction {exc.transaction_uid}); raise "
              "--commit-timeout, or give --our-port and check that the peer knows our AE title"
              " at that port (it may answer on an association of its own)", file=sys.stderr)
        return False
    sources = {outcome.sop_instance_uid: outcome.source for outcome in stored}
    if not args.quiet:
        how = "on the request's association" if result.same_association \
            else "on an association of its own"
        print(f"storage commitment by {result.reporter_ae_title}: {len(result.committed)} "
              f"committed, {len(result.failed)} not committed (transaction "
              f"{result.transaction_uid}, answered {how})", file=sys.stderr)
        for failure in result.failed:
            code = f" (0x{failure.failure_reason:04X})" if failure.failure_reason is not None \
                else ""
            name = sources.get(failure.sop_instance_uid, failure.sop_instance_uid)
            print(f"not committed: {name}: {failure.reason}{code}", file=sys.stderr)
        for missing in result.unreported:
            name = sources.get(missing.sop_instance_uid, missing.sop_instance_uid)
            print(f"not committed: {name}: the answer does not mention it", file=sys.stderr)
    return result.ok


move = _retrieve_command("move")
get = _retrieve_command("get")
retrieve = _retrieve_command("retrieve")

COMMANDS = (echo, find, move, get, retrieve, store)
