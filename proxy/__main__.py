"""``python -m proxy`` / ``hos-search proxy``: serve the search API."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from catalog.commandline import DEFAULT_PROXY_PORT, CommandParser
from catalog.config import ConfigError
from catalog.errors import CatalogError
from catalog.logs import configure_logging
from proxy.engine import check_engine_access
from proxy.errors import ProxyError
from proxy.server import check_port_free, serve_worker, supervise
from proxy.settings import ProxySettings


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="hos-search proxy", description="serve the search API")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PROXY_PORT, help=f"port (default {DEFAULT_PROXY_PORT})")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes sharing the port (default: one per CPU)"
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set for supervised workers
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"hos-search proxy: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"hos-search proxy: --workers {args.workers} must be at least 1", file=sys.stderr)
        return 2
    try:
        configure_logging(os.environ)
        settings = ProxySettings.from_env(os.environ)
        if not args.reuse_port:
            check_port_free(args.host, args.port)
            # A refused key or an unverifiable certificate stops the proxy now, naming the setting,
            # rather than leaving it up and degraded for a reason only a restart can fix (a
            # supervised worker skips it: its supervisor checked).
            engine = settings.elasticsearch_node
            asyncio.run(check_engine_access(engine, settings.engine_access, settings.engine_timeout))
        # The internal /metrics listener is the supervisor's: it runs even for one worker.
        internal_metrics = settings.metrics_port != 0 and not args.reuse_port
        if args.workers > 1 or internal_metrics:
            metrics_at = (settings.metrics_host, settings.metrics_port) if settings.metrics_port else None
            return supervise(args.host, args.port, args.workers, metrics_at=metrics_at)
        serve_worker(settings, args.host, args.port, reuse_port=args.reuse_port)
    except ConfigError as exc:
        print(f"hos-search proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CatalogError, ProxyError) as exc:
        print(f"hos-search proxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
