"""Benchmarks of aiodicom against pynetdicom and DCMTK: ``python -m benchmarks [--quick]``.

Importing the package puts ``tests/`` on ``sys.path`` so that the test-suite's peer helpers
(``peers``) can be reused.
"""

from benchmarks import _paths as _paths
