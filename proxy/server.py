"""Running the proxy: one worker process, or a supervisor of N workers sharing the port.

Each worker is a full aiohttp server on uvloop bound with ``SO_REUSEPORT``, so the kernel
spreads connections across them, with the cache's fast path (``proxy.fastpath``) in front of
its application. The supervisor starts the workers, restarts one that crashes (after
folding its metric files into the archive, ``proxy.metrics.archive_dead_worker``; later each
time it dies young again, ``proxy.restarts``),
passes SIGHUP on to each (a worker then reloads its search synonyms), and on SIGTERM/SIGINT
asks each to stop: a worker stops accepting, lets in-flight requests
finish (bounded by ``shutdown_timeout_s``), then closes its pools.

With ``METRICS_PORT`` set, ``/metrics`` leaves the public listener (404 there) for an internal
one served by the supervisor (on ``METRICS_HOST``, default 127.0.0.1): it reads every worker's
metric files, so it aggregates them all and outlives any one worker. The proxy then always runs
under the supervisor, even with one worker. The internal listener answers the probes too,
``/healthz`` and ``/readyz``, by asking a worker over loopback (:data:`PROBE_TIMEOUT_S`) and
passing its answer on, so that Kubernetes' probes and Prometheus need only the internal port
(issue 23: the manifests had both on the public one). Each worker reuses its readiness check
for ``READYZ_CACHE_MS`` (``proxy.readiness``), so probes cost the engine at most one call a
second per worker whichever listener they come to.
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
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import uvloop
from aiohttp import web

from catalog.processes import stop_processes
from proxy.app import create_app
from proxy.connections import install as limit_connections
from proxy.connections import server_options
from proxy.errors import ProxyError
from proxy.fastpath import install as install_fast_path
from proxy.http_caching import NO_STORE
from proxy.metrics import CONTENT_TYPE, archive_dead_worker, multiprocess_exposition
from proxy.restarts import RestartBackoff
from proxy.settings import ProxySettings

log = logging.getLogger("hos_search.proxy")


class PortInUse(ProxyError):
    """The port is taken by another program; the message names it."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port_free(host: str, port: int) -> None:
    """Bind once without SO_REUSEPORT: another server on the port (even a reuse-port one) fails it."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} on {host} is already in use (choose another with --port)") from None
            raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve_worker(settings: ProxySettings, host: str, port: int, *, reuse_port: bool) -> None:
    """Serve until SIGTERM/SIGINT; returns after a graceful shutdown."""
    # Until the app installs its SIGHUP handler (a synonym reload), a SIGHUP must not kill us:
    # blocked, not ignored, so one sent meanwhile waits and is handled then (proxy.app). A
    # supervised worker starts with it blocked already (supervise: _spawn_worker).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    uvloop.run(_serve(settings, host, port, reuse_port=reuse_port))


async def _serve(settings: ProxySettings, host: str, port: int, *, reuse_port: bool) -> None:
    """What ``web.run_app`` does, plus the fast path for cache hits in front of the app."""
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    runner = web.AppRunner(
        create_app(settings),
        access_log=access_log,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_s,
        **server_options(settings.http_keepalive_timeout_s),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    try:
        install_fast_path(runner)
        limit_connections(
            runner, header_timeout_s=settings.http_header_timeout_s, max_connections=settings.http_max_connections
        )
        await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
        await stop.wait()
    finally:
        # Stops accepting, lets in-flight requests finish (shutdown_timeout), closes the pools.
        await runner.cleanup()


# Kubernetes' probe timeout is 1 s by default; a worker answers /readyz within 0.8 s.
PROBE_TIMEOUT_S = 2.0
PROBE_PATHS = ("/healthz", "/readyz")


class MetricsListener(ThreadingHTTPServer):
    """The internal ``/metrics`` listener (``METRICS_PORT``): every worker's values, from the
    multiprocess directory; ``/healthz`` and ``/readyz`` as a worker answers them on
    ``workers_url``; anything else is a 404. Runs in a thread of the supervisor."""

    daemon_threads = True

    def __init__(self, host: str, port: int, directory: str, workers_url: str | None = None) -> None:
        self.address_family = _family(host)
        self.directory = directory
        self.workers_url = workers_url
        try:
            super().__init__((host, port), _MetricsHandler)
        except OSError as exc:
            raise PortInUse(f"METRICS_PORT: cannot listen on {host}:{port}: {exc.strerror}") from None

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="metrics-listener", daemon=True)
        thread.start()
        return thread


class _MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsListener

    def do_GET(self) -> None:  # the name http.server dispatches GET to
        path = self.path.split("?", 1)[0]
        if path in PROBE_PATHS and self.server.workers_url is not None:
            self._answer(*_ask_a_worker(self.server.workers_url + path))
            return
        if path != "/metrics":
            self._answer(404, b"not found\n", "text/plain; charset=utf-8")
            return
        self._answer(200, multiprocess_exposition(self.server.directory), CONTENT_TYPE)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", NO_STORE)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds is not news


def _ask_a_worker(url: str) -> tuple[int, bytes, str]:
    """A worker's answer to a probe (status, body, content type); 503 when none answers in time."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "application/json")
    except urllib.error.HTTPError as answer:  # 503 from /readyz: an answer, passed on
        return answer.code, answer.read(), answer.headers.get("Content-Type", "application/json")
    except (OSError, TimeoutError):
        return 503, b'{"status":"unavailable"}', "application/json"


def _loopback_url(host: str, port: int) -> str:
    """How the supervisor reaches its workers: their address, or loopback when they take any."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(slots=True)
class WorkerSlot:
    """One of the supervisor's workers: its process (None while its restart waits until
    ``due``) and the backoff between its restarts."""

    process: subprocess.Popen[bytes] | None = None
    due: float = 0.0
    backoff: RestartBackoff = field(default_factory=RestartBackoff)

    def start(self, process: subprocess.Popen[bytes], now: float) -> None:
        self.process = process
        self.backoff.started(now)

    def exited(self, now: float, code: int) -> float:
        """Its process exited with ``code`` (negative: a signal) at ``now``: the delay before the next."""
        delay = self.backoff.exited(now, by_signal=code < 0)
        self.process, self.due = None, now + delay
        return delay


def supervise(
    host: str,
    port: int,
    workers: int,
    extra_env: dict[str, str] | None = None,
    *,
    metrics_at: tuple[str, int] | None = None,
) -> int:
    """Run ``workers`` worker processes on one port until told to stop; restart crashed ones.

    ``metrics_at``: the (host, port) of the internal ``/metrics`` listener, if any.
    """
    metrics_dir = tempfile.mkdtemp(prefix="hos-proxy-metrics-")
    try:
        listener = MetricsListener(*metrics_at, metrics_dir, _loopback_url(host, port)) if metrics_at else None
    except PortInUse:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    env = {**os.environ, **(extra_env or {}), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    command = [sys.executable, "-m", "proxy", "--host", host, "--port", str(port), "--workers", "1", "--reuse-port"]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    slots = [WorkerSlot() for _ in range(workers)]

    def reload(signum: int, frame: object) -> None:
        # SIGHUP reloads the search synonyms: every worker re-reads the file (proxy.app).
        for slot in slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, reload)

    def _spawn_worker() -> subprocess.Popen[bytes]:
        # The worker starts with SIGHUP blocked (a signal mask survives fork and exec): one
        # forwarded while it is still importing waits until its handler is in place. Ignored only
        # from its own first line, a worker still starting was killed by a reload's SIGHUP, and
        # its replacement, started after the synonym file had been broken, could not start at
        # all (tests/test_relevance_synonyms.py, on a busy CI machine).
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            return subprocess.Popen(command, env=env)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)

    started = time.monotonic()
    for slot in slots:
        slot.start(_spawn_worker(), started)
    log.info("proxy supervisor: %d workers on %s:%d", workers, host, port)
    if listener is not None:
        listener.start()
        log.info("proxy metrics on http://%s:%d/metrics (internal listener)", *listener.server_address[:2])
    try:
        while not stopping:
            for slot in slots:
                now = time.monotonic()
                child = slot.process
                if child is None:
                    if now >= slot.due and not stopping:
                        slot.start(_spawn_worker(), now)
                    continue
                code = child.poll()
                if code is not None and not stopping:
                    # Doubling while it keeps dying young (proxy.restarts): a worker that cannot
                    # start was restarted every second, for as long as nobody looked.
                    delay = slot.exited(now, code)
                    log.error("proxy worker %d exited with status %s; restarting it in %.0f s", child.pid, code, delay)
                    try:
                        # Its counters stay in the totals; its files would slow every scrape.
                        archive_dead_worker(metrics_dir, child.pid)
                    except (OSError, RuntimeError, ValueError):
                        log.exception("could not archive the metrics of proxy worker %d", child.pid)
            time.sleep(0.2)
    finally:
        # Each worker shuts down gracefully, or is killed.
        stop_processes([slot.process for slot in slots if slot.process is not None], 30)
        if listener is not None:
            listener.shutdown()
            listener.server_close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
