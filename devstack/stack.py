"""The dev stack: the three servers the services need, embedded or taken from the environment.

Where ``DATABASE_URL``, ``REDIS_URL`` or ``ELASTICSEARCH_NODE`` is set, that server is used
as it is and nothing is started for it. Otherwise the embedded server is started under a work
directory (a fresh temporary one by default). With ``DEV_ENGINE_NODES=N`` the engine is N
processes (``servers["engine"]``, ``servers["engine-2"]``, …) and ``ELASTICSEARCH_NODE`` lists
every node's URL, comma-separated. :meth:`DevStack.close` stops what was started and
removes the work directory; a work directory left behind by a crashed run (its owner pid is
gone) is cleaned up at the next start. ``DEV_REDIS=cluster`` starts a Redis Cluster (3 primaries,
3 replicas) instead of one Redis; the URLs then say ``REDIS_CLUSTER=true``.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from devstack.engines import start_engine
from devstack.servers import (
    RedisClusterServers,
    ServerError,
    ServerProcess,
    start_postgres,
    start_redis,
    start_redis_cluster,
)

_WORKDIR_PREFIX = "hos-devstack-"


@dataclass(frozen=True)
class StackUrls:
    database_url: str
    redis_url: str
    elasticsearch_node: str
    redis_cluster: bool = False

    def as_env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "REDIS_CLUSTER": "true" if self.redis_cluster else "false",
            "ELASTICSEARCH_NODE": self.elasticsearch_node,
        }


def dev_redis(env: Mapping[str, str]) -> str:
    """``DEV_REDIS``: ``single`` (the default, one redis-server) or ``cluster`` (3 + 3 nodes)."""
    value = (env.get("DEV_REDIS") or "single").strip().lower()
    if value not in ("single", "cluster"):
        raise ServerError(f"DEV_REDIS must be single or cluster, not {value!r}")
    return value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_workdirs(base: Path) -> list[Path]:
    """Remove work directories whose owner died without cleaning up; kill their servers."""
    removed = []
    for workdir in base.glob(_WORKDIR_PREFIX + "*"):
        try:
            owner = int((workdir / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        for line in (workdir / "server.pids").read_text().split() if (workdir / "server.pids").exists() else []:
            pid = int(line)
            # Only a process whose command line names this work directory is ours to kill.
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(workdir).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)
        removed.append(workdir)
    return removed


class DevStack:
    """Starts the servers that the environment does not name; a context manager."""

    def __init__(self, env: Mapping[str, str] | None = None, *, base_dir: Path | None = None) -> None:
        self._env = dict(os.environ if env is None else env)
        self._base = base_dir or Path(tempfile.gettempdir())
        self.workdir: Path | None = None
        self.servers: dict[str, ServerProcess] = {}
        self.redis_cluster: RedisClusterServers | None = None
        self.urls: StackUrls | None = None

    def start(self) -> StackUrls:
        clean_stale_workdirs(self._base)
        self.workdir = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX, dir=self._base))
        (self.workdir / "owner.pid").write_text(str(os.getpid()))
        clustered = dev_redis(self._env) == "cluster" and not self._env.get("REDIS_URL")
        wanted: dict[str, tuple[str | None, Callable[[Path], ServerProcess | list[ServerProcess]]]] = {
            "postgres": (self._env.get("DATABASE_URL"), start_postgres),
            "redis": (self._env.get("REDIS_URL"), self._start_redis_cluster if clustered else start_redis),
            "engine": (self._env.get("ELASTICSEARCH_NODE"), self._start_engine),
        }
        urls: dict[str, str] = {}
        to_start = {name: starter for name, (url, starter) in wanted.items() if not url}
        for name, (url, _) in wanted.items():
            if url:
                urls[name] = url
        try:
            # Started one by one from this thread on purpose: each child's death signal fires
            # when the *thread* that forked it exits, so a worker thread would kill them early.
            errors = []
            for name, starter in to_start.items():
                try:
                    started = starter(self.workdir / name)
                    nodes = started if isinstance(started, list) else [started]
                    self.servers.update((server.name, server) for server in nodes)
                    urls[name] = ",".join(server.url for server in nodes)
                except ServerError as exc:
                    errors.append(str(exc))
                self._record_pids()
            if errors:
                raise ServerError("; ".join(errors))
        except BaseException:
            self.close()
            raise
        cluster_env = self._env.get("REDIS_CLUSTER", "").strip().lower() in ("1", "true", "yes", "on")
        self.urls = StackUrls(urls["postgres"], urls["redis"], urls["engine"], clustered or cluster_env)
        return self.urls

    def _start_redis_cluster(self, workdir: Path) -> ServerProcess:
        """The cluster's nodes; the first stands for all of them in ``servers`` (its URL lists all)."""
        self.redis_cluster = start_redis_cluster(workdir)
        first = self.redis_cluster.nodes[0]
        return ServerProcess("redis", self.redis_cluster.url, first.process, first.log_path)

    def _start_engine(self, workdir: Path) -> list[ServerProcess]:
        return start_engine(workdir, self._env)

    def engine_nodes(self) -> list[ServerProcess]:
        """The engine processes this stack started, node 1 first (none when the environment named one)."""
        return [server for name, server in self.servers.items() if name.split("-")[0] == "engine"]

    def _record_pids(self) -> None:
        assert self.workdir is not None
        (self.workdir / "server.pids").write_text("\n".join(str(p) for p in self.pids()))

    def pids(self) -> list[int]:
        nodes = self.redis_cluster.nodes if self.redis_cluster is not None else []
        return [server.pid for server in self.servers.values()] + [node.pid for node in nodes[1:]]

    def close(self) -> None:
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
            self.redis_cluster = None
        # Stop in parallel: Postgres's fast shutdown takes the longest.
        with ThreadPoolExecutor(max_workers=max(3, len(self.servers))) as pool:
            list(pool.map(lambda server: server.stop(), self.servers.values()))
        self.servers.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> StackUrls:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
