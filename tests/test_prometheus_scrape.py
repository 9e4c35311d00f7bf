"""A real Prometheus scraping a two-worker proxy and the indexer, as operators run them.

It proves what the rule tests (``promtool test rules``) cannot: both targets are up, the
repository's recording rules produce series from real scrapes, ``search_proxy_requests_total``
summed over the workers is exactly the number of requests sent, both expositions pass
``promtool check metrics``, and a scrape stays fast and reads a bounded number of files while
workers are killed and restarted (``proxy.metrics.archive_dead_worker``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp import ClientConnectorError, ClientSession, TCPConnector
from elasticsearch import AsyncElasticsearch
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from catalog.processes import stop_processes
from devstack.servers import free_port
from devstack.stack import StackUrls
from proxy.metrics import LATENCY_BUCKETS, ProxyMetrics, archive_dead_worker
from tests.conftest import SearchCatalog
from tests.indexer_support import (
    add_products,
    add_seller,
    eventually,
    index_matches_catalog,
    indexer_settings,
    settings_env,
)
from tests.proxy_support import proxy_env, spawn_proxy, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = PROMETHEUS.with_name("promtool")  # the same Debian package (scripts/install-test-tools installs it)
# The job names of prometheus/prometheus.yml: the alerts select on them (up{job="search-proxy"}).
PROXY_JOB, INDEXER_JOB = "search-proxy", "search-indexer"
# Requests the proxy counts that this test does not send itself: Prometheus's and this test's
# scrapes, and the start-up wait's health checks.
NOT_SENT = "/metrics|/healthz"
WORKER_KILLS = 20  # in pairs: both workers at once, ten times

needs_prometheus = pytest.mark.skipif(
    not PROMETHEUS.exists(), reason="/usr/bin/prometheus not installed (apt-get install prometheus)"
)

# (path, expected status, route label, status class): searches (repeated ones are L1 hits
# answered by proxy.fastpath, counted in batches), suggestions, a 400, two kinds of 404.
REQUESTS = [
    *[(f"/api/search?q={q}", 200, "/api/search", "2xx") for q in ("wand", "cloak", "wand", "scarf", "wand", "cloak")],
    ("/api/search?category=props&sort=price_asc", 200, "/api/search", "2xx"),
    *[(f"/api/search/suggestions?q={q}", 200, "/api/search/suggestions", "2xx") for q in ("wa", "har", "wa", "wa")],
    ("/api/search?page=0", 400, "/api/search", "4xx"),
    ("/api/search?sort=cheapest", 400, "/api/search", "4xx"),
    ("/api/products/999999999", 404, "/api/products/{id}", "4xx"),
    ("/api/nothing-here", 404, "unmatched", "4xx"),
]


# --- the processes -------------------------------------------------------------------------


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)


def _prometheus_config(tmp_path: Path, proxy: str, indexer: str) -> Path:
    """A config scraping both services every second, with a snapshot of the repository's rules
    (they are being edited; the names this test queries come from the same snapshot)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        (rules / path.name).write_text(path.read_text())
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules / "*.yml")],
        "scrape_configs": [
            {"job_name": PROXY_JOB, "static_configs": [{"targets": [proxy.removeprefix("http://")]}]},
            {"job_name": INDEXER_JOB, "static_configs": [{"targets": [indexer.removeprefix("http://")]}]},
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _recording_rules(rules: Path) -> dict[str, str]:
    """Recorded series name -> expression, from the rule files Prometheus loaded."""
    found = {}
    for path in sorted(rules.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.update({rule["record"]: rule["expr"] for rule in group["rules"] if "record" in rule})
    return found


def _worker_pids(supervisor: int) -> set[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text()
    return {int(pid) for pid in children.split()}


def _multiprocess_dir(tmpdir: Path) -> Path:
    """The supervisor's PROMETHEUS_MULTIPROC_DIR (``proxy.server.supervise``) under its TMPDIR."""
    (directory,) = tmpdir.glob("hos-proxy-metrics-*")
    return directory


def _db_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.db"))


def _pid_of(file_name: str) -> str:
    """The writer of a prometheus_client file: ``gauge_livesum_123.db`` -> ``123``."""
    return file_name.rsplit("_", 1)[1].removesuffix(".db")


# --- talking to Prometheus -----------------------------------------------------------------


class PrometheusApi:
    def __init__(self, session: ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def get(self, path: str, **params: str) -> Any:
        async with self._session.get(self._url + path, params=params) as response:
            body = await response.json()
            assert response.status == 200 and body["status"] == "success", body
            return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        return list((await self.get("/api/v1/query", query=expr))["result"])

    async def scalar(self, expr: str) -> float | None:
        """The value of a one-series query; None while it has no series."""
        result = await self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    async def target_health(self) -> dict[str, str]:
        targets = (await self.get("/api/v1/targets", state="active"))["activeTargets"]
        return {target["labels"]["job"]: target["health"] for target in targets}


async def _both_up(api: PrometheusApi) -> bool:
    return await api.target_health() == {PROXY_JOB: "up", INDEXER_JOB: "up"}


async def _counted(api: PrometheusApi) -> Counter[tuple[str, str]]:
    """search_proxy_requests_total as scraped, summed over the workers, by (route, status)."""
    result = await api.query(f'sum by (route, status) (search_proxy_requests_total{{route!~"{NOT_SENT}"}})')
    return Counter({(s["metric"]["route"], s["metric"]["status"]): int(float(s["value"][1])) for s in result})


# --- talking to the services ---------------------------------------------------------------


async def _send(session: ClientSession, base: str, sent: Counter[tuple[str, str]]) -> None:
    for path, status, route, status_class in REQUESTS:
        async with session.get(base + path) as response:
            await response.read()
            assert response.status == status, (path, response.status)
        sent[(route, status_class)] += 1


async def _scrape(session: ClientSession, url: str) -> tuple[str, float]:
    started = time.perf_counter()
    async with session.get(url + "/metrics") as response:
        body = await response.text()
        assert response.status == 200
    return body, time.perf_counter() - started


async def _scrape_time(session: ClientSession, url: str, times: int = 9) -> float:
    """The median of ``times`` scrapes (the median: one slow scrape on a busy machine is noise)."""
    return statistics.median([(await _scrape(session, url))[1] for _ in range(times)])


def _promtool_complaints(exposition: str) -> str:
    """What ``promtool check metrics`` says of ``exposition`` (read on stdin): "" when clean."""
    result = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30
    )
    output = result.stdout + result.stderr
    return f"exit {result.returncode}: {output}" if result.returncode or output else ""


_LAST_OUTBOX_SEQ = "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('search_outbox', 'seq')), 0)"


async def _change_products(db: asyncpg.Connection) -> int:
    """Commits the indexer streams (new products, price changes, one taken off sale): the number
    of outbox rows they wrote."""
    before = await db.fetchval(_LAST_OUTBOX_SEQ)
    seller = await add_seller(db, "Gringotts Goods")
    ids = await add_products(db, seller, 40, prefix="Scraped")
    await db.execute("UPDATE products SET price = price + 1 WHERE id = ANY($1::bigint[])", ids[:10])
    await db.execute("UPDATE products SET status = 'archived' WHERE id = $1", ids[-1])
    return int(await db.fetchval(_LAST_OUTBOX_SEQ) - before)


async def _kill_workers(
    session: ClientSession, base: str, supervisor: int, metrics_dir: Path, sent: Counter[tuple[str, str]]
) -> None:
    """SIGKILL both workers at once, ``WORKER_KILLS / 2`` times, each time after they counted
    requests, and wait for the supervisor to start both replacements (their files then exist)."""
    for round_ in range(WORKER_KILLS // 2):
        workers = _worker_pids(supervisor)
        assert len(workers) == 2, workers
        for _ in range(3):
            await _not_found(session, base)
            sent[("unmatched", "4xx")] += 1
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        await eventually(
            partial(_replacements, supervisor, metrics_dir, workers),
            timeout=20,
            what=f"workers {sorted(workers)} (round {round_ + 1}) replaced",
        )


async def _not_found(session: ClientSession, base: str) -> None:
    """A 404: never cached, so counted at once (not in a fast-path batch that a kill would lose).
    Retried while no worker listens yet: a refused connection reached no worker."""
    deadline = time.monotonic() + 15
    while True:
        try:
            async with session.get(base + "/api/nothing-here") as response:
                assert response.status == 404
                return
        except ClientConnectorError:
            assert time.monotonic() < deadline, "no proxy worker accepts connections"
            await asyncio.sleep(0.05)


async def _replacements(supervisor: int, metrics_dir: Path, dead: set[int]) -> set[int] | None:
    """The two workers started in place of ``dead`` ones, once their metric files exist; else None."""
    now = _worker_pids(supervisor)
    if len(now) != 2 or now & dead:
        return None
    return now if all((metrics_dir / f"counter_{pid}.db").exists() for pid in now) else None


# --- the tests -----------------------------------------------------------------------------


@needs_prometheus
async def test_prometheus_scrapes_exact_totals_and_records_rules_through_worker_restarts(
    search_catalog: SearchCatalog,
    stack_urls: StackUrls,
    database_url: str,
    index_alias: str,
    redis_prefix: str,
    db: asyncpg.Connection,
    engine: AsyncElasticsearch,
    tmp_path: Path,
) -> None:
    indexer_port = free_port()
    settings = indexer_settings(stack_urls, database_url, index_alias, redis_prefix, metrics_port=indexer_port)
    indexer_url = f"http://127.0.0.1:{indexer_port}"
    prometheus_url = f"http://127.0.0.1:{free_port()}"
    started: list[subprocess.Popen[Any]] = []
    try:
        indexer = _start(
            [sys.executable, "-m", "indexer"],
            {**os.environ, **settings_env(settings), "LOG_LEVEL": "warning"},
            tmp_path / "indexer.log",
        )
        started.append(indexer)
        # TMPDIR: the supervisor's multiprocess directory (mkdtemp) is then one this test can see.
        proxy, proxy_url = spawn_proxy(proxy_env(search_catalog, stack_urls, TMPDIR=str(tmp_path)), workers=2)
        started.append(proxy)
        config = _prometheus_config(tmp_path, proxy_url, indexer_url)
        prometheus = _start(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={prometheus_url.removeprefix('http://')}",
            ],
            dict(os.environ),
            tmp_path / "prometheus.log",
        )
        started.append(prometheus)
        await wait_healthy(proxy_url, proxy)
        metrics_dir = _multiprocess_dir(tmp_path)
        async with ClientSession() as session:
            api = PrometheusApi(session, prometheus_url)
            await eventually(lambda: _both_up(api), what="both targets up")

            # 1. Requests through the proxy, and catalog changes the indexer streams.
            sent: Counter[tuple[str, str]] = Counter()
            for _ in range(3):
                await _send(session, proxy_url, sent)
            # Changes after the first index is built are streamed (not part of a reindex).
            await eventually(lambda: engine.indices.exists_alias(name=index_alias), what="the indexer's first index")
            changed = await _change_products(db)
            await eventually(lambda: index_matches_catalog(engine, index_alias, db), what="changes indexed")

            # 2. Exactly those requests, as Prometheus scraped them (fast-path hits are added
            # within a second, so the totals are polled for; never more than sent).
            async def totals_match() -> bool:
                counted = await _counted(api)
                assert all(counted[key] <= sent[key] for key in counted), (counted, sent)
                return counted == sent

            await eventually(totals_match, timeout=15, what=f"scraped request totals equal to those sent ({sent})")
            total = await api.scalar(f'sum(search_proxy_requests_total{{route!~"{NOT_SENT}"}})')
            assert total == sum(sent.values()) == 3 * len(REQUESTS)

            assert changed == 40 + 10 + 1

            async def changes_scraped() -> bool:
                return await api.scalar("sum(search_indexer_changes_seen_total)") == changed

            await eventually(changes_scraped, timeout=15, what=f"{changed} outbox changes read, as scraped")
            assert (await api.scalar("sum(search_indexer_documents_indexed_total)") or 0) >= 39

            rules = _recording_rules(tmp_path / "rules")
            assert rules, "no recording rules in prometheus/rules/"

            async def rules_recorded() -> list[str]:
                """The rules with recorded series, once every rule whose expression has a value
                has them, and at least one rule over each service's metrics does; [] until then."""
                recorded = [name for name in rules if await api.query(name)]
                missing = [name for name in rules.keys() - recorded if await api.query(rules[name])]
                services = {
                    service for name in recorded for service in ("_proxy_", "_indexer_") if service in rules[name]
                }
                return recorded if not missing and len(services) == 2 else []

            await eventually(rules_recorded, timeout=20, what=f"recording rules evaluated ({sorted(rules)})")
            groups = (await api.get("/api/v1/rules"))["groups"]
            broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
            assert broken == []

            # 3. Both expositions pass promtool's lint.
            for url in (proxy_url, indexer_url):
                exposition, _ = await _scrape(session, url)
                assert _promtool_complaints(exposition) == "", url

            # 4. Workers killed and restarted: totals kept, files and scrape time bounded.
            files_before = _db_files(metrics_dir)
            scrape_before = await _scrape_time(session, proxy_url)
            # A fresh connection per request: a kept-alive one may lead to a killed worker.
            async with ClientSession(connector=TCPConnector(force_close=True)) as fresh:
                await _kill_workers(fresh, proxy_url, proxy.pid, metrics_dir, sent)
            await wait_healthy(proxy_url, proxy)
            scrape_after = await _scrape_time(session, proxy_url)
            files_after = _db_files(metrics_dir)
            live = {str(pid) for pid in _worker_pids(proxy.pid)}
            assert {_pid_of(name) for name in files_after} <= live | {"archive"}, files_after
            assert len(files_after) <= len(files_before) + 3, (files_before, files_after)
            assert {path.name for path in metrics_dir.iterdir()} - set(files_after) <= {"collect.lock"}
            # The files bound the scrape (above); its time only guards against a gross regression:
            # a few ms either way is a busy machine's noise (3 ms then 18 ms failed a full run).
            assert scrape_after < max(5 * scrape_before, 0.1) and scrape_after < 1.0, (scrape_before, scrape_after)

            await eventually(lambda: _both_up(api), what="both targets up after the restarts")
            await eventually(totals_match, timeout=15, what="totals kept through the restarts")
            # No scrape ever saw a total go down (Prometheus would have read a counter reset).
            assert await api.scalar("sum(resets(search_proxy_requests_total[5m]))") == 0
        # After all that, the supervisor still stops cleanly and removes its directory.
        stop_processes([proxy], 30)
        assert proxy.returncode == 0
        assert not metrics_dir.exists()
    finally:
        stop_processes(started, 30)


def _run_worker(directory: Path, script: str) -> None:
    """A short-lived process counting into ``directory`` as a proxy worker would, flushing its
    batched metrics when it stops (``proxy.app._metrics_flush``)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    prelude = "from proxy.metrics import ProxyMetrics\nm = ProxyMetrics()\n"
    subprocess.run(
        [sys.executable, "-c", prelude + script + "\nm.flush()\n"], cwd=ROOT, env=env, check=True, timeout=60
    )


def _collected(directory: Path) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """What a scrape of ``directory`` shows: by family type, {(sample name, labels): value}."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(directory))
    shown: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            shown.setdefault(family.type, {})[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return shown


def test_archiving_dead_workers_keeps_every_total_in_two_files(tmp_path: Path) -> None:
    count = "m.count_request('/api/search', 'GET', '2xx', {seconds})\nm.in_flight.inc()\n"
    for seconds in (0.003, 0.3, 3.0):
        _run_worker(tmp_path, count.format(seconds=seconds) + "m.count_request('/healthz', 'GET', '2xx', 0.001)\n")
    pids = {_pid_of(name) for name in _db_files(tmp_path)}
    assert len(pids) == 3
    before = _collected(tmp_path)
    for pid in pids:
        archive_dead_worker(str(tmp_path), int(pid))
    after = _collected(tmp_path)

    assert _db_files(tmp_path) == ["counter_archive.db", "histogram_archive.db"]
    # Live gauges leave with their process; counters and histograms add up as before.
    assert before.pop("gauge")[("search_proxy_requests_in_flight", ())] == 3
    assert "gauge" not in after
    assert after == before
    requests, durations = after["counter"], after["histogram"]
    assert (
        requests[("search_proxy_requests_total", (("method", "GET"), ("route", "/api/search"), ("status", "2xx")))] == 3
    )
    assert durations[("search_proxy_request_duration_seconds_count", (("route", "/api/search"),))] == 3
    assert durations[("search_proxy_request_duration_seconds_bucket", (("le", "0.5"), ("route", "/api/search")))] == 2


# Durations on both sides of every bucket bound, a bound itself, and past the last one, on two routes.
_OBSERVED = tuple(
    (("/api/search", "/healthz")[i % 3 == 0], seconds)
    for i, seconds in enumerate((0.0004, 0.001, 0.0011, 0.003, 0.02, 0.3, 0.3, 2.5, 7.0))
)
_DURATIONS = "search_proxy_request_duration_seconds"


def observe_through_proxy_metrics(metrics: ProxyMetrics) -> None:
    """``_OBSERVED`` through the application's path and the fast path in turn, with a flush
    in between (the next one adds only what is new)."""
    for i, (route, seconds) in enumerate(_OBSERVED):
        if i % 2:
            metrics.count_fast_hit(("search", route, "2xx", "elasticsearch"), seconds)
        else:
            metrics.count_request(route, "GET", "2xx", seconds)
        if i == 4:
            metrics.flush()


def observe_through_histogram(registry: CollectorRegistry | None = REGISTRY) -> None:
    """``_OBSERVED`` through what ``search_proxy_request_duration_seconds`` was until 2026-12-06:
    a prometheus_client Histogram."""
    histogram = Histogram(
        _DURATIONS,
        "Time from request received to response ready, by route template.",
        ["route"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for route, seconds in _OBSERVED:
        histogram.labels(route).observe(seconds)


def _samples(exposition: bytes, family: str) -> list[tuple[str, dict[str, str], float]]:
    (found,) = [f for f in text_string_to_metric_families(exposition.decode()) if f.name == family]
    return [(sample.name, sample.labels, sample.value) for sample in found.samples]


def test_request_durations_read_as_a_histogram_of_prometheus_client_would() -> None:
    metrics, reference = ProxyMetrics(), CollectorRegistry()
    observe_through_proxy_metrics(metrics)
    observe_through_histogram(reference)
    assert _samples(metrics.exposition(), _DURATIONS) == _samples(generate_latest(reference), _DURATIONS)
    # A _created series per route, as a Histogram's children have (its values are times: not compared).
    assert [s[1] for s in _samples(metrics.exposition(), _DURATIONS + "_created")] == [
        s[1] for s in _samples(generate_latest(reference), _DURATIONS + "_created")
    ]


def test_request_durations_of_several_workers_merge_as_a_histograms_would(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    from_here = "from tests.test_prometheus_scrape import "
    _run_worker(ours, from_here + "observe_through_proxy_metrics\nobserve_through_proxy_metrics(m)")
    _run_worker(theirs, from_here + "observe_through_histogram\nobserve_through_histogram()")

    expected = _collected(theirs)["histogram"]
    assert _collected(ours)["histogram"] == expected
    for pid in {_pid_of(name) for name in _db_files(ours)}:
        archive_dead_worker(str(ours), int(pid))
    assert _collected(ours)["histogram"] == expected
