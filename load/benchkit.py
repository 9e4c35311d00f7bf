"""What the wrk benchmarks share: a dev stack with a seeded, indexed scratch catalog, for one run.

``with bench_catalog("ratelimit", 2_000) as catalog:`` starts the dev stack (or uses the servers
named by the environment), seeds ``products`` into a scratch database, indexes them behind a
fresh alias, and on the way out stops every process put in ``catalog.children``, drops the
database and the index, removes ``catalog.workdir`` and stops the stack — also on an error or a
Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devstack.databases import ScratchDatabases
from devstack.stack import DevStack, StackUrls
from load.bench_cache import _stop
from load.bench_proxy import cleanup, prepare_catalog


@dataclass
class BenchCatalog:
    urls: StackUrls
    database_url: str
    alias: str
    workdir: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def proxy_env(self, **extra: str) -> dict[str, str]:
        """The environment of a proxy serving this catalog (its own Redis key prefix), plus ``extra``."""
        return {
            **os.environ,
            **self.urls.as_env(),
            "DATABASE_URL": self.database_url,
            "SEARCH_INDEX": self.alias,
            "REDIS_KEY_PREFIX": f"{self.alias}:",
            "LOG_LEVEL": "warning",
            **extra,
        }


@contextlib.contextmanager
def bench_catalog(name: str, products: int) -> Iterator[BenchCatalog]:
    stack = DevStack(os.environ)
    dbs: ScratchDatabases | None = None
    alias: str | None = None
    workdir = Path(tempfile.mkdtemp(prefix=f"hos-bench-{name}-"))
    children: list[subprocess.Popen[bytes]] = []
    try:
        urls = stack.start()
        dbs = ScratchDatabases(urls.database_url)
        print(f"engine {urls.elasticsearch_node}; seeding and indexing {products:,} products…", flush=True)
        database_url, alias = asyncio.run(prepare_catalog(dbs, urls, products))
        yield BenchCatalog(urls, database_url, alias, workdir, children)
    finally:
        while children:
            _stop(children.pop())
        if dbs is not None and stack.urls is not None:
            asyncio.run(cleanup(dbs, stack.urls.elasticsearch_node, alias))
        shutil.rmtree(workdir, ignore_errors=True)
        stack.close()
