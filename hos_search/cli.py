"""``hos-search``: the command line for every part of the service.

Each sub-command reads its settings from the environment once, then hands over to the part
that owns the work. Expected failures (bad settings, unreachable servers, failed migrations, a
mistyped option) end with one line on stderr naming the problem and a non-zero exit — never a
traceback.

Global options (``--log-level``) work with every command, before or after the command word:
``hos-search --log-level debug proxy`` and ``hos-search proxy --log-level debug`` are the same.
They are applied here, as the environment variable they override (``LOG_LEVEL``), because the
services and the processes they start (proxy workers, the dev stack's children) read that.
Everything else after a service's command word (``proxy``, ``indexer``, ``reindex``) is the
service's own command line, passed on untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from catalog.commandline import DEFAULT_PROXY_PORT, SAMPLE_PRODUCTS, CommandParser
from catalog.config import ConfigError, database_url
from catalog.errors import CatalogError
from catalog.generator import DEFAULT_SEED
from catalog.logs import LEVELS, configure_logging


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port")
    return value


def _global_options(*, top: bool) -> CommandParser:
    """The options every command accepts; ``top=False`` for the copy after the command word.

    After the command word the default is SUPPRESS, so a sub-command that was not given the
    option does not overwrite the value given before the command word with its default.
    """
    options = CommandParser(add_help=False)
    options.add_argument(
        "--log-level",
        type=str.lower,
        choices=LEVELS,
        default=None if top else argparse.SUPPRESS,
        help="default: LOG_LEVEL, else info",
    )
    return options


# Sub-commands owned by a service: everything after the command word, except the global
# options, is the service's own command line (``hos-search proxy --workers 4`` is
# ``python -m proxy --workers 4``), including its --help.
_SERVICE_COMMANDS = {
    "proxy": ("proxy.__main__", [], "serve the search API (see: hos-search proxy --help)"),
    "indexer": ("indexer.__main__", [], "stream catalog changes into the index (see: hos-search indexer --help)"),
    "reindex": ("indexer.__main__", ["reindex"], "rebuild the index with zero downtime"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="hos-search",
        description="hos-search: product search for the marketplace",
        parents=[_global_options(top=True)],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    after = [_global_options(top=False)]

    dev = commands.add_parser("dev", help="run the whole stack on embedded servers", parents=after)
    dev.add_argument(
        "--products",
        type=_positive,
        default=SAMPLE_PRODUCTS,
        help=f"sample products to load (default {SAMPLE_PRODUCTS})",
    )
    dev.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PROXY_PORT,
        help=f"proxy port (default {DEFAULT_PROXY_PORT}; 0 picks a free one)",
    )
    dev.add_argument("--env-file", help="write DATABASE_URL, REDIS_URL, ELASTICSEARCH_NODE, PROXY_URL here when ready")
    dev.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"sample-catalog seed (default {DEFAULT_SEED})")
    dev.add_argument("--workers", type=_positive, default=1, help="proxy worker processes (default 1)")

    commands.add_parser("migrate", help="apply the catalog's SQL migrations", parents=after)
    for name, (_module, _prefix, help_text) in _SERVICE_COMMANDS.items():
        # No -h of its own and no abbreviations: the service's parser answers both.
        commands.add_parser(name, help=help_text, parents=after, add_help=False, allow_abbrev=False)

    seed = commands.add_parser("seed", help="load a deterministic sample catalog", parents=after)
    seed.add_argument("--products", type=_positive, default=SAMPLE_PRODUCTS)
    seed.add_argument("--seed", type=int, default=DEFAULT_SEED)
    seed.add_argument("--replace", action="store_true", help="empty the catalog first")
    return parser


async def _migrate(env: dict[str, str]) -> int:
    from catalog.connections import connect_postgres
    from catalog.migrate import migrate, validate_constraints

    conn = await connect_postgres(database_url(env))
    try:
        applied = await migrate(conn)
        checks = await validate_constraints(conn)
    finally:
        await conn.close()
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    for check in checks:
        print(f"constraint {check}", file=sys.stderr if check.violations else sys.stdout)
    return 0


async def _seed(env: dict[str, str], products: int, seed: int, replace: bool) -> int:
    from catalog.connections import connect_postgres
    from catalog.seed import SeedError, seed_catalog

    conn = await connect_postgres(database_url(env))
    try:
        result = await seed_catalog(conn, products, seed=seed, replace=replace)
    except SeedError as exc:
        print(f"hos-search seed: {exc}", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    print(
        f"seeded {result.products} products from {result.sellers} sellers (seed {result.seed}) "
        f"in {result.load_seconds + result.analyze_seconds:.1f} s"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    service = _SERVICE_COMMANDS.get(args.command)
    if rest and service is None:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.log_level is not None:
        # The entry point may write the environment: the services read LOG_LEVEL from it, and
        # pass it on to the processes they start.
        os.environ["LOG_LEVEL"] = args.log_level
    if service is not None:
        import importlib

        module, prefix, _help = service
        service_main = importlib.import_module(module).main
        return int(service_main([*prefix, *rest]))
    env = dict(os.environ)
    try:
        configure_logging(env)
        if args.command == "migrate":
            return asyncio.run(_migrate(env))
        if args.command == "seed":
            return asyncio.run(_seed(env, args.products, args.seed, args.replace))
        if args.command == "dev":
            from devstack.dev import run_dev

            return run_dev(
                env,
                products=args.products,
                port=args.port,
                env_file=args.env_file,
                seed=args.seed,
                workers=args.workers,
            )
    except ConfigError as exc:
        print(f"hos-search: configuration error: {exc}", file=sys.stderr)
        return 2
    except CatalogError as exc:  # an unreachable server, a failed migration, …
        print(f"hos-search: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    # argparse only accepts the commands above; a command added to the parser but not here
    # is a bug in this file.
    raise AssertionError(f"unhandled command {args.command}")
