"""Which search engine the dev stack runs: the real OpenSearch node, or the light osmem imitation.

``DEV_ENGINE`` chooses (``opensearch`` or ``osmem``); unset, the real node runs wherever a JDK
(``java`` with ``javac``) and ``mvn`` are present and osmem elsewhere. ``DEV_ENGINE_HEAP`` sizes the node's JVM heap.
Ignored when ``ELASTICSEARCH_NODE`` names an engine: then nothing is started.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from devstack.opensearch import find_java_tools, parse_heap, start_opensearch
from devstack.servers import ServerError, ServerProcess, start_osmem

ENGINES = ("opensearch", "osmem")


def choose_engine(env: Mapping[str, str]) -> str:
    """The engine named by ``DEV_ENGINE``, or the best one this machine can run."""
    value = (env.get("DEV_ENGINE") or "").strip().lower()
    if not value:
        return "opensearch" if find_java_tools(dict(env)) is not None else "osmem"
    if value not in ENGINES:
        raise ServerError(f"DEV_ENGINE must be one of {', '.join(ENGINES)}, not {value!r}")
    return value


def start_engine(workdir: Path, env: Mapping[str, str]) -> ServerProcess:
    """Start the chosen engine under ``workdir``; bad settings raise one line naming the variable."""
    if choose_engine(env) == "osmem":
        return start_osmem(workdir)
    return start_opensearch(workdir, heap=parse_heap(env.get("DEV_ENGINE_HEAP")), env=dict(env))
