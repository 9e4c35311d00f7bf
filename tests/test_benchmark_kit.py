"""The benchmarks' kit: the one percentile (nearest rank, a stated answer for no samples), the
report's rule for a busy machine, CPU read from /proc, the call counter, the bare forwarder and
the Go one, and the Go hit server with the rate limiter (real servers: a stdlib HTTP engine, the
forwarder's own process, a real Redis, the proxy's own Limiter beside the Go one; the Go binary
built with the installed ``go``)."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from benchmarks.kit.counting import Calls, counting
from benchmarks.kit.forwarder import (
    build_go_forwarder,
    request_target,
    start_forwarder,
    start_go_forwarder,
    write_bodies,
)
from benchmarks.kit.gohits import start_go_hits, write_hit_plan
from benchmarks.kit.percentile import percentile
from benchmarks.kit.processes import (
    HOT_URL,
    core_times,
    cores_used_outside,
    listening_pids,
    pin_trees,
    tree_cpu_seconds,
    tree_sched_times,
)
from benchmarks.kit.profiling import OTHER, summarise
from benchmarks.kit.results import NOT_CLAIMED, busy, verdict_of
from benchmarks.kit.stack import free_port
from benchmarks.kit.streams import lag_recovery
from catalog.processes import stop_process
from catalog.redis_client import open_redis
from devstack.servers import start_redis
from proxy.cache.keys import digest, storage_key
from proxy.middleware.ratelimit import admission_headers
from proxy.ratelimit.bucket import Bucket, Decision, take
from proxy.ratelimit.costs import cost_of
from proxy.ratelimit.headers import rate_limit_headers
from proxy.ratelimit.identity import KeyLimit
from proxy.ratelimit.limiter import LEASE_SHARE, Limiter
from proxy.ratelimit.script import RedisBuckets, bucket_key
from proxy.settings import ProxySettings


def test_no_samples_give_nan_whatever_the_percentile() -> None:
    for pct in (0, 50, 99, 100):
        assert math.isnan(percentile([], pct))
    assert math.isnan(percentile([math.nan, math.nan], 50))


def test_one_sample_is_every_percentile() -> None:
    assert [percentile([7.0], p) for p in (0, 1, 50, 99, 100)] == [7.0] * 5


@pytest.mark.parametrize(
    ("pct", "expected"),
    [(0, 1.0), (10, 2.0), (50, 6.0), (90, 10.0), (99, 11.0), (100, 11.0)],
)
def test_the_answer_is_the_sample_nearest_the_rank_never_an_interpolation(pct: float, expected: float) -> None:
    samples = [float(v) for v in (11, 3, 7, 1, 9, 5, 2, 4, 6, 8, 10)]  # unsorted on purpose
    assert percentile(samples, pct) == expected


def test_nan_samples_are_left_out_and_input_is_not_reordered() -> None:
    samples = [3.0, math.nan, 1.0, 2.0]
    assert percentile(samples, 100) == 3.0
    assert percentile(samples, 0) == 1.0
    assert samples[:1] == [3.0]


def test_percentiles_outside_0_to_100_clamp_to_the_ends() -> None:
    assert percentile([1.0, 2.0, 3.0], -5) == 1.0
    assert percentile([1.0, 2.0, 3.0], 250) == 3.0


def test_a_generator_is_read_once() -> None:
    assert percentile((float(v) for v in range(101)), 95) == 95.0


# --- the report: no goal claimed from a busy machine ---------------------------------------------


def test_a_load_average_above_the_cores_is_a_busy_machine() -> None:
    assert busy((0.4, 1.9), cores=2) is False
    assert busy((2.0, 0.1), cores=2) is False  # at the core count: every core in use, none queued
    assert busy((0.5, 2.01), cores=2) is True
    assert busy((), cores=2) is False


def test_other_programs_cpu_as_a_bench_begins_makes_a_busy_machine_whatever_the_load_average() -> None:
    assert busy((0.3,), cores=2, outside_cores=[0.1, 0.5]) is False
    assert busy((0.3,), cores=2, outside_cores=[0.1, 0.51]) is True


def test_a_busy_run_claims_no_goal_it_reached_and_still_reports_a_miss() -> None:
    assert verdict_of(True, busy=False) == "yes" and verdict_of(True, busy=False, bold=True) == "**yes**"
    assert verdict_of(True, busy=True) == NOT_CLAIMED == verdict_of(True, busy=True, bold=True)
    assert verdict_of(False, busy=True) == "**NO**" == verdict_of(False, busy=False)
    assert verdict_of(None, busy=True) == "—"


def test_a_profile_counts_each_sample_once_by_its_innermost_known_part() -> None:
    raw = "\n".join(
        [
            # the proxy's handler inside aiohttp: the proxy's (innermost known frame)
            "Runner.run (asyncio/runners.py:118);start (aiohttp/web_protocol.py:1);handle (proxy/fastpath.py:52) 5",
            # a metric observed by the proxy: the metrics', not the proxy's
            "Runner.run (asyncio/runners.py:118);handle (proxy/fastpath.py:78);"
            "observe (prometheus_client/metrics.py:1) 3",
            # the C loop's own time, charged to the frame that runs it
            "run_app (aiohttp/web.py:502) 2",
            # a socket write under aiohttp
            "Runner.run (asyncio/runners.py:118);write_eof (aiohttp/web_response.py:1);"
            "_writelines (aiohttp/http_writer.py:116) 4",
            # nothing known: other
            "main (tool.py:1) 1",
            "",
            "not a stack line",
        ]
    )
    profile = summarise(raw, rate=100)
    assert profile.samples == 15
    assert profile.parts == {
        "the proxy's own code": 5,
        "metrics (prometheus_client)": 3,
        "event loop (uvloop/asyncio, C)": 2,
        "socket writes (aiohttp http_writer, asyncio streams)": 4,
        OTHER: 1,
    }
    assert profile.top(1) == [(5 / 15, "handle (proxy/fastpath.py:52)")]
    # 5 samples at 100 per second over 1,000 requests: 50 ms / 1,000 = 50 microseconds each
    assert profile.microseconds(5, 1_000) == pytest.approx(50.0)


def test_lag_recovery_reads_the_lag_around_a_kill() -> None:
    samples = [(0.0, 1.0), (1.0, 2.5), (2.0, 9.0), (3.0, 30.0), (4.0, 6.0), (5.0, 4.0), (6.0, 0.5)]
    assert lag_recovery(samples, killed=2.0) == {
        "lag_before_kill_max_s": 2.5,
        "lag_peak_s": 30.0,
        "lag_back_under_5s_after_s": 2.0,  # last at or over 5 s two seconds after the kill
    }
    assert lag_recovery(samples[:4], killed=2.0)["lag_back_under_5s_after_s"] is None  # never came back
    assert lag_recovery([(0.0, 1.0), (3.0, 0.0)], killed=2.0)["lag_back_under_5s_after_s"] == 0.0


def test_cpu_outside_a_process_tree_is_counted_and_inside_it_is_not() -> None:
    """Real processes: a CPU burner beside a sleeper is outside the sleeper's tree, not the burner's."""
    burn = [sys.executable, "-c", "import time\nend = time.monotonic() + 4\nwhile time.monotonic() < end: pass"]
    burner = subprocess.Popen(burn)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4)"])
    try:
        time.sleep(0.5)  # the burner is past its start-up
        # Read over one window, whatever else the machine runs counts for both roots alike: what
        # is outside the sleeper's tree and not outside the burner's is the burner, busy however
        # little of a shared core it gets (two windows apart, other programs' load on a busy CI
        # box moved by more than the burner's share).
        burned = tree_cpu_seconds(burner.pid)
        outside_sleeper, outside_burner = cores_used_outside(sleeper.pid, burner.pid, seconds=1.0)
        burned = tree_cpu_seconds(burner.pid) - burned
        # ``burned`` spans the window and the /proc scans around it: a little more than inside it.
        assert burned - 0.15 <= outside_sleeper - outside_burner <= burned + 0.02
        assert outside_sleeper - outside_burner > 0.05
    finally:
        for proc in (burner, sleeper):
            proc.kill()
            proc.wait()


def test_a_servers_cpu_counts_its_children_and_core_times_are_read_per_core() -> None:
    """Real processes: a parent that only waits, with a child that burns a second of CPU and
    then sleeps; the tree's CPU holds the child's second, the parent's own ticks do not."""
    child = "import time\nwhile time.process_time() < 1.0: pass\ntime.sleep(30)"
    spawn_child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    parent = subprocess.Popen([sys.executable, "-c", spawn_child], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while tree_cpu_seconds(parent.pid) < 0.9:
            assert time.monotonic() < deadline, "the child's CPU never showed in its parent's tree"
            time.sleep(0.1)
        with open(f"/proc/{parent.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        assert (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") < 0.5
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the child too
        parent.wait()
    one, every = core_times(0), core_times()
    assert 0 <= one.steal <= every.steal and 0 < one.busy < every.busy
    with pytest.raises(ValueError, match="cpu99999"):
        core_times(99999)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move a process between")
def test_a_tree_moves_to_a_cpu_whole_threads_and_children_and_its_time_on_a_cpu_is_read() -> None:
    """Real processes: a parent with a thread, and a child that burns CPU and then forks a
    grandchild after the move; every thread of all three ends on the chosen CPU (the grandchild
    by inheritance), and the tree's time running covers the child's burn."""
    grandchild = "import time; time.sleep(30)"
    child = (
        "import subprocess, sys, time\nwhile time.process_time() < 0.5: pass\n"
        "sys.stdin.readline()\n"
        f"subprocess.run([sys.executable, '-c', {grandchild!r}])"
    )
    parent_code = (
        "import subprocess, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        f"subprocess.run([sys.executable, '-c', {child!r}], stdin=sys.stdin)"
    )
    cpus = sorted(os.sched_getaffinity(0))
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdin=subprocess.PIPE, start_new_session=True)
    assert parent.stdin is not None
    try:
        deadline = time.monotonic() + 30
        while tree_sched_times(parent.pid).running < 0.5:
            assert time.monotonic() < deadline, "the child's burn never showed in the tree's time running"
            time.sleep(0.1)
        assert pin_trees([parent.pid], {cpus[1]}) >= 3  # the parent's two threads, the child
        parent.stdin.write(b"go\n")
        parent.stdin.flush()
        tasks: set[int] = set()
        while len(tasks) < 4:  # the parent's two threads, the child, the grandchild
            assert time.monotonic() < deadline, "the grandchild never started"
            pids = [parent.pid]
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/stat") as stat:
                            if int(stat.read().rsplit(")", 1)[1].split()[1]) in pids:
                                pids.append(int(pid))
                    except OSError:
                        continue
            tasks = {int(tid) for pid in pids for tid in os.listdir(f"/proc/{pid}/task")}
            time.sleep(0.05)
        assert {tid: os.sched_getaffinity(tid) for tid in tasks} == {tid: {cpus[1]} for tid in tasks}
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_the_process_listening_on_a_urls_port_is_found_and_none_for_a_port_nobody_holds() -> None:
    """Real processes: a server on a free port is found by its URL; a port closed again is not."""
    port, idle = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while (found := listening_pids([f"http://127.0.0.1:{port}/x", f"postgresql://u@127.0.0.1:{idle}/db"])) != [
            server.pid
        ]:
            assert time.monotonic() < deadline, f"found {found}, not the server {server.pid}"
            time.sleep(0.05)
        assert listening_pids([f"http://192.0.2.1:{port}/"]) == []  # another host's, on the same port
    finally:
        server.kill()
        server.wait()
    assert listening_pids([f"http://127.0.0.1:{port}/"]) == []


def test_calls_are_counted_per_request_between_the_signals_only(tmp_path: Path) -> None:
    """A real process under the counting launcher: lines sent before the count (and its imports)
    are not counted; the ten sent during it are, one ``marker()`` call each."""
    stats = tmp_path / "target.calls"
    command = [sys.executable, "-m", "benchmarks.kit.counting", str(stats), "-m", "tests.counting_target"]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    to_it, from_it = proc.stdin, proc.stdout
    assert to_it is not None and from_it is not None

    def ask(times: int) -> None:
        for _ in range(times):
            to_it.write("x\n")
            to_it.flush()
            assert from_it.readline() == "ok\n"

    try:
        ask(5)  # running, not counted
        with counting(proc.pid, stats):
            ask(10)
        calls = Calls.read(stats, 10)
    finally:
        proc.kill()
        proc.wait()
    assert calls.by_function["tests/counting_target.py:9(marker)"] == 1.0
    assert calls.total < 20  # a few reads and writes per line: no start-up, no imports
    assert calls.more_than(Calls(0.0, {}))[0][0] >= 1.0


# --- the bare forwarder (benchmarks.overhead's floor under a cache miss) ---------------------------


def _engine_answer(body: bytes) -> bytes:
    """What the test engine answers for ``body``: bytes no other body gets."""
    return b'{"answered":"' + hashlib.sha1(body).hexdigest().encode() + b'"}'


class _Engine(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the engine the forwarder's session pools

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = _engine_answer(body) if self.path == "/products/_search" else b"wrong path"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[str]:
    """A real HTTP engine on loopback answering each search body with :func:`_engine_answer`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/products/_search"
    finally:
        server.shutdown()
        server.server_close()


FORWARDED = [
    ("/api/search", [("q", "harry potter qqmiss1"), ("fandom", "Pokémon,One Piece")], b'{"query":{"a":1}}'),
    ("/api/search/suggestions", [("q", "har qqsugg1")], b'{"suggest":{"b":2}}'),
]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def go_forwarder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go forwarder, built once (a few seconds with Go's build cache warm)."""
    return build_go_forwarder(tmp_path_factory.mktemp("go"))


@pytest.mark.parametrize("kind", ["app", "low-level", "redis", "go", "go-redis"])
def test_the_forwarder_answers_the_engines_bytes_for_the_body_it_was_given(
    kind: str, engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each GET is forwarded as the engine body written for its target, and answered with the
    engine's bytes for that body; a target it was not given is a 404. With Redis, the miss's
    fill lands in Redis after the answer: the round trips were made. The Go forwarder alike."""
    bodies = tmp_path / "bodies.json"
    write_bodies(bodies, FORWARDED)
    targets = [request_target(path, params) for path, params, _ in FORWARDED]
    redis_server = start_redis(tmp_path / "redis") if kind.endswith("redis") else None
    try:
        redis_url = redis_server.url if redis_server is not None else None
        if kind.startswith("go"):
            binary = request.getfixturevalue("go_forwarder")  # built only when a Go case runs
            proc, base = start_go_forwarder(
                binary, bodies, engine, targets[0], redis_url=redis_url, prefix="t-forwarder:"
            )
        else:
            proc, base = start_forwarder(
                bodies, engine, targets[0], redis_url=redis_url, prefix="t-forwarder:", low_level=kind == "low-level"
            )
        try:
            for target, (_, _, body) in zip(targets, FORWARDED, strict=True):
                assert _get(base + target) == (200, _engine_answer(body))
            assert _get(base + "/api/search?q=never+written")[0] == 404
            if redis_server is not None:
                with redis.Redis.from_url(redis_server.url) as client:
                    key = storage_key("t-forwarder:", digest(targets[1]))
                    deadline = time.monotonic() + 10
                    while client.get(key) is None and time.monotonic() < deadline:
                        time.sleep(0.02)
                    assert client.get(key) == _engine_answer(FORWARDED[1][2])
                    assert client.exists(key.replace(":cache:", ":cache-fill:")) == 0  # the lock let go
        finally:
            stop_process(proc)
    finally:
        if redis_server is not None:
            redis_server.stop()


# --- the Go hit server with the rate limiter (benchmarks.ratelimit --go) ---------------------------

HIT_BODY = b'{"items":[{"id":1,"title":"wand"}],"total":1}'
HIT_HEADERS = [("Content-Type", "application/json; charset=utf-8"), ("ETag", '"w/1"'), ("X-Cache", "HIT")]
GO_CAPACITY, GO_PERIOD_MS = 1_000, 60_000
GO_CLIENTS = ["198.51.100.7", "198.51.100.8"]
REQUESTS_PER_CLIENT = 4


def _limited(redis_url: str) -> ProxySettings:
    return ProxySettings.from_env(
        {
            "REDIS_URL": redis_url,
            "RATE_LIMIT_ENABLED": "true",
            "RATE_LIMIT_MAX": str(GO_CAPACITY),
            "RATE_LIMIT_TTL": str(GO_PERIOD_MS),
            "TRUSTED_PROXIES": "127.0.0.1/32",
        }
    )


def _limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    names = rate_limit_headers("default", 1, 1, Decision(True, 0, 0, 0, Bucket(0.0, 0)))
    return {name: headers[name] for name in names if name in headers}


def _evalsha_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def _go_hit(url: str, client: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={} if client is None else {"X-Forwarded-For": client})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read(), dict(response.headers.items())


async def _python_limiter_headers(settings: ProxySettings, prefix: str, clients: list[str]) -> list[dict[str, str]]:
    """The rate-limit headers ``proxy.ratelimit``'s Limiter gives each request of ``clients``
    (their X-Forwarded-For, from 127.0.0.1), as the fast path asks it (leased, else admit)."""
    client = open_redis(settings.redis_url, cluster=False, max_connections=8)
    limiter = Limiter(
        RedisBuckets(client, prefix, settings.rate_limit_key_groups),
        default=KeyLimit(settings.rate_limit_max, settings.rate_limit_ttl_ms),
        keys={},
        trusted=settings.trusted_proxies,
        timeout=1.0,
        fallback="closed",
        ipv6_prefix=settings.rate_limit_ipv6_prefix,
    )
    cost = cost_of(settings.rate_limit_costs, "search")

    async def decide(request: web.Request) -> web.Response:
        admission = limiter.leased(request, cost) or await limiter.admit(request, cost)
        return web.Response(headers=admission_headers(admission))

    app = web.Application()
    app.router.add_get(HOT_URL.partition("?")[0], decide)
    answers = []
    try:
        async with TestClient(TestServer(app)) as http:
            for forwarded in clients:
                async with http.get(HOT_URL, headers={"X-Forwarded-For": forwarded}) as response:
                    answers.append(_limit_headers(response.headers))
    finally:
        await limiter.close()
        await client.aclose()
    return answers


def test_the_go_hit_server_limits_each_client_as_the_proxy_s_limiter_does(go_forwarder: Path, tmp_path: Path) -> None:
    """``benchmarks.ratelimit --go`` (issue 24): a client's first request to the Go hit server is
    one decision in Redis that leaves the bucket exactly as ``proxy.ratelimit.bucket.take`` does,
    lease included; its next ones are the lease's (no script call, the bucket untouched); every
    answer carries the headers ``proxy.ratelimit``'s Limiter gives the same requests. Without the
    limiter: the plan's bytes and headers, and no rate-limit headers."""
    server = start_redis(tmp_path / "redis")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        settings = _limited(server.url)
        plans = tmp_path / "off.json", tmp_path / "on.json"
        unlimited = ProxySettings.from_env({"RATE_LIMIT_ENABLED": "false"})
        write_hit_plan(plans[0], HOT_URL, HIT_BODY, HIT_HEADERS, unlimited)
        write_hit_plan(plans[1], HOT_URL, HIT_BODY, HIT_HEADERS, settings, prefix="t-go:")
        bases = []
        for plan, redis_url in zip(plans, (None, server.url), strict=True):
            proc, base = start_go_hits(go_forwarder, plan, HOT_URL, redis_url=redis_url)
            procs.append(proc)
            bases.append(base)
        off_base, on_base = bases

        status, body, headers = _go_hit(off_base + HOT_URL, GO_CLIENTS[0])
        assert (status, body) == (200, HIT_BODY)
        assert headers["ETag"] == '"w/1"' and headers["Content-Type"] == HIT_HEADERS[0][1]
        assert _limit_headers(headers) == {}

        cost = cost_of(settings.rate_limit_costs, "search")
        lease = GO_CAPACITY * LEASE_SHARE
        sequence = [client for client in GO_CLIENTS for _ in range(REQUESTS_PER_CLIENT)]
        go_headers = []
        with redis.Redis.from_url(server.url) as client:
            for forwarded in GO_CLIENTS:
                key = bucket_key("t-go:", "ip:" + forwarded, settings.rate_limit_key_groups)
                calls = _evalsha_calls(client)
                status, body, headers = _go_hit(on_base + HOT_URL, forwarded)
                assert (status, body) == (200, HIT_BODY)
                go_headers.append(_limit_headers(headers))
                assert _evalsha_calls(client) == calls + 1  # one decision in Redis
                bucket = client.hgetall(key)
                expected = take(None, int(bucket[b"ts"]), cost, GO_CAPACITY, GO_PERIOD_MS, lease)
                assert expected.leased == lease
                assert float(bucket[b"tokens"]) == expected.bucket.tokens == GO_CAPACITY - cost - lease
                for _ in range(REQUESTS_PER_CLIENT - 1):
                    status, body, headers = _go_hit(on_base + HOT_URL, forwarded)
                    assert (status, body) == (200, HIT_BODY)
                    go_headers.append(_limit_headers(headers))
                # Leased: no script call, and the bucket as the first request left it.
                assert _evalsha_calls(client) == calls + 1
                assert client.hgetall(key) == bucket
            python_headers = asyncio.run(_python_limiter_headers(settings, "t-py:", sequence))
            for forwarded in GO_CLIENTS:
                go_bucket, python_bucket = (
                    client.hget(bucket_key(prefix, "ip:" + forwarded, settings.rate_limit_key_groups), "tokens")
                    for prefix in ("t-go:", "t-py:")
                )
                assert go_bucket == python_bucket
        assert len(python_headers[0]) == 5
        assert go_headers == python_headers
        assert [h["X-RateLimit-Remaining"] for h in go_headers[:REQUESTS_PER_CLIENT]] == ["999", "998", "997", "996"]
    finally:
        for proc in procs:
            stop_process(proc)
        server.stop()
