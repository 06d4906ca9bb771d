"""Click building blocks of the subcommands: options listed under titled sections of ``--help``,
arguments with help of their own, the options every network command shares, and
:func:`command`, which makes an ``async def run(args) -> int`` a click command run by
:func:`~aiodicom.cli.common.run_command` (Ctrl-C, one-line errors, exit codes).

A subcommand is one module: options stacked on its ``run`` function, ``@command(...)`` on top,
the command listed in the module's ``COMMANDS``, the module in ``aiodicom.cli.app``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click

from aiodicom.association import DEFAULT_MAX_PDU_LENGTH
from aiodicom.cli.common import EXIT_CODES_HELP, EXIT_USAGE, Args, run_command

__all__ = [
    "CONTEXT_SETTINGS",
    "PORT",
    "Command",
    "argument",
    "command",
    "network_options",
    "option",
    "output_options",
    "peer_arguments",
    "preformatted",
    "stack",
]

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": 100,
}


def preformatted(text: str) -> str:
    """``text`` kept as written by click's help (each paragraph marked not to be rewrapped)."""
    return "\n\n".join(f"\b\n{paragraph}" for paragraph in text.strip("\n").split("\n\n"))


class SectionOption(click.Option):
    """An option shown under a section title of ``--help`` ("association", "TLS", ...)."""

    def __init__(self, *args: Any, section: str = "options", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.section = section


class HelpArgument(click.Argument):
    """A positional argument with a line of help (click's own arguments have none)."""

    def __init__(self, *args: Any, help: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help: str = help  # (set after click's own __init__, which takes none before 8.5)


class Command(click.Command):
    """A subcommand whose ``--help`` lists its arguments, then its options by section."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Written out rather than inherited: click 8.5 has an arguments section of its own,
        # which 8.1 lacks; this one reads the same under both.
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        arguments = [(p.human_readable_name, p.help) for p in self.get_params(ctx)
                     if isinstance(p, HelpArgument)]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        self.format_options(ctx, formatter)
        self.format_epilog(ctx, formatter)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is None:
                continue
            name = param.section if isinstance(param, SectionOption) else "options"
            sections.setdefault(name, []).append(record)
        for name, records in sections.items():
            with formatter.section(name[:1].upper() + name[1:]):
                formatter.write_dl(records)


def option(*decls: str, section: str = "options", **kwargs: Any) -> Callable[[F], F]:
    return click.option(*decls, cls=SectionOption, section=section, **kwargs)


def argument(*decls: str, help: str = "", **kwargs: Any) -> Callable[[F], F]:
    return click.argument(*decls, cls=HelpArgument, help=help, **kwargs)


PORT = click.IntRange(0, 65535)
"""A TCP port number (0: any free port, for a listener)."""


def stack(decorators: Sequence[Callable[[F], F]]) -> Callable[[F], F]:
    """One decorator applying ``decorators`` (options shown in their order in ``--help``)."""
    def apply(function: F) -> F:
        for decorate in reversed(decorators):
            function = decorate(function)
        return function

    return apply


def output_options(*, quiet: bool = True) -> Callable[[F], F]:
    """``-v``, ``-d`` and ``-q``, which :func:`~aiodicom.cli.common.run_command` reads
    (``quiet``: the command has output to leave out)."""
    decorators = [
        option("-v", "--verbose", is_flag=True, section="output",
               help="log associations and operations (INFO)"),
        option("-d", "--debug", is_flag=True, section="output",
               help="log everything (DEBUG): each association PDU and DIMSE message, "
                    "readable, on stderr; show tracebacks"),
    ]
    if quiet:
        decorators.append(option(
            "-q", "--quiet", is_flag=True, section="output",
            help="no progress bar, summary or warnings: the data (table, JSON) and errors only"))
    return stack(decorators)


def peer_arguments() -> Callable[[F], F]:
    return stack([
        argument("peer", metavar="HOST|NAME",
                 help="the peer's host, or a peer named in peers.toml"),
        argument("port", metavar="[PORT]", required=False,
                 help="the peer's port (omitted for a named peer)"),
    ])


def network_options(*, peer: bool = True, default_aet: str = "AIODICOM") -> Callable[[F], F]:
    """The association options (AE titles, timeouts, PDU size), TLS and output options of a
    command that calls a peer (``peer``), or of a server."""
    decorators: list[Callable[[F], F]] = [
        option("-aet", "--aetitle", "aet", metavar="AET", section="association",
               help=f"our AE title (default {default_aet})"),
    ]
    if peer:
        decorators.append(option("-aec", "--call", "aec", metavar="AET", section="association",
                                 help="the peer's AE title (default ANY-SCP, or peers.toml)"))
    decorators += [
        option("--connect-timeout", type=float, default=30.0, metavar="S",
               section="association", help="TCP connect timeout in seconds (default 30)"),
        option("--acse-timeout", type=float, default=30.0, metavar="S", section="association",
               help="association set-up and release timeout (default 30)"),
        option("--dimse-timeout", type=float, default=60.0, metavar="S", section="association",
               help="wait for each DIMSE response (default 60)"),
        option("--max-pdu", type=int, metavar="BYTES", section="association",
               help=f"the largest PDU we receive (default {DEFAULT_MAX_PDU_LENGTH})"),
        option("--tls-cert", metavar="PEM", section="TLS",
               help="our certificate (PEM)" + ("" if peer else "; turns TLS on")),
        option("--tls-key", metavar="PEM", section="TLS", help="its private key (PEM)"),
        option("--tls-ca", metavar="PEM", section="TLS",
               help="the CA certificates to verify the peer with (turns TLS on)" if peer else
               "the CA certificates a client's certificate must be signed by: clients without "
               "one are refused (mutual TLS)"),
        output_options(),
    ]
    return stack(decorators)


def _has_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def command(
    name: str, summary: str, description: str, *, needs_rich: bool = True,
    stops_by_signal: bool = False, default_aet: str = "AIODICOM",
) -> Callable[[Callable[[Args], Awaitable[int]]], Command]:
    """The click command ``name`` running ``run(args)`` (``args``: an :class:`Args` of the
    parsed options, plus ``command``, ``default_aet`` and ``stops_by_signal``), whose exit
    code it returns. The options are those stacked on ``run`` (``@option``, ``@argument``,
    ``@network_options()``...). ``needs_rich``: the command draws tables or bars."""

    def decorate(run: Callable[[Args], Awaitable[int]]) -> Command:
        def callback(**params: Any) -> int:
            if needs_rich and not _has_module("rich"):
                print(f"aiodicom {name} needs the extra 'cli' (rich): "
                      "pip install 'aiodicom[cli]'", file=sys.stderr)
                return EXIT_USAGE
            args = Args(command=name, default_aet=default_aet,
                        stops_by_signal=stops_by_signal, **params)
            return run_command(args, run)

        # click's decorators store the options on the function, last applied first.
        params = list(reversed(getattr(run, "__click_params__", [])))
        return Command(
            name, callback=callback, params=params, help=description, short_help=summary,
            epilog=preformatted(EXIT_CODES_HELP), context_settings=CONTEXT_SETTINGS,
        )

    return decorate
