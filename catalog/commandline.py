"""The command-line parser of every entry point (``hos-search``, ``python -m proxy``,
``python -m indexer``): a mistyped option is one line on stderr and exit 2, like every other
failure at start. argparse prints its usage and then the error, two lines where the commands
promise one. Parses arguments only; never reads the environment.
"""

from __future__ import annotations

import argparse
from typing import Final, NoReturn

# Defaults that more than one command offers, written once.
DEFAULT_PROXY_PORT: Final = 8080  # hos-search proxy, python -m proxy, and the proxy hos-search dev runs
SAMPLE_PRODUCTS: Final = 20_000  # hos-search dev and hos-search seed


class CommandParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2) pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
