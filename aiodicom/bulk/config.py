"""The PACS a bulk retrieval talks to, and how hard it may push each one.

A :class:`BulkConfig` names every PACS (:class:`PacsConfig`: address, AE title, C-GET or C-MOVE,
per-PACS limits, timeouts), the global limit on operations at once, our AE title (and the port
our acceptor listens on when some PACS is retrieved by C-MOVE), and the :class:`RetryPolicy`.

It loads from TOML or JSON (:meth:`BulkConfig.load`). The CLI's ``peers.toml`` is such a file:
every table names a PACS (``host``, ``port``, ``ae_title``, ``method``, and here also
``max_associations``, ``max_operations`` and timeouts); top-level keys are the run's settings;
a ``[retry]`` table the retry policy::

    ae_title = "AIOSCU"          # our AE title (default AIODICOM)
    listen_port = 11113          # our acceptor, needed when a PACS has method = "move"
    max_operations = 12          # across every PACS at once

    [retry]
    attempts = 6
    base_delay = 1.0
    max_delay = 60.0

    [dcm4chee]
    host = "pacs1.example"
    port = 11112
    ae_title = "DCM4CHEE"
    method = "get"
    max_associations = 4
    dimse_timeout = 120
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from aiodicom.association import Timeouts
from aiodicom.tomlfile import TOML_MODULE, toml_module

__all__ = ["BulkConfig", "ConfigError", "PacsConfig", "RetryPolicy"]

Method = Literal["get", "move"]


class ConfigError(ValueError):
    """A configuration that cannot be used: the message names the file, table and key."""


def _positive(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ConfigError(f"{attribute.name} must be at least 1, not {value}")


def _uids(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ConfigError(f"expected a list of UIDs, not {value!r}")


@attrs.frozen
class RetryPolicy:
    """Exponential backoff with jitter for transient failures.

    Attempt ``n`` (1 is the first try) waits, before it starts, ``min(max_delay, base_delay *
    multiplier ** (n - 2))`` seconds scaled by a random factor in ``[1 - jitter, 1]`` (so that
    the retries of many items against one PACS spread out instead of arriving together).
    ``attempts`` counts every try of an item, the first one included.
    """

    attempts: int = attrs.field(default=5, validator=_positive)
    base_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.5

    def __attrs_post_init__(self) -> None:
        if self.base_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ConfigError("retry delays must be >= 0 and the multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"retry jitter must be between 0 and 1, not {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before ``attempt`` (2 = the first retry); 0 for the first."""
        if attempt <= 1:
            return 0.0
        exponent = min(attempt - 2, 64)  # no float overflow for absurd attempt counts
        ceiling = min(self.max_delay, self.base_delay * self.multiplier ** exponent)
        factor = 1.0 - self.jitter * (rng or random).random()
        return ceiling * factor if math.isfinite(ceiling) else self.max_delay


@attrs.frozen
class PacsConfig:
    """One PACS: where it is, how we retrieve from it, and how hard we may push it.

    ``max_associations``: associations open to it at once (in use or idle).
    ``max_operations``: retrieve and C-FIND operations at once (default: ``max_associations``;
    one operation runs per association, so more than that only waits).
    ``method``: ``"get"`` (instances on the same association) or ``"move"`` (to our acceptor:
    the PACS must know our AE title, host and port).
    """

    name: str
    host: str
    port: int
    ae_title: str = "ANY-SCP"
    method: Method = "get"
    max_associations: int = attrs.field(default=4, validator=_positive)
    max_operations: int | None = None
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    sop_classes: tuple[str, ...] | None = attrs.field(default=None, converter=_uids)
    """C-GET: the storage SOP classes to propose (default: the common ones, see
    :meth:`aiodicom.Peer.get`); name the rarer classes a PACS holds here."""
    transfer_syntaxes: tuple[str, ...] | None = attrs.field(default=None, converter=_uids)
    """C-GET: exactly these transfer syntaxes, in this order, for every class (DCMTK dcmqrscp
    sends on the first context accepted for a class)."""

    def __attrs_post_init__(self) -> None:
        if self.method not in ("get", "move"):
            raise ConfigError(f"PACS {self.name!r}: method must be 'get' or 'move', "
                              f"not {self.method!r}")
        if self.max_operations is not None and self.max_operations < 1:
            raise ConfigError(f"PACS {self.name!r}: max_operations must be at least 1")

    @property
    def operations(self) -> int:
        """Operations at once on this PACS."""
        return self.max_operations if self.max_operations is not None else self.max_associations

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.host, self.port, self.ae_title)


_RUN_KEYS = {"ae_title", "listen_port", "listen_host", "max_operations", "idle_timeout"}
_PACS_KEYS = {
    "host", "port", "ae_title", "method", "max_associations", "max_operations",
    "connect_timeout", "acse_timeout", "dimse_timeout", "network_timeout",
    "sop_classes", "transfer_syntaxes",
    # peers.toml's own AE title and port: one for the run (see from_mapping)
    "our_ae_title", "our_port",
}
_RETRY_KEYS = {"attempts", "base_delay", "multiplier", "max_delay", "jitter"}


@attrs.frozen
class BulkConfig:
    """Every PACS of a run by name, the global limit, our AE, the retry policy.

    ``max_operations``: operations at once over every PACS (``None``: the sum of theirs).
    ``listen_port``: our acceptor's port (0 picks one), needed for a PACS retrieved by C-MOVE.
    ``idle_timeout``: seconds an association with nothing to do stays open for the next item
    (0 releases each association when its operation ends, so a PACS sees exactly the
    associations of the operations running).
    """

    pacs: Mapping[str, PacsConfig]
    ae_title: str = "AIODICOM"
    listen_port: int | None = None
    listen_host: str = "127.0.0.1"
    max_operations: int | None = None
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    idle_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        if not self.pacs:
            raise ConfigError("the configuration names no PACS")
        for name, pacs in self.pacs.items():
            if name != pacs.name:
                raise ConfigError(f"PACS {pacs.name!r} is filed under the name {name!r}")
        if self.max_operations is not None and self.max_operations < 1:
            raise ConfigError("max_operations must be at least 1")

    @classmethod
    def of(cls, *pacs: PacsConfig, **settings: Any) -> BulkConfig:
        """``BulkConfig.of(PacsConfig("a", ...), PacsConfig("b", ...), ae_title=...)``."""
        return cls({p.name: p for p in pacs}, **settings)

    @property
    def global_operations(self) -> int:
        if self.max_operations is not None:
            return self.max_operations
        return sum(p.operations for p in self.pacs.values())

    def get(self, name: str) -> PacsConfig:
        try:
            return self.pacs[name]
        except KeyError:
            known = ", ".join(sorted(self.pacs)) or "none"
            raise ConfigError(
                f"no PACS named {name!r} in the configuration (named: {known})"
            ) from None

    # --- loading ------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BulkConfig:
        """Read a ``.toml`` or ``.json`` file (see the module docstring for its shape)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc}") from exc
        data: Any
        if file.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{file} is not valid JSON: {exc}") from exc
        else:
            toml = _toml_reader(file)
            try:
                data = toml.loads(text)
            except toml.TOMLDecodeError as exc:
                raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: expected a table of settings and PACS")
        return cls.from_mapping(data, source=str(file))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> BulkConfig:
        """From parsed TOML/JSON: top-level settings, ``retry``, and one table per PACS
        (``pacs = {name: table}`` is accepted too)."""
        settings: dict[str, Any] = {}
        tables: dict[str, Any] = dict(data.get("pacs", {})) if isinstance(
            data.get("pacs"), Mapping) else {}
        for key, value in data.items():
            if key == "pacs" and tables:
                continue
            if key == "retry":
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{source}: [retry] must be a table")
                unknown = set(value) - _RETRY_KEYS
                if unknown:
                    raise ConfigError(f"{source}: [retry] has unknown keys {sorted(unknown)} "
                                      f"(known: {sorted(_RETRY_KEYS)})")
                settings["retry"] = RetryPolicy(**value)
            elif isinstance(value, Mapping):
                tables[key] = value
            elif key in _RUN_KEYS:
                settings[key] = value
            else:
                raise ConfigError(f"{source}: unknown setting {key!r} (settings: "
                                  f"{sorted(_RUN_KEYS)}; PACS are tables)")
        pacs = {name: _pacs(name, table, source) for name, table in tables.items()}
        # peers.toml names our AE title and port per peer; a run has one of each: take them
        # when the peers agree and the file does not set them for the run.
        for setting, key in (("ae_title", "our_ae_title"), ("listen_port", "our_port")):
            ours = {table[key] for table in tables.values() if table.get(key) is not None}
            if setting not in settings and len(ours) == 1:
                settings[setting] = ours.pop()
            elif setting not in settings and len(ours) > 1:
                raise ConfigError(
                    f"{source}: the PACS name different {key} values ({sorted(map(str, ours))})"
                    f"; a run has one: set {setting} at the top of the file"
                )
        try:
            return cls(pacs, **settings)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc


def _toml_reader(file: Path) -> Any:
    toml = toml_module()
    if toml is None:
        raise ConfigError(f"reading {file} needs {TOML_MODULE} (pip install tomli), or write "
                          "the configuration as JSON")
    return toml


def _pacs(name: str, table: Mapping[str, Any], source: str) -> PacsConfig:
    unknown = set(table) - _PACS_KEYS
    if unknown:
        raise ConfigError(f"{source}: [{name}] has unknown keys {sorted(unknown)} "
                          f"(known: {sorted(_PACS_KEYS)})")
    if "host" not in table or "port" not in table:
        raise ConfigError(f"{source}: [{name}] needs host and port (and ae_title, method)")
    defaults = Timeouts()
    timeouts = Timeouts(
        connect=table.get("connect_timeout", defaults.connect),
        acse=table.get("acse_timeout", defaults.acse),
        dimse=table.get("dimse_timeout", defaults.dimse),
        network=table.get("network_timeout", defaults.network),
    )
    try:
        return PacsConfig(
            name, str(table["host"]), int(table["port"]),
            ae_title=str(table.get("ae_title", "ANY-SCP")),
            method=table.get("method") or "get",
            max_associations=int(table.get("max_associations", 4)),
            max_operations=table.get("max_operations"),
            timeouts=timeouts,
            sop_classes=table.get("sop_classes"),
            transfer_syntaxes=table.get("transfer_syntaxes"),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: [{name}]: {exc}") from exc
