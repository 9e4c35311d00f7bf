"""Which search engine the dev stack runs: the real OpenSearch node, or the light osmem imitation.

``DEV_ENGINE`` chooses (``opensearch`` or ``osmem``); unset, the real node runs wherever a JDK
(``java`` with ``javac``) and ``mvn`` are present and osmem elsewhere. ``DEV_ENGINE_HEAP`` sizes
each node's JVM heap; ``DEV_ENGINE_NODES`` (default 1) starts that many OpenSearch processes
forming one cluster.
Ignored when ``ELASTICSEARCH_NODE`` names an engine: then nothing is started.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from devstack.opensearch import find_java_tools, parse_heap, start_opensearch_cluster
from devstack.servers import ServerError, ServerProcess, start_osmem

ENGINES = ("opensearch", "osmem")
# Each node is a JVM of DEV_ENGINE_HEAP: more than a handful on one machine is a mistake.
MAX_NODES = 9


def choose_engine(env: Mapping[str, str]) -> str:
    """The engine named by ``DEV_ENGINE``, or the best one this machine can run."""
    value = (env.get("DEV_ENGINE") or "").strip().lower()
    if not value:
        return "opensearch" if find_java_tools(dict(env)) is not None else "osmem"
    if value not in ENGINES:
        raise ServerError(f"DEV_ENGINE must be one of {', '.join(ENGINES)}, not {value!r}")
    return value


def engine_nodes(env: Mapping[str, str]) -> int:
    """How many engine processes ``DEV_ENGINE_NODES`` asks for (default 1)."""
    raw = (env.get("DEV_ENGINE_NODES") or "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_NODES:
        raise ServerError(f"DEV_ENGINE_NODES must be a whole number from 1 to {MAX_NODES}, not {raw!r}")
    return int(raw)


def start_engine(workdir: Path, env: Mapping[str, str]) -> list[ServerProcess]:
    """Start the chosen engine's nodes under ``workdir``; bad settings raise one line naming the variable."""
    nodes = engine_nodes(env)
    if choose_engine(env) == "osmem":
        if nodes != 1:
            raise ServerError("DEV_ENGINE_NODES above 1 needs DEV_ENGINE=opensearch (osmem is one process)")
        return [start_osmem(workdir)]
    return start_opensearch_cluster(workdir, nodes=nodes, heap=parse_heap(env.get("DEV_ENGINE_HEAP")), env=dict(env))
