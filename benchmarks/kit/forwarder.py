"""Bare aiohttp servers the benches hold the proxy against, and the floor under a cache miss.

:func:`serve` runs a handler on uvloop as a bare ``web.Application`` (GET routes) or as
aiohttp's low-level ``web.Server`` until SIGTERM (the cache bench's fixed-bytes anchors are served
by it too). This module, run as

    python -m benchmarks.kit.forwarder BODIES --search-url URL --port P
        [--redis URL [--redis-cluster] --prefix P] [--low-level]

is the **bare forwarder** (``benchmarks.overhead``, issue 24): the least any aiohttp proxy does on
a cache miss. For each GET it looks the request target up in BODIES (JSON: target -> the engine
body the proxy would send for it, :func:`write_bodies`), POSTs that body to the engine with one
shared ``aiohttp.ClientSession`` and answers the engine's bytes, unparsed (404 for a target it
was not given). With ``--redis`` it also makes a miss's two Redis round trips with redis-py as the
proxy makes them (``proxy.cache.l2``'s own scripts): the read-or-lock EVALSHA before the engine
call, the fill EVALSHA once the answer is sent. No parameters parsed, no query built, no answer
shaped, no metrics, no middleware: what is left is aiohttp's server and client (and redis-py), so
its added latency over the engine is the floor a proxy built on them cannot go under.

The **Go forwarder** (``benchmarks/kit/goforwarder/main.go``; :func:`build_go_forwarder`,
:func:`start_go_forwarder`) does the same with Go's net/http server and client and go-redis: the
floor a proxy that is not Python would stand on, measured beside the Python one. Its Redis round
trips run the scripts and keys of ``proxy.cache`` that :func:`write_plan` hands it (the Lua and the
key format stay defined once, in Python); one Redis only, no cluster. The same binary's ``hits``
mode serves a cache hit with the rate limiter done in Go (``benchmarks/kit/gohits.py``).

Never imports a bench; listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import orjson
import uvloop
from aiohttp import web
from yarl import URL

from benchmarks.kit.processes import free_port, spawn, start_server, wait_answering
from catalog.processes import stop_process
from catalog.redis_client import RedisClient, open_redis
from proxy.cache.keys import digest, fills_channel, lock_key, storage_key
from proxy.cache.l2 import FILL_SCRIPT, READ_OR_LOCK_SCRIPT
from proxy.http_caching import SentResponse

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
JSON_HEADERS = {"Content-Type": "application/json"}
# The proxy's defaults (CACHE_TTL_S 60, its lock and keep times) in the forwarder's script
# arguments: the same work in Redis, whatever the values.
YOUNG_S = 60.0
LOCK_MS = 5_000
KEEP_MS = 360_000


def serve(port: int, opened: Callable[[], AbstractAsyncContextManager[Handler]], paths: Sequence[str] = ()) -> None:
    """Serve the handler that ``opened()`` yields on 127.0.0.1:``port``, on uvloop, until SIGTERM
    or SIGINT: in a ``web.Application`` answering GETs of ``paths``, or, with no ``paths``, in
    aiohttp's low-level ``web.Server`` (every request, no routing). What ``opened`` holds
    (client sessions, pools) lives as long as the server."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with opened() as handler:
            runner: web.BaseRunner
            if paths:
                app = web.Application()
                for path in paths:
                    app.router.add_get(path, handler)
                runner = web.AppRunner(app, access_log=None)
            else:
                runner = web.ServerRunner(web.Server(handler), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await stop.wait()
            await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


def request_target(path: str, params: Sequence[tuple[str, str]]) -> str:
    """The request target aiohttp's client sends for ``path`` with ``params`` (what the
    forwarder reads as ``request.raw_path``)."""
    return URL(path).extend_query(list(params)).raw_path_qs


def write_bodies(file: Path, requests: Sequence[tuple[str, Sequence[tuple[str, str]], bytes]]) -> None:
    """The forwarder's BODIES: each request (path, params, engine body) by its target."""
    file.write_bytes(orjson.dumps({request_target(path, params): body.decode() for path, params, body in requests}))


@contextlib.asynccontextmanager
async def forwarding(
    bodies: dict[str, bytes], search_url: str, redis_url: str | None = None, *, cluster: bool = False, prefix: str = ""
) -> AsyncIterator[Handler]:
    """The forwarder's handler, with its one client session (and Redis client) open."""
    async with aiohttp.ClientSession() as session:
        if redis_url is None:
            yield _forward(bodies, search_url, session)
            return
        client = open_redis(redis_url, cluster=cluster, max_connections=8)
        writes: set[asyncio.Task[object]] = set()
        try:
            yield _forward_with_redis(bodies, search_url, session, client, prefix, writes)
            if writes:
                await asyncio.wait(writes, timeout=1.0)
        finally:
            await client.aclose()


def _forward(bodies: dict[str, bytes], search_url: str, session: aiohttp.ClientSession) -> Handler:
    async def forward(request: web.BaseRequest) -> web.StreamResponse:
        body = bodies.get(request.raw_path)
        if body is None:
            return web.Response(status=404)
        async with session.post(search_url, data=body, headers=JSON_HEADERS) as answer:
            data = await answer.read()
        return web.Response(body=data, content_type="application/json")

    return forward


def _forward_with_redis(
    bodies: dict[str, bytes],
    search_url: str,
    session: aiohttp.ClientSession,
    client: RedisClient,
    prefix: str,
    writes: set[asyncio.Task[object]],
) -> Handler:
    read_or_lock, fill = client.register_script(READ_OR_LOCK_SCRIPT), client.register_script(FILL_SCRIPT)
    channel = fills_channel(prefix)

    def write(keys: tuple[str, str], args: tuple[bytes | str | int | float, ...]) -> None:
        task = asyncio.ensure_future(fill(keys=keys, args=args))
        writes.add(task)
        task.add_done_callback(writes.discard)

    async def forward(request: web.BaseRequest) -> web.StreamResponse:
        body = bodies.get(request.raw_path)
        if body is None:
            return web.Response(status=404)
        key_digest = digest(request.raw_path)
        keys = (storage_key(prefix, key_digest), lock_key(prefix, key_digest))
        _entry, taken = await read_or_lock(keys=keys, args=(time.time() - YOUNG_S, LOCK_MS))
        async with session.post(search_url, data=body, headers=JSON_HEADERS) as answer:
            data = await answer.read()
        args = (data, KEEP_MS, 1 if taken == 1 else 0, channel, key_digest)
        # As the proxy's miss: the fill starts once the answer is sent (proxy.cache.response_cache).
        return SentResponse(body=data, content_type="application/json", sent=lambda: write(keys, args))

    return forward


def start_forwarder(
    bodies: Path,
    search_url: str,
    ready_target: str,
    *,
    redis_url: str | None = None,
    cluster: bool = False,
    prefix: str = "forwarder:",
    low_level: bool = False,
    counted_to: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """A forwarder in its own process (under the call counter with ``counted_to``) and its base
    URL, once it has forwarded ``ready_target`` (one of BODIES' targets)."""
    port = free_port()
    module = ["benchmarks.kit.forwarder", str(bodies), "--search-url", search_url, "--port", str(port)]
    if redis_url is not None:
        module += ["--redis", redis_url, "--prefix", prefix] + (["--redis-cluster"] if cluster else [])
    if low_level:
        module.append("--low-level")
    base = f"http://127.0.0.1:{port}"
    return start_server(module, base + ready_target, counted_to=counted_to, timeout=30), base


GO_SOURCE = Path(__file__).with_name("goforwarder")
GO_BUILD_TIMEOUT_S = 300  # a first build downloads go-redis from the module proxy: ~25 s here


class GoUnavailable(Exception):
    """No Go forwarder to time (no ``go`` on PATH, or ``go build`` failed): the bench goes on
    without its floors and says why."""


def build_go_forwarder(workdir: Path) -> Path:
    """The Go forwarder built into ``workdir``: its binary. Raises :class:`GoUnavailable` with a
    one-line reason."""
    go = shutil.which("go")
    if go is None:
        raise GoUnavailable("no `go` on PATH")
    binary = workdir / "goforwarder"
    # go.sum pins the modules; GOTOOLCHAIN=local: the installed Go, never a toolchain download.
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    command = [go, "build", "-o", str(binary), "."]
    try:
        built = subprocess.run(
            command, cwd=GO_SOURCE, env=env, capture_output=True, text=True, timeout=GO_BUILD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as timeout:
        raise GoUnavailable(f"go build took over {GO_BUILD_TIMEOUT_S} s") from timeout
    if built.returncode != 0:
        raise GoUnavailable("go build failed: " + (built.stderr.strip().splitlines() or ["(no output)"])[-1])
    return binary


def write_plan(file: Path, targets: Iterable[str], prefix: str) -> None:
    """What the Go forwarder's Redis round trips need, from ``proxy.cache``: both scripts' text,
    their constant arguments, the fills channel and each target's (storage key, lock key,
    digest) under ``prefix`` — the arguments this module's forwarder sends."""
    keys = {}
    for target in targets:
        key_digest = digest(target)
        keys[target] = [storage_key(prefix, key_digest), lock_key(prefix, key_digest), key_digest]
    plan = {
        "read_or_lock": READ_OR_LOCK_SCRIPT,
        "fill": FILL_SCRIPT,
        "young_s": YOUNG_S,
        "lock_ms": LOCK_MS,
        "keep_ms": KEEP_MS,
        "channel": fills_channel(prefix),
        "keys": keys,
    }
    file.write_bytes(orjson.dumps(plan))


def start_go_forwarder(
    binary: Path,
    bodies: Path,
    search_url: str,
    ready_target: str,
    *,
    redis_url: str | None = None,
    prefix: str = "goforwarder:",
) -> tuple[subprocess.Popen[bytes], str]:
    """The Go forwarder (:func:`build_go_forwarder`) in its own process and its base URL, once
    it has forwarded ``ready_target``; with ``redis_url``, making a miss's two Redis round trips
    (its plan written next to ``bodies``)."""
    port = free_port()
    command = [str(binary), "--search-url", search_url, "--port", str(port)]
    if redis_url is not None:
        plan = bodies.with_name(f"{bodies.stem}-plan.json")
        write_plan(plan, orjson.loads(bodies.read_bytes()), prefix)
        command += ["--redis", redis_url, "--plan", str(plan)]
    return started_go([*command, str(bodies)], port, ready_target)


def started_go(
    command: list[str], port: int, ready_target: str, env: dict[str, str] | None = None, cpu: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``command`` (a Go binary of :func:`build_go_forwarder`, listening on ``port``) spawned on
    ``cpu``, and its base URL once ``ready_target`` answers 200; stopped again if it does not."""
    proc = spawn(command, env, cpu)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_answering(base + ready_target, proc, timeout=30)
    except BaseException:
        stop_process(proc)
        raise
    return proc, base


# The proxy's two GET routes the forwarder's app answers (the bench's miss requests use both).
ROUTES = ("/api/search", "/api/search/suggestions")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.kit.forwarder", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("bodies", type=Path, help="JSON: request target -> engine body (write_bodies)")
    parser.add_argument("--search-url", required=True, help="the engine's POST <alias>/_search URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", help="also make a miss's two Redis round trips, on this Redis")
    parser.add_argument("--redis-cluster", action="store_true")
    parser.add_argument("--prefix", default="forwarder:", help="the Redis keys' prefix")
    parser.add_argument("--low-level", action="store_true", help="aiohttp's web.Server instead of web.Application")
    args = parser.parse_args(argv)
    bodies = {target: body.encode() for target, body in orjson.loads(args.bodies.read_bytes()).items()}
    serve(
        args.port,
        lambda: forwarding(bodies, args.search_url, args.redis, cluster=args.redis_cluster, prefix=args.prefix),
        () if args.low_level else ROUTES,
    )


if __name__ == "__main__":
    main()
