"""``hos-search``: the command line for every part of the service.

Each sub-command reads its settings from the environment once, then hands over to the part
that owns the work. Expected failures (bad settings, unreachable servers, failed migrations)
end with one line on stderr naming the problem and a non-zero exit — never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from catalog.config import ConfigError, database_url
from catalog.connections import ServerUnreachable
from catalog.logs import configure_logging
from catalog.migrate import MigrationError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hos-search", description="hos-search: product search for the marketplace")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default: LOG_LEVEL, else info"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run the whole stack on embedded servers")
    dev.add_argument("--products", type=_positive, default=20_000, help="sample products to load (default 20000)")
    dev.add_argument("--port", type=_port, default=8080, help="proxy port (default 8080; 0 picks a free one)")
    dev.add_argument("--env-file", help="write DATABASE_URL, REDIS_URL, ELASTICSEARCH_NODE, PROXY_URL here when ready")
    dev.add_argument("--seed", type=int, default=42, help="sample-catalog seed (default 42)")

    commands.add_parser("migrate", help="apply the catalog's SQL migrations")
    commands.add_parser("proxy", help="serve the search API (see: hos-search proxy --help)")
    commands.add_parser("indexer", help="stream catalog changes into the index (see: hos-search indexer --help)")
    commands.add_parser("reindex", help="rebuild the index with zero downtime")

    seed = commands.add_parser("seed", help="load a deterministic sample catalog")
    seed.add_argument("--products", type=_positive, default=20_000)
    seed.add_argument("--seed", type=int, default=42)
    seed.add_argument("--replace", action="store_true", help="empty the catalog first")
    return parser


async def _migrate(env: dict[str, str]) -> int:
    from catalog.connections import connect_postgres
    from catalog.migrate import migrate

    conn = await connect_postgres(database_url(env))
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
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


# Sub-commands owned by a service: everything after the command word is the service's own
# command line (``hos-search proxy --workers 4`` is ``python -m proxy --workers 4``).
_SERVICE_COMMANDS = {
    "proxy": ("proxy.__main__", []),
    "indexer": ("indexer.__main__", []),
    "reindex": ("indexer.__main__", ["reindex"]),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _SERVICE_COMMANDS:
        import importlib

        module, prefix = _SERVICE_COMMANDS[argv[0]]
        service_main = importlib.import_module(module).main
        return int(service_main([*prefix, *argv[1:]]))
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    try:
        configure_logging(env, args.log_level)
        if args.command == "migrate":
            return asyncio.run(_migrate(env))
        if args.command == "seed":
            return asyncio.run(_seed(env, args.products, args.seed, args.replace))
        if args.command == "dev":
            from devstack.dev import run_dev

            return run_dev(env, products=args.products, port=args.port, env_file=args.env_file, seed=args.seed)
    except ConfigError as exc:
        print(f"hos-search: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ServerUnreachable, MigrationError) as exc:
        print(f"hos-search: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")
