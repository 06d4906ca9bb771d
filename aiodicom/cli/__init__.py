"""The ``aiodicom`` command line (``python -m aiodicom``): DCMTK-like subcommands over the
public library API, with no protocol logic of their own.

``common`` holds the options every network command shares, peers named in
``~/.config/aiodicom/peers.toml``, exit codes and one-line errors; ``servers`` the ``qrscp``
and ``storescp`` commands; ``keys`` turns ``-k`` options and query files into a
:class:`~aiodicom.Query`; ``scu`` the ``echo``, ``find``, ``move``, ``get`` and ``store``
commands; ``output`` tables and progress bars (rich, the extra ``cli``).
"""
