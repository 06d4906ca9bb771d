"""What a query or retrieval costs before its first byte: the ``retrieve-fixed-dcmqrscp`` case.

The C-FIND and retrieval cases time DCMTK's tools from outside, as a process (``findscu``,
``getscu`` or ``movescu`` started, run and exited), and our workers from inside, around the
call alone (the interpreter and the imports left out, benchmarks/README.md). So a DCMTK row
carries the start and exit of a process that ours does not: about 15 ms on the VM of
RESULTS.md, 5 % of a 263 MB retrieval and a third of findscu's 500-match C-FIND.

This case measures that part: each client asks for a series that does not exist (no match, no
sub-operation), from the same peer and with the same options as the C-FIND and retrieval
cases. What is left is the association, the empty C-FIND, C-GET or C-MOVE and the release for
both, plus the process for DCMTK. The targets table then gives the C-FIND ratio and each
retrieval-to-a-directory ratio a second time, with the difference (DCMTK's no-match time less
ours) taken off DCMTK's wall: the two engines compared, where the first ratio compares running
the tool with calling the library.

Against dcmqrscp only: Orthanc answers a retrieval that matches nothing with a failure
(0xC000, "unable to process"), so there the no-match run is not the same path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks.measure import Sample, failed, run_tool
from benchmarks.peers import AIO_AE, dcmtk_args

if TYPE_CHECKING:
    from benchmarks.cases import Row
    from benchmarks.runner import Bench

NO_SUCH_SERIES = "1.2.826.0.1.3680043.10.999.1"  # a UID in no corpus: the query matches nothing


def client_label(kind: str, family: str) -> str:
    tool = {"find": "findscu", "get": "getscu", "move": "movescu"}[kind] if family == "dcmtk" \
        else "aiodicom"
    return f"{tool} {kind}, no match"


def case_fixed_cost(bench: Bench, peer_name: str, port: int, called: str) -> None:
    """Run the ``retrieve-fixed-<peer>`` case against the peer of the C-FIND and retrieval
    cases, with their DCMTK options (:func:`~benchmarks.peers.dcmtk_args`)."""
    from benchmarks.cases import Case, Client
    from benchmarks.runner import HOST

    key = f"retrieve-fixed-{peer_name.lower()}"
    if not bench.wanted(key):
        return
    assert bench.corpus is not None
    study = bench.corpus.big.study_uid
    out = bench._out_dir(f"{key}-dcmtk")
    out.mkdir(parents=True, exist_ok=True)  # stays empty: nothing is retrieved

    def tool(kind: str) -> Any:
        def run() -> Sample:
            args = dcmtk_args(kind, called, study, NO_SUCH_SERIES, out)
            r = run_tool([*args, HOST, str(port)], log=bench.logs / f"{key}-{kind}.log")
            if r.returncode != 0:
                return failed(f"{args[0]} exited {r.returncode}: {r.output}")
            return Sample(r.wall, r.cpu, r.peak_rss_kb, True, count=0)
        return run

    def ours(kind: str) -> Any:
        params = {"host": HOST, "port": port, "called": called, "study_uid": study,
                  "series_uid": NO_SUCH_SERIES, "expect": 0}
        if kind == "find":
            return bench._worker("aiodicom", "find", params)
        return bench._worker("aiodicom", "retrieve", {
            **params, "kind": kind, "ae_title": AIO_AE, "listen_port": bench.dest.aiodicom,
        })

    bench.run_case(Case(
        key, f"one query's or retrieval's fixed cost: association, a C-FIND, C-GET or C-MOVE "
        f"matching nothing, release ({peer_name}); DCMTK's tools also start and exit a "
        "process", "ms/assoc",
        None, 1,
        [Client(client_label(kind, family), family, ours(kind) if family == "aiodicom"
                else tool(kind))
         for kind in ("find", "get", "move") for family in ("aiodicom", "dcmtk")],
    ))


def without_start(rows: list[Row], case: str, aio: Row, dcmtk: Row) -> float | None:
    """``aio``'s speed over ``dcmtk``'s in ``case`` (``find-``, ``get-`` or ``move-<peer>``) with
    DCMTK's extra fixed cost (its no-match time less ours) taken off its wall; ``None``
    without the retrieve-fixed case of that peer."""
    kind, peer = case.split("-", 1)
    fixed = {row.client: row.wall for row in rows if row.case == f"retrieve-fixed-{peer}"}
    theirs, mine = fixed.get(client_label(kind, "dcmtk")), fixed.get(client_label(kind, "aiodicom"))
    if theirs is None or mine is None or not aio.wall or dcmtk.wall is None:
        return None
    return (dcmtk.wall - (theirs - mine)) / aio.wall
