"""Reading TOML on every supported Python: ``tomllib`` from 3.11 on, its backport ``tomli``
on 3.10 (which the ``cli`` extra installs there). Imported only when a TOML file is read:
JSON configurations need neither."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

#: The module that reads TOML here.
TOML_MODULE = "tomllib" if sys.version_info >= (3, 11) else "tomli"


def toml_module() -> ModuleType | None:
    """:data:`TOML_MODULE`, or ``None`` where it is not installed (the caller says how to
    get it, in its own words)."""
    try:
        return importlib.import_module(TOML_MODULE)
    except ImportError:
        return None


__all__ = ["TOML_MODULE", "toml_module"]
