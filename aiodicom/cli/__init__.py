"""The ``aiodicom`` command line (``python -m aiodicom``): DCMTK-like subcommands over the
public library API, with no protocol logic of their own. It needs the extra ``cli`` (click,
rich); the library does not.

``app`` is the click group and lists the modules of subcommands (``COMMAND_MODULES``);
``params`` the shared options and :func:`~aiodicom.cli.params.command`, which makes an async
``run(args)`` a subcommand; ``common`` exit codes, one-line errors, Ctrl-C/SIGTERM, peers named
in ``~/.config/aiodicom/peers.toml``, TLS contexts; ``keys`` turns ``-k`` options and query files
into a :class:`~aiodicom.Query`; ``scu`` the ``echo``, ``find``, ``move``, ``get``,
``retrieve`` and ``store`` commands; ``servers`` ``qrscp`` and ``storescp``; ``demo`` the demo's
options; ``output`` tables and progress bars (rich).

A new subcommand is one module::

    from aiodicom.cli.common import EXIT_OK, Args
    from aiodicom.cli.params import command, network_options, option, peer_arguments

    @command("pull", "one line for 'aiodicom --help'", "The description of 'aiodicom pull --help'.")
    @peer_arguments()
    @option("--since", metavar="DATE", section="pull", help="...")
    @network_options()
    async def pull(args: Args) -> int:
        ...  # args.peer, args.since, args.aet...; raise CliError(...) for a usage error
        return EXIT_OK

    COMMANDS = (pull,)

imported in ``app`` and added to its ``COMMAND_MODULES``.
"""
