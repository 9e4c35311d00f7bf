"""Running the proxy: one worker process, or a supervisor of N workers sharing the port.

Each worker is a full aiohttp server on uvloop bound with ``SO_REUSEPORT``, so the kernel
spreads connections across them, with the cache's fast path (``proxy.fastpath``) in front of
its application. The supervisor starts the workers, restarts one that crashes (after
folding its metric files into the archive, ``proxy.metrics.archive_dead_worker``),
passes SIGHUP on to each (a worker then reloads its search synonyms), and on SIGTERM/SIGINT
asks each to stop: a worker stops accepting, lets in-flight requests
finish (bounded by ``shutdown_timeout_s``), then closes its pools.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import uvloop
from aiohttp import web

from proxy.app import create_app
from proxy.errors import ProxyError
from proxy.fastpath import install as install_fast_path
from proxy.metrics import archive_dead_worker
from proxy.settings import ProxySettings

log = logging.getLogger("hos_search.proxy")


class PortInUse(ProxyError):
    """The port is taken by another program; the message names it."""


def check_port_free(host: str, port: int) -> None:
    """Bind once without SO_REUSEPORT: another server on the port (even a reuse-port one) fails it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} on {host} is already in use (choose another with --port)") from None
            raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve_worker(settings: ProxySettings, host: str, port: int, *, reuse_port: bool) -> None:
    """Serve until SIGTERM/SIGINT; returns after a graceful shutdown."""
    # Until the app installs its SIGHUP handler (a synonym reload), a SIGHUP must not kill us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    uvloop.run(_serve(settings, host, port, reuse_port=reuse_port))


async def _serve(settings: ProxySettings, host: str, port: int, *, reuse_port: bool) -> None:
    """What ``web.run_app`` does, plus the fast path for cache hits in front of the app."""
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    runner = web.AppRunner(
        create_app(settings),
        access_log=access_log,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    try:
        install_fast_path(runner)
        await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
        await stop.wait()
    finally:
        # Stops accepting, lets in-flight requests finish (shutdown_timeout), closes the pools.
        await runner.cleanup()


def supervise(host: str, port: int, workers: int, extra_env: dict[str, str] | None = None) -> int:
    """Run ``workers`` worker processes on one port until told to stop; restart crashed ones."""
    metrics_dir = tempfile.mkdtemp(prefix="hos-proxy-metrics-")
    env = {**os.environ, **(extra_env or {}), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    command = [sys.executable, "-m", "proxy", "--host", host, "--port", str(port), "--workers", "1", "--reuse-port"]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: list[subprocess.Popen[bytes]] = []

    def reload(signum: int, frame: object) -> None:
        # SIGHUP reloads the search synonyms: every worker re-reads the file (proxy.app).
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, reload)
    children.extend(subprocess.Popen(command, env=env) for _ in range(workers))
    log.info("proxy supervisor: %d workers on %s:%d", workers, host, port)
    try:
        while not stopping:
            for i, child in enumerate(children):
                code = child.poll()
                if code is not None and not stopping:
                    log.error("proxy worker %d exited with status %s; restarting it", child.pid, code)
                    try:
                        # Its counters stay in the totals; its files would slow every scrape.
                        archive_dead_worker(metrics_dir, child.pid)
                    except (OSError, RuntimeError, ValueError):
                        log.exception("could not archive the metrics of proxy worker %d", child.pid)
                    time.sleep(1.0)  # a worker that dies at start must not spin the CPU
                    children[i] = subprocess.Popen(command, env=env)
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
