"""Locations used by the benchmarks, and access to the test-suite's peer helpers.

The real peers (dcmqrscp, storescp, Orthanc) are started with the very classes the tests use
(``tests/peers``); that package is imported from the tests directory, not copied.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
WORK = Path(os.environ.get("AIODICOM_BENCH_WORK", ROOT / "benchmarks" / ".work")).resolve()

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
