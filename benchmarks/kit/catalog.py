"""A bench's catalog: a dev stack with a seeded, indexed scratch catalog for one run, and its URLs.

``with bench_catalog("ratelimit", 2_000) as catalog:`` starts the dev stack (or uses the servers
named by the environment), seeds ``products`` into a scratch database, indexes them behind a
fresh alias, and on the way out stops every process put in ``catalog.children``, drops the
database and the index, removes ``catalog.workdir`` and stops the stack — also on an error or a
Ctrl-C. :func:`build_urls` draws the distinct search URLs a storefront would ask of that catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import asyncpg

from benchmarks.kit.processes import PROXY_STOP_S
from catalog.processes import stop_process
from devstack.catalogs import prepare_catalog, remove_catalog
from devstack.databases import ScratchDatabases
from devstack.stack import DevStack, StackUrls

ZIPF_URLS = 10_000  # distinct search URLs in the cache and stress benches' mix
ZIPF_S = 1.1  # their Zipf law's exponent: a few hot URLs, a long tail


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
            stop_process(children.pop(), PROXY_STOP_S)
        if dbs is not None and stack.urls is not None:
            asyncio.run(remove_catalog(dbs, stack.urls.elasticsearch_node, alias))
        shutil.rmtree(workdir, ignore_errors=True)
        stack.close()


_STOP_WORDS = frozenset({"the", "and", "for", "with", "from", "of", "pack", "set"})


async def build_urls(conn: asyncpg.Connection, count: int, seed: int) -> list[str]:
    """``count`` distinct search URLs from the catalog's vocabulary, in rank order (seeded).

    Each URL starts from a random active product, as a shopper who has something real in mind:
    one or two words of its name, or its fandom, as text, sometimes narrowed by its own fandom or
    category; or a browse page of its fandom and/or category. Then sometimes a sort, sometimes
    page 2. Filters taken from the same product keep strict matches the rule, as on a storefront
    (a search that matches nothing costs the proxy a second, relaxed engine request).
    """
    rows = await conn.fetch("SELECT name, fandom, category FROM products WHERE status = 'active' ORDER BY id")
    rng = random.Random(seed)
    seen: set[tuple[tuple[str, str], ...]] = set()
    urls: list[str] = []
    for _ in range(count * 50):  # bounded; 20,000 products give far more than enough
        if len(urls) >= count:
            break
        product = rng.choice(rows)
        words = [w for w in re.findall(r"[a-z]+", product["name"].lower()) if len(w) >= 3 and w not in _STOP_WORDS]
        params: list[tuple[str, str]] = []
        kind = rng.random()
        if kind < 0.45 and words:
            params.append(("q", rng.choice(words)))
        elif kind < 0.65 and len(words) >= 2:
            start = rng.randrange(len(words) - 1)
            params.append(("q", " ".join(words[start : start + 2])))
        elif kind < 0.75:
            params.append(("q", product["fandom"].lower()))
        if params:
            if kind < 0.65 and rng.random() < 0.15:
                params.append(("fandom", product["fandom"]))
            if rng.random() < 0.10:
                params.append(("category", product["category"]))
        elif kind < 0.9:  # browsing a fandom's page, sometimes one of its categories
            params.append(("fandom", product["fandom"]))
            if rng.random() < 0.3:
                params.append(("category", product["category"]))
        else:
            params.append(("category", product["category"]))
        if rng.random() < 0.2:  # never the default sort: that would be another spelling of one key
            text = any(k == "q" for k, _ in params)
            params.append(("sort", rng.choice(["price_asc", "price_desc", "rating"] + (["newest"] if text else []))))
        if rng.random() < 0.1:
            params.append(("page", "2"))
        canonical = tuple(sorted(params))
        if canonical in seen:
            continue
        seen.add(canonical)
        urls.append("/api/search?" + urlencode(params))
    rng.shuffle(urls)  # rank order
    return urls
