"""``python -m indexer`` / ``hos-search indexer`` and ``hos-search reindex``.

    python -m indexer [--reindex-on-start]   stream outbox changes into the index
    python -m indexer reindex                one full rebuild with an atomic alias swap

Any number may run against one database: one per ``INDEXER_NAME`` and ``SEARCH_INDEX`` streams,
the others wait as hot standbys (:mod:`indexer.election`).

Reads the environment once into :class:`IndexerSettings`. SIGTERM and SIGINT stop cleanly: the
current batch is finished or abandoned, never checkpointed past unwritten work. Bad settings
exit 2 and unreachable servers exit 1, each with one line on stderr — never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import uvloop

from catalog.commandline import CommandParser
from catalog.config import ConfigError
from catalog.errors import CatalogError
from catalog.logs import configure_logging
from indexer.errors import IndexerError
from indexer.service import run_indexer, run_reindex
from indexer.settings import IndexerSettings


def build_parser(command: str = "stream") -> argparse.ArgumentParser:
    """The options of ``command``: ``stream`` (``hos-search indexer``) or ``reindex``
    (``hos-search reindex``, which has none: it used to show the streaming indexer's)."""
    if command == "reindex":
        return CommandParser(
            prog="hos-search reindex",
            description="rebuild the index behind SEARCH_INDEX with zero downtime: a new versioned index "
            "from one snapshot, the changes made meanwhile replayed, then an atomic alias swap",
        )
    parser = CommandParser(prog="hos-search indexer", description="keep the search index in sync")
    parser.add_argument(
        "--reindex-on-start",
        action="store_true",
        help="rebuild the index before streaming (as SYNC_PRODUCTS_ON_STARTUP)",
    )
    return parser


async def _run(command: str, settings: IndexerSettings, reindex_on_start: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if command == "reindex":
        result = await run_reindex(settings, stop)
        print(
            f"reindexed {result.documents} products into {result.index} in {result.seconds:.1f} s "
            f"({result.replayed} changes replayed)"
        )
        return 0
    await run_indexer(settings, stop, reindex_on_start=reindex_on_start)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    rest = list(sys.argv[1:] if argv is None else argv)
    command = rest.pop(0) if rest and rest[0] in ("stream", "reindex") else "stream"
    parser = build_parser(command)
    args = parser.parse_args(rest)
    prog = parser.prog
    try:
        configure_logging(os.environ)
        settings = IndexerSettings.from_env(os.environ)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_run(command, settings, getattr(args, "reindex_on_start", False)))
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CatalogError, IndexerError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
