"""The dev stack as the benches use it: the one door from ``benchmarks`` to ``devstack``.

ARCHITECTURE.md: benchmarks import only their kit, and the kit may use ``devstack``. The benches
that start servers of their own (a stack, a Postgres, an OpenSearch cluster, a free port) take
them from here, so a change to ``devstack`` is met in the kit, never in each bench
(``tests/test_imports.py`` holds every bench to it).
"""

from __future__ import annotations

from devstack.catalogs import prepare_catalog, remove_catalog, scratch_indexer_settings
from devstack.databases import ScratchDatabases
from devstack.opensearch import parse_heap, restart_opensearch, start_opensearch_cluster
from devstack.servers import RedisClusterServers, ServerProcess, free_port, start_postgres, wait_http
from devstack.stack import DevStack, StackUrls

__all__ = [
    "DevStack",
    "RedisClusterServers",
    "ScratchDatabases",
    "ServerProcess",
    "StackUrls",
    "free_port",
    "parse_heap",
    "prepare_catalog",
    "remove_catalog",
    "restart_opensearch",
    "scratch_indexer_settings",
    "start_opensearch_cluster",
    "start_postgres",
    "wait_http",
]
