"""``hos-search dev``: the whole stack on one machine, for development.

Starts the embedded servers (or uses the ones the environment names), applies migrations,
loads the sample catalog, runs the indexer and the proxy as child processes, prints every
URL, and once the engine serves the whole catalog (the search alias exists and a browse through
the proxy is answered by the engine, not the Postgres fallback, and finds every active product)
says "ready", optionally writes the URLs to an env file, and waits. Ctrl-C or SIGTERM stops
everything it started, children first, then the servers. Never imported by the services.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from catalog.config import ConfigError, search_index
from catalog.connections import ServerUnreachable, connect_postgres
from catalog.engine import engine_info_from_root
from catalog.migrate import MigrationError, migrate
from catalog.processes import stop_processes
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


# The proxy's X-Search-Backend value for an answer from the search engine (the HTTP API's
# contract); "postgres" is its fallback, which answers before the engine has an index.
ENGINE_BACKEND = "elasticsearch"


@dataclass(frozen=True)
class Browse:
    """What a browse through the proxy found, and which backend answered it."""

    backend: str
    total: int


def _browse(proxy_url: str) -> Browse | None:
    """A browse through the proxy, or None while it cannot answer."""
    try:
        with urllib.request.urlopen(f"{proxy_url}/api/search?size=1", timeout=10) as response:
            return Browse(response.headers.get("X-Search-Backend", ""), int(json.loads(response.read())["total"]))
    except (OSError, ValueError, KeyError):
        return None  # 503 while no backend answers, or not listening yet


def _alias_exists(engine_url: str, alias: str, env: Mapping[str, str]) -> bool:
    """Whether the engine has the search alias (the indexer creates it once the index is built).

    An engine the environment names may be secured: the credentials and CA the services use
    (``ELASTICSEARCH_API_KEY``, ``ELASTICSEARCH_USERNAME``/``_PASSWORD`` or the URL's own, and
    ``ELASTICSEARCH_CA_CERTS``) are used here too, or "ready" would never come.
    """
    parts = urlsplit(engine_url.split(",")[0].strip())  # a cluster's nodes share their aliases
    host = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(f"{parts.scheme}://{host}{parts.path.rstrip('/')}/_alias/{alias}")
    user, password = env.get("ELASTICSEARCH_USERNAME"), env.get("ELASTICSEARCH_PASSWORD")
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
    if env.get("ELASTICSEARCH_API_KEY"):
        request.add_header("Authorization", f"ApiKey {env['ELASTICSEARCH_API_KEY']}")
    elif user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=env.get("ELASTICSEARCH_CA_CERTS") or None)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status == 200
    except OSError:
        return False  # 404 until the alias exists


def engine_serves_catalog(browse: Browse | None, alias_exists: bool, expected: int) -> bool:
    """Ready means the engine answers: the alias exists, and a browse through the proxy is served
    by the engine and finds the whole catalog. The Postgres fallback finds the whole catalog at
    once, 4-7 s before the engine has its index, so a total alone said "ready" too early: 7 of 8
    searches in the next 8 s came back from Postgres (issue 20)."""
    return alias_exists and browse is not None and browse.backend == ENGINE_BACKEND and browse.total >= expected


def _progress(browse: Browse | None, alias_exists: bool, expected: int) -> str:
    if not alias_exists:
        return "the engine has no index yet" + ("" if browse is None else f" ({browse.backend} answers meanwhile)")
    if browse is None:
        return "the proxy does not answer yet"
    return f"{browse.total} of {expected} searchable ({browse.backend} answers)"


def _wait_for_catalog(
    proxy_url: str,
    engine_url: str,
    alias: str,
    env: Mapping[str, str],
    expected: int,
    children: dict[str, subprocess.Popen[bytes]],
    stop: Callable[[], bool],
) -> bool:
    """Wait until the engine serves the whole seeded catalog through the proxy
    (:func:`engine_serves_catalog`). Progress is printed every ten seconds; a child that exits
    ends the wait."""
    started = last_report = time.monotonic()
    while not stop():
        exists = _alias_exists(engine_url, alias, env)
        browse = _browse(proxy_url) if exists else None
        if engine_serves_catalog(browse, exists, expected):
            return True
        for name, proc in children.items():
            if proc.poll() is not None:
                print(f"hos-search dev: {name} exited with status {proc.returncode}", file=sys.stderr)
                return False
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            print(f"indexing:  {_progress(browse, exists, expected)} after {last_report - started:.0f} s", flush=True)
        time.sleep(0.2)
    return False


def _child_commands(port: int, workers: int = 1) -> dict[str, list[str]]:
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
            str(workers),
        ]
    return commands


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    names = {proc.pid: name for name, proc in children.items()}

    def killing(proc: subprocess.Popen[bytes]) -> None:
        print(f"dev: {names[proc.pid]} did not stop within 15 s; killing it", file=sys.stderr)

    stop_processes(list(children.values()), 15, on_kill=killing)


def run_dev(
    env: dict[str, str], *, products: int, port: int, env_file: str | None, seed: int = 42, workers: int = 1
) -> int:
    if port and port_is_open(port):
        print(
            f"hos-search dev: port {port} on 127.0.0.1 is already in use (choose another with --port)",
            file=sys.stderr,
        )
        return 1
    try:
        alias = search_index(env)  # before any server starts: a bad name is one line, nothing to stop
    except ConfigError as exc:
        print(f"hos-search dev: {exc}", file=sys.stderr)
        return 2
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
        for name, command in _child_commands(port, workers).items():
            children[name] = subprocess.Popen(command, env=child_env, stdin=subprocess.DEVNULL)
        proxy_url = f"http://127.0.0.1:{port}"
        lines = {**urls.as_env()}
        if "proxy" in children:
            if not wait_http(f"{proxy_url}/healthz", children["proxy"], 60):
                print("hos-search dev: the proxy did not start; see its output above", file=sys.stderr)
                return 1
            if "indexer" in children and not _wait_for_catalog(
                proxy_url, urls.elasticsearch_node, alias, env, active, children, lambda: stop_requested
            ):
                return 0 if stop_requested else 1
            lines["PROXY_URL"] = proxy_url
            print(f"proxy:     {proxy_url}  (try {proxy_url}/api/search?q=hary+poter)", flush=True)
            print(f"page:      {proxy_url}/  (the storefront search page)", flush=True)
            print(
                f"metrics:   {proxy_url}/metrics (proxy), http://127.0.0.1:{metrics_port}/metrics (indexer)", flush=True
            )
        if env_file:
            # Whole or absent: its appearance is the signal a waiting tool reads (hos_search.dev_process).
            partial = Path(f"{env_file}.partial")
            partial.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
            partial.replace(env_file)
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
