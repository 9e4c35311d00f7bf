"""``hos-search dev``: the whole stack on one machine, for development.

Starts the embedded servers (or uses the ones the environment names), applies migrations,
loads the sample catalog, runs the indexer and the proxy as child processes, prints every
URL, and once a browse through the proxy finds the whole catalog, says "ready", optionally
writes the URLs to an env file, and waits. Ctrl-C or SIGTERM stops everything it
started, children first, then the servers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from catalog.connections import ServerUnreachable, connect_postgres
from catalog.engine import engine_info_from_root
from catalog.migrate import MigrationError, migrate
from devstack.servers import ServerError, free_port, port_is_open, wait_http
from devstack.stack import DevStack, StackUrls


async def _prepare_catalog(urls: StackUrls, products: int, seed: int) -> tuple[str, int]:
    """Migrate and seed; return what was done and how many products are searchable."""
    conn = await connect_postgres(urls.database_url)
    try:
        await migrate(conn)
        existing = await conn.fetchval("SELECT count(*) FROM products")
        if existing:
            message = f"catalog already holds {existing} products; not seeding"
        elif products == 0:
            message = "no sample products requested"
        else:
            from catalog.seed import seed_catalog

            result = await seed_catalog(conn, products, seed=seed)
            message = (
                f"seeded {result.products} products from {result.sellers} sellers "
                f"in {result.load_seconds + result.analyze_seconds:.1f} s (seed {result.seed})"
            )
        active = await conn.fetchval("SELECT count(*) FROM products WHERE status = 'active'")
        return message, int(active)
    finally:
        await conn.close()


def _engine_version(urls: StackUrls) -> str:
    """What an engine named by ELASTICSEARCH_NODE says it is, for the start-up lines."""
    try:
        with urllib.request.urlopen(urls.elasticsearch_node.split(",")[0], timeout=10) as response:
            info = engine_info_from_root(json.loads(response.read()))
    except (OSError, ValueError, AttributeError):
        return "not answering yet"
    return f"{info.distribution} {info.version or '?'}"


def _searchable_total(proxy_url: str) -> int | None:
    """How many products a browse through the proxy finds, or None while it cannot answer."""
    try:
        with urllib.request.urlopen(f"{proxy_url}/api/search?size=1", timeout=10) as response:
            return int(json.loads(response.read())["total"])
    except (OSError, ValueError, KeyError):
        return None  # 503 while the index is being built, or not listening yet


def _wait_for_catalog(
    proxy_url: str, expected: int, children: dict[str, subprocess.Popen[bytes]], stop: Callable[[], bool]
) -> bool:
    """Wait until a browse through the proxy finds the whole seeded catalog.

    "Ready" used to be printed as soon as the proxy answered /healthz, while the indexer was
    still building the index: a search sent right then got a 503. Progress is printed every
    ten seconds; a child that exits ends the wait.
    """
    started = last_report = time.monotonic()
    while not stop():
        total = _searchable_total(proxy_url)
        if total is not None and total >= expected:
            return True
        for name, proc in children.items():
            if proc.poll() is not None:
                print(f"hos-search dev: {name} exited with status {proc.returncode}", file=sys.stderr)
                return False
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            found = "no index yet" if total is None else f"{total} of {expected} searchable"
            print(f"indexing:  {found} after {last_report - started:.0f} s", flush=True)
        time.sleep(0.2)
    return False


def _child_commands(port: int) -> dict[str, list[str]]:
    """The long-running services of the stack, by name, each a ``python -m`` module."""
    commands: dict[str, list[str]] = {}
    root = Path(__file__).resolve().parent.parent
    if (root / "indexer" / "__main__.py").exists():
        commands["indexer"] = [sys.executable, "-m", "indexer", "--reindex-on-start"]
    if (root / "proxy" / "__main__.py").exists():
        commands["proxy"] = [
            sys.executable,
            "-m",
            "proxy",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
    return commands


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in children.items():
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            print(f"dev: {name} did not stop within 15 s; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def run_dev(env: dict[str, str], *, products: int, port: int, env_file: str | None, seed: int = 42) -> int:
    if port and port_is_open(port):
        print(
            f"hos-search dev: port {port} on 127.0.0.1 is already in use (choose another with --port)",
            file=sys.stderr,
        )
        return 1
    port = port or free_port()
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stack = DevStack(env)
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        urls = stack.start()
        engine = stack.servers.get("engine")
        print(
            f"postgres:  {urls.database_url}\nredis:     {urls.redis_url}\n"
            f"engine:    {urls.elasticsearch_node}  ({engine.version if engine else _engine_version(urls)})",
            flush=True,
        )
        message, active = asyncio.run(_prepare_catalog(urls, products, seed))
        print(f"catalog:   {message}", flush=True)
        metrics_port = free_port()
        # One replica would leave a single-node dev engine yellow forever; a dev cluster gets one.
        replicas = "1" if len(stack.engine_nodes()) > 1 else "0"
        child_env = {
            **env,
            **urls.as_env(),
            "INDEXER_METRICS_PORT": str(metrics_port),
            "SEARCH_INDEX_REPLICAS": replicas,
        }
        for name, command in _child_commands(port).items():
            children[name] = subprocess.Popen(command, env=child_env, stdin=subprocess.DEVNULL)
        proxy_url = f"http://127.0.0.1:{port}"
        lines = {**urls.as_env()}
        if "proxy" in children:
            if not wait_http(f"{proxy_url}/healthz", children["proxy"], 60):
                print("hos-search dev: the proxy did not start; see its output above", file=sys.stderr)
                return 1
            if "indexer" in children and not _wait_for_catalog(proxy_url, active, children, lambda: stop_requested):
                return 0 if stop_requested else 1
            lines["PROXY_URL"] = proxy_url
            print(f"proxy:     {proxy_url}  (try {proxy_url}/api/search?q=hary+poter)", flush=True)
            print(f"page:      {proxy_url}/  (the storefront search page)", flush=True)
            print(
                f"metrics:   {proxy_url}/metrics (proxy), http://127.0.0.1:{metrics_port}/metrics (indexer)", flush=True
            )
        if env_file:
            Path(env_file).write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
            print(f"env file:  {env_file}", flush=True)
        print("ready — Ctrl-C stops everything", flush=True)
        while not stop_requested:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(
                        f"hos-search dev: {name} exited with status {proc.returncode}; stopping",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.2)
        return 0
    except (ServerError, ServerUnreachable, MigrationError) as exc:
        print(f"hos-search dev: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt cleanup
        _stop_children(children)
        stack.close()
