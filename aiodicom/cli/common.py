"""What every command shares: exit codes, one-line errors, logging, Ctrl-C/SIGTERM, and for the
network commands the peer (``HOST PORT`` or a name from ``peers.toml``), AE titles, timeouts,
PDU size and TLS."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import anyio
import attrs

from aiodicom.association import Timeouts
from aiodicom.client import Client, PeerAddress
from aiodicom.errors import (
    AssociationError,
    AssociationRejected,
    DicomError,
    DicomTimeoutError,
    QueryError,
    StatusError,
)
from aiodicom.tomlfile import toml_module

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "EXIT_WARNING",
    "Args",
    "CliError",
    "PeerConfig",
    "client_for",
    "resolve_peer",
    "run_command",
    "server_tls",
]

EXIT_OK = 0
EXIT_WARNING = 1
EXIT_USAGE = 2
EXIT_FAILURE = 3
EXIT_REFUSED = 4
EXIT_NETWORK = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    done, with warnings (a warning status, or warning sub-operations)
  2    usage error (bad option, key, file or peer name)
  3    failure (a failure status, failed sub-operations, nothing stored)
  4    association refused (A-ASSOCIATE-RJ: check -aet/-aec and the peer's configuration)
  5    network error (connection refused or lost, aborted association, timeout, TLS)
  130  interrupted (Ctrl-C or SIGTERM)
"""

PEERS_FILE = Path("~/.config/aiodicom/peers.toml")
"""Named peers: ``[mypacs]`` tables with ``host``, ``port``, ``ae_title`` and ``method``."""

log = logging.getLogger("aiodicom.cli")

T = TypeVar("T")


class Args(SimpleNamespace):
    """A command's parsed options and arguments, by name (``args.aet``, ``args.quiet``...), with
    ``command`` (its name) and the settings of the command (``default_aet``,
    ``stops_by_signal``)."""


class CliError(Exception):
    """A problem to report as one line (what happened, what to change) with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- logging and running ---------------------------------------------------------------------


def setup_logging(args: Args) -> None:
    level = (
        logging.DEBUG if args.debug else logging.INFO if args.verbose
        else logging.ERROR if getattr(args, "quiet", False) else logging.WARNING
    )
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def describe_error(exc: BaseException, *, tls: bool = False) -> tuple[int, str]:
    """The exit code and the one line for an error: what happened, what to change (``tls``:
    the command used TLS)."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, BrokenPipeError):  # our output was piped into 'head' or the like
        return EXIT_OK, ""
    if isinstance(exc, AssociationRejected):
        return EXIT_REFUSED, (
            f"association refused: {exc}; check our AE title (-aet) and the called AE title "
            "(-aec) against the peer's configuration"
        )
    if isinstance(exc, QueryError):
        return EXIT_USAGE, f"query refused before sending: {exc}"
    if isinstance(exc, StatusError):
        return EXIT_FAILURE, f"the peer answered {exc}"
    if isinstance(exc, DicomTimeoutError):
        return EXIT_NETWORK, f"timed out: {exc}; raise --connect-timeout/--acse-timeout/" \
                             "--dimse-timeout, or check that the peer is up"
    if isinstance(exc, AssociationError) and isinstance(exc.__cause__, ssl.SSLError):
        return EXIT_NETWORK, (
            f"TLS failed: {exc}; check --tls-ca (the CA of the peer's certificate) and "
            "--tls-cert/--tls-key (ours, when the peer asks for one)"
        )
    if isinstance(exc, AssociationError) and isinstance(exc.__cause__, OSError):
        return EXIT_NETWORK, f"{exc}; check the host and port, and that the peer is up"
    if isinstance(exc, AssociationError) and tls:
        # Under TLS 1.3 a server checks our certificate after our side of the handshake is
        # done: its refusal reaches us as a closed connection.
        return EXIT_NETWORK, (
            f"association lost: {exc}; over TLS, a peer that wants our certificate, or does "
            "not trust it, closes the connection: check --tls-cert/--tls-key"
        )
    if isinstance(exc, AssociationError):
        return EXIT_NETWORK, f"association lost: {exc}"
    if isinstance(exc, ssl.SSLError):
        return EXIT_NETWORK, f"TLS failed: {exc}; check --tls-cert/--tls-key/--tls-ca"
    if isinstance(exc, ConnectionRefusedError):
        return EXIT_NETWORK, f"connection refused: {exc}; is the peer listening on that port?"
    if isinstance(exc, OSError) and exc.filename is None:
        return EXIT_NETWORK, f"network error: {exc}; check the host and port"
    if isinstance(exc, OSError):
        return EXIT_USAGE, f"{exc.strerror or exc}: {exc.filename}"
    if isinstance(exc, DicomError):
        return EXIT_FAILURE, str(exc)
    return EXIT_FAILURE, f"{type(exc).__name__}: {exc}"


def run_command(
    args: Args, command: Callable[[Args], Awaitable[int]]
) -> int:
    """Run ``command`` on the event loop until it ends or Ctrl-C/SIGTERM arrives (then it is
    cancelled, so its ``finally`` blocks print the summary); errors become one line and an
    exit code (the traceback only with ``-d``)."""
    setup_logging(args)
    interrupted = False

    async def main() -> int:
        nonlocal interrupted
        result = EXIT_OK
        async with anyio.create_task_group() as tasks:

            async def watch_signals() -> None:
                nonlocal interrupted
                # Signals are received on the loop itself (no handler thread): the command is
                # cancelled at its next await and cleans up as on any cancellation.
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        tasks.cancel_scope.cancel()
                        return

            async def body() -> None:
                nonlocal result
                result = await command(args)
                tasks.cancel_scope.cancel()

            tasks.start_soon(watch_signals)
            tasks.start_soon(body)
        if interrupted:
            # A server's normal end is Ctrl-C or SIGTERM; a client's is being interrupted.
            if getattr(args, "stops_by_signal", False):
                return EXIT_OK
            print(f"aiodicom {args.command}: interrupted (what was running was cancelled)",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        return result

    try:
        return anyio.run(main, backend="asyncio")
    except KeyboardInterrupt:  # a Ctrl-C before the loop installed its handler
        return EXIT_INTERRUPTED
    except BaseException as exc:  # every error becomes one line and an exit code
        error = _unwrap(exc)
        if isinstance(error, (SystemExit, KeyboardInterrupt)):
            raise
        code, text = describe_error(
            error, tls=bool(getattr(args, "tls_cert", None) or getattr(args, "tls_ca", None)))
        if not text:
            # stdout's reader is gone: flushing it at exit would fail again, noisily.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return code
        if args.debug:
            logging.getLogger("aiodicom.cli").exception("%s", text)
        print(f"aiodicom {args.command}: {text}", file=sys.stderr)
        return code


def _unwrap(exc: BaseException) -> BaseException:
    # Our task group wraps the command's error; the user wants the error itself.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


# -- peers -----------------------------------------------------------------------------------


@attrs.frozen
class PeerConfig:
    """A peer as given on the command line or named in peers.toml."""

    host: str
    port: int
    ae_title: str
    method: str | None = None
    """``"move"`` or ``"get"``: how this peer prefers to be retrieved from."""
    our_ae_title: str | None = None
    our_port: int | None = None


def _toml_reader(file: Path) -> Any:
    toml = toml_module()
    if toml is None:
        raise CliError(f"reading {file} on Python {sys.version_info[0]}.{sys.version_info[1]} "
                       "needs tomli: pip install 'aiodicom[cli]'")
    return toml


def load_peers(path: Path | None = None) -> dict[str, PeerConfig]:
    """The peers named in ``peers.toml`` (``$AIODICOM_PEERS`` or
    ``~/.config/aiodicom/peers.toml``); empty when there is no such file."""
    file = Path(path or os.environ.get("AIODICOM_PEERS") or PEERS_FILE).expanduser()
    if not file.exists():
        return {}
    toml = _toml_reader(file)
    try:
        data = toml.loads(file.read_text(encoding="utf-8"))
    except (OSError, toml.TOMLDecodeError) as exc:
        raise CliError(f"cannot read {file}: {exc}; fix the file or set $AIODICOM_PEERS") from exc
    peers: dict[str, PeerConfig] = {}
    for name, table in data.items():
        if not isinstance(table, dict) or "host" not in table or "port" not in table:
            raise CliError(f"{file}: [{name}] needs host and port (and ae_title, method)")
        method = table.get("method")
        if method not in (None, "move", "get"):
            raise CliError(f"{file}: [{name}] method must be 'move' or 'get', not {method!r}")
        peers[name] = PeerConfig(
            str(table["host"]), int(table["port"]), str(table.get("ae_title", "ANY-SCP")),
            method, table.get("our_ae_title"), table.get("our_port"),
        )
    return peers


def resolve_peer(args: Args) -> PeerConfig:
    """``HOST PORT``, or ``NAME`` from peers.toml (the port then omitted); ``-aec`` wins over
    the file's AE title."""
    host, port = args.peer, args.port
    if port is None:
        peers = load_peers()
        if host not in peers:
            known = ", ".join(sorted(peers)) or "none"
            raise CliError(
                f"{host!r} is not a peer named in {os.environ.get('AIODICOM_PEERS') or PEERS_FILE}"
                f" (named: {known}); give HOST PORT, or add [{host}] with host, port, ae_title"
            )
        config = peers[host]
    else:
        try:
            number = int(port)
        except ValueError:
            raise CliError(f"port {port!r} is not a number") from None
        config = PeerConfig(host, number, "ANY-SCP")
    if args.aec:
        config = attrs.evolve(config, ae_title=args.aec)
    return config


# -- what the options of the network commands make ------------------------------------------


def timeouts(args: Args) -> Timeouts:
    return Timeouts(connect=args.connect_timeout, acse=args.acse_timeout,
                    dimse=args.dimse_timeout)


def tls_contexts(args: Args) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """The client and server SSL contexts asked for (both ``None`` without TLS options)."""
    if not (args.tls_cert or args.tls_ca):
        if args.tls_key:
            raise CliError("--tls-key needs --tls-cert")
        return None, None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("give --tls-cert and --tls-key together")
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
        # Peers are named by address and AE title; their certificates rarely carry the host name.
        client.check_hostname = False
        server: ssl.SSLContext | None = None
        if args.tls_cert:
            client.load_cert_chain(args.tls_cert, args.tls_key)
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.tls_ca)
            server.load_cert_chain(args.tls_cert, args.tls_key)
            if args.tls_ca:
                server.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise CliError(
            f"cannot load the TLS files (--tls-cert {args.tls_cert}, --tls-key {args.tls_key}, "
            f"--tls-ca {args.tls_ca}): {exc}; give PEM files that exist"
        ) from exc
    return client, server


def server_tls(args: Args) -> ssl.SSLContext | None:
    """The SSL context of a server command (``None`` without TLS options): its certificate, and
    with ``--tls-ca``, clients must present a certificate signed by those CAs (mutual TLS)."""
    if args.tls_ca and not args.tls_cert:
        raise CliError("a TLS server needs its certificate: give --tls-cert and --tls-key "
                       "(--tls-ca then also asks clients for theirs)")
    return tls_contexts(args)[1]


def client_for(
    args: Args, peer: PeerConfig | None, **kwargs: Any
) -> Client:
    """A :class:`Client` with the common options (``kwargs``: listen_port,
    unexpected_deliveries...)."""
    listening = kwargs.get("listen_port") is not None
    client_tls, _ = tls_contexts(args)
    extra: dict[str, Any] = {}
    if args.max_pdu is not None:
        extra["max_pdu_length"] = args.max_pdu
    ae_title: str = (
        args.aet or (peer.our_ae_title if peer and peer.our_ae_title else None)
        or str(getattr(args, "default_aet", "AIODICOM"))
    )
    if peer is not None:
        log.info("%s -> %s at %s:%d (timeouts connect %s s, ACSE %s s, DIMSE %s s%s)",
                 ae_title, peer.ae_title, peer.host, peer.port, args.connect_timeout,
                 args.acse_timeout, args.dimse_timeout, ", TLS" if client_tls else "")
    try:
        return Client(
            ae_title,
            peer=PeerAddress(peer.host, peer.port, peer.ae_title) if peer else None,
            timeouts=timeouts(args), ssl_context=client_tls,
            server_ssl_context=server_tls(args) if listening else None,
            **extra, **kwargs,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def is_terminal(args: Args) -> bool:
    """Progress bars only on a terminal, and never with ``-q``."""
    return not args.quiet and sys.stderr.isatty()


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover
