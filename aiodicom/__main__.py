"""``aiodicom`` / ``python -m aiodicom``: DICOM networking from the command line, DCMTK-style
(echo, find, move, get, retrieve, store, storescp, qrscp, demo). The command line is the extra
``cli`` (click and rich): ``pip install 'aiodicom[cli]'``; the library itself needs neither."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        importlib.import_module("click")
    except ImportError:
        print("the aiodicom command line needs the extra 'cli' (click, rich): "
              "pip install 'aiodicom[cli]'", file=sys.stderr)
        return 2
    from aiodicom.cli.app import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
