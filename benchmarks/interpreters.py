"""``--python PATH``: every aiodicom client of a case once more under a second interpreter.

The library's speed at Python work depends on how CPython was built: pyenv's default build
(a shared libpython, no profile-guided or link-time optimization) took 15-25 % longer over
our receive path than Debian's own python3.11 on the same machine (benchmarks/RESULTS.md,
run 16). Measured as rows of their own in the same run, beside the same DCMTK and pynetdicom
rounds, the two interpreters meet the same load of the (shared) machine, which two runs at
different times never do.

The interpreter given must have the core dependencies (pydicom, anyio, attrs) installed, as a
virtual environment made from it with ``pip install -e '.[test]'`` has; the library and the
workers are imported from this checkout (``PYTHONPATH``), so both interpreters run the same
code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

from benchmarks import _paths

if TYPE_CHECKING:
    from benchmarks.cases import Case, Client
    from benchmarks.runner import Bench

_DESCRIBE = (
    "import json, sys; from benchmarks.machine import interpreter; "
    "print(json.dumps({'version': sys.version.split()[0], **interpreter()}))"
)


@cache
def describe(python: str) -> dict[str, Any]:
    """What :func:`benchmarks.machine.interpreter` says about ``python``, asked of it."""
    out = subprocess.run(
        [python, "-c", _DESCRIBE], capture_output=True, text=True, cwd=_paths.ROOT,
        timeout=120, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"--python {python}: it could not describe itself: {out.stderr[-800:]}")
    about: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return about


def label(base: str, python: str) -> str:
    """The label of the row of ``base`` measured under ``python``: the one place it is built."""
    about = describe(python)
    build = "static" if about["libpython"] == "in the executable" else "shared libpython"
    return f"{base}, python {about['version']} {build}"


def twins(bench: Bench, case: Case, python: str) -> list[Client]:
    """Each aiodicom worker of ``case`` once more under ``python``, as rows of their own, and
    the twin of each of its comparisons (so the twins get their ratios to DCMTK too)."""
    from benchmarks.cases import worker_twins

    made = worker_twins(bench, case, lambda base: label(base, python), {"python": python})
    add_comparisons(case, python)
    return made


def add_comparisons(case: Case, python: str) -> None:
    from benchmarks.cases import Comparison

    case.comparisons += [
        Comparison(label(c.aio, python), c.pyn, c.dcmtk)
        for c in list(case.comparisons) if not c.aio.endswith(label("", python))
    ]


def worker_interpreter(params: dict[str, Any]) -> str:
    """The interpreter a worker runs under (taken out of its parameters)."""
    python = params.pop("python", None)
    return str(python) if python else sys.executable
