"""The ``fmc-ij`` command line: one subcommand per pipeline step, a thin layer over the library.

Bad input prints one line (``error: ...``) and exits with code 2; ``--debug`` shows the traceback.
"""

# Importing each module registers its subcommands, in this order in --help.
from fmc_ij.cli import demo, data, model  # noqa: F401, I001
from fmc_ij.cli._app import app, main

__all__ = ["app", "main"]
