"""The long fuzzing run: every target under atheris (libFuzzer, coverage guided), seeded from
tests/fuzz_seeds/.

    cd <repo> && PYTHONPATH=$PWD python tests/fuzz/run.py [--runs 100000] [--out DIR] [TARGET...]

TARGETs: pdu, statemachine, events, dimse, dataset, acceptor, requestor (default: all). Each
target runs in a process of its own for ``--runs`` cases (libFuzzer's ``-runs``), with
``-rss_limit_mb`` (memory bounded), ``-timeout`` (no case hangs) and ``-max_len``. A crash input
(an untyped exception, a broken property, the RSS or time limit) is written to
DIR/<target>/crash-*; the summary line per target gives the cases run and the findings. Rerun
one input with ``python tests/fuzz/run.py TARGET --replay FILE``.

The ``acceptor`` target sends each input over a loopback socket to a ``Client(listen_port=0)``
running in a thread of the fuzzing process (tests/fuzz/acceptor.py): about 60 cases a second.
The ``requestor`` target runs our C-ECHO, C-FIND or C-GET (byte 0) against a PACS answering
with the rest of the input (tests/fuzz/requestor.py).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

ALL = ("pdu", "statemachine", "events", "dimse", "dataset", "acceptor", "requestor")
MAX_LEN = {"pdu": 20000, "statemachine": 8192, "events": 2048, "dimse": 4096, "dataset": 8192,
           "acceptor": 20000, "requestor": 20000}
# Byte 0 of a state machine input picks the side and the chunking (see targets.py): the
# stream seeds are given as the requestor would receive them ("down") and as the acceptor
# would ("up").
_SIDE = {"down": (0x01, 0x09, 0x3B), "up": (0x00, 0x08, 0x3A)}


def _seed_corpus(target: str, directory: Path) -> None:
    from fuzz.targets import SEED_KINDS, seed_files

    directory.mkdir(parents=True, exist_ok=True)
    kind = "stream" if target in ("acceptor", "requestor") else SEED_KINDS[target]
    for path in seed_files(kind):
        data = path.read_bytes()
        if target == "statemachine":
            side = "down" if path.stem.endswith("-down") else "up"
            for control in _SIDE[side]:
                (directory / f"{path.stem}-{control:02x}").write_bytes(bytes([control]) + data)
        elif target == "acceptor":
            if path.stem.endswith("-up"):
                (directory / path.stem).write_bytes(data)
        elif target == "requestor":
            match = re.fullmatch(r"aiodicom-\w+-(\d)-down", path.stem)
            if match:
                from fuzz.requestor import OPERATION_OF_CONNECTION

                operation = OPERATION_OF_CONNECTION[int(match.group(1))]
                (directory / path.stem).write_bytes(bytes([operation]) + data)
        else:
            (directory / path.stem).write_bytes(data)


def _child(target: str, args: list[str]) -> None:
    """Runs inside the fuzzing process: instrument aiodicom, then hand over to libFuzzer."""
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["aiodicom"]):
        import aiodicom  # noqa: F401
        from fuzz import targets

    if target == "acceptor":
        from fuzz.acceptor import AcceptorUnderTest

        acceptor = AcceptorUnderTest().__enter__()

        def over_socket(data: bytes) -> None:
            acceptor.send(data)

        one: Callable[[bytes], None] = over_socket
    elif target == "requestor":
        from fuzz.requestor import requestor_target

        one = requestor_target
    else:
        one = targets.TARGETS[target]
    atheris.Setup([sys.argv[0], *args], one)
    atheris.Fuzz()


def _parent(ns: argparse.Namespace) -> int:
    out: Path = ns.out
    failures = 0
    for target in ns.targets or ALL:
        work = out / target
        corpus = work / "corpus"
        if corpus.exists():
            shutil.rmtree(corpus)
        for old in (*work.glob("crash-*"), *work.glob("oom-*"), *work.glob("timeout-*")):
            old.unlink()
        _seed_corpus(target, corpus)
        args = [
            f"-runs={ns.runs}", f"-max_len={MAX_LEN[target]}", f"-rss_limit_mb={ns.rss_mb}",
            f"-timeout={ns.timeout}", f"-artifact_prefix={work}/", "-print_final_stats=1",
            str(corpus),
        ]
        started = time.monotonic()
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        log = work / "log.txt"
        with log.open("w") as stream:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", target, "--", *args],
                stdout=stream, stderr=subprocess.STDOUT, env=env, check=False,
            )
        text = log.read_text(errors="replace")
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
        crashes = sorted(p.name for p in work.glob("crash-*")) + sorted(
            p.name for p in work.glob("oom-*")) + sorted(p.name for p in work.glob("timeout-*"))
        elapsed = time.monotonic() - started
        cases = runs[-1] if runs else "?"
        print(f"{target}: {cases} cases in {elapsed:.0f} s, exit {proc.returncode}, "
              f"findings: {', '.join(crashes) or 'none'} (log {log})", flush=True)
        failures += proc.returncode != 0
    return 1 if failures else 0


def _replay(target: str, path: Path) -> None:
    from fuzz import targets

    data = path.read_bytes()
    if target == "acceptor":
        from fuzz.acceptor import AcceptorUnderTest

        with AcceptorUnderTest() as acceptor:
            acceptor.send(data)
    elif target == "requestor":
        from fuzz.requestor import requestor_target

        requestor_target(data)
    else:
        targets.TARGETS[target](data)
    print(f"{path}: no finding")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[4:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"any of {', '.join(ALL)}")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("fuzz-out"))
    parser.add_argument("--rss-mb", type=int, default=1024)
    parser.add_argument("--timeout", type=int, default=30)
    parser.add_argument("--replay", type=Path)
    ns = parser.parse_args()
    unknown = set(ns.targets) - set(ALL)
    if unknown:
        parser.error(f"unknown target(s) {sorted(unknown)}: choose from {', '.join(ALL)}")
    if ns.replay is not None:
        _replay(ns.targets[0], ns.replay)
        return 0
    return _parent(ns)


if __name__ == "__main__":
    sys.exit(main())
