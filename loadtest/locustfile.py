"""Locust runner for loadtest/profiles/*.json: storefront sessions, judged by k6's rules at the end.

    make load PROFILE=smoke                      # dev stack, or PROXY_URL when set
    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8080 --load-profile average \\
        [--seed 1] [--out-dir loadtest/out]          # (env: LOAD_PROFILE, LOAD_SEED, LOAD_OUT)

Run from the repository root: Locust puts the working directory on the import path, which is how
this file finds the ``loadtest`` package (no path edits here).

``LOAD_API_KEY`` sends ``X-API-Key`` on every request (a staging key with a budget of its own).

Each iteration is one shopper's session (loadtest.traffic): typing a query into the
suggestions box letter by letter, searching, narrowing by a category or fandom from the facets
of the answer, paging, opening products and a seller — seeded per VU from ``--seed``, so two
runs send the same sessions. Requests are named ``search``, ``suggest``, ``product`` and
``seller`` (the ``name`` tag thresholds select with ``http_req_duration{name:search}``).

A :class:`ProfileShape` follows the profile's scenario: VUs by k6's ramping rules, or, for the
arrival-rate executors, an open model (loadtest.arrivals) with enough VUs, up to maxVUs;
iterations it could not start on time are ``dropped_iterations`` and failed
``arrival_rate_kept`` checks, with a warning. Thresholds are evaluated every 2 s when one has
``abortOnFail`` and once at the end; then ``summary.json`` (k6's summary data) and Locust's HTML
report go to the output directory, a one-screen summary is printed, and the exit code is 99
when a threshold failed or aborted the run (k6's), else 0. One Locust process: the samples k6's
percentiles need are kept here, so ``--processes`` and distributed runs are refused.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import gevent
import orjson
from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import LocalRunner

from loadtest.arrivals import ArrivalClock
from loadtest.metrics import Metrics, evaluate_thresholds, tags_of
from loadtest.profile import Profile, ProfileError, Scenario, load_profile
from loadtest.summary import RunInfo, build_summary, exit_code, render
from loadtest.traffic import (
    PAGE_SHARE,
    SELLER_SHARE,
    SORT_SHARE,
    Mulberry32,
    QueryMix,
    build_queries,
    draw_session,
    vu_seed,
)

log = logging.getLogger("load")
INVALID_CONFIG_EXIT = 104  # k6's exit code for options it refuses
SPAWN_RATE = 100.0  # users/s: the shape's steps should land within its 1 s tick
EVALUATE_EVERY_S = 2.0  # k6 evaluates thresholds every 2 s during a run
PROGRESS_EVERY_S = 10.0
MAX_RETRY_AFTER_S = 30
MAX_PROBE_REQUESTS = 10_000


class Run:
    """What the users, the shape and the event handlers share for one run (Locust builds users
    and shapes from classes, so it lives in ``RUN``, set in ``on_init``)."""

    def __init__(
        self, environment: Environment, profile: Profile, seed: int, out_dir: Path, api_key: str | None = None
    ) -> None:
        self.environment = environment
        # A partner key gets a budget of its own: every VU of a run is one client address.
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.profile = profile
        self.scenario: Scenario = profile.only_scenario()
        self.seed = seed
        self.out_dir = out_dir
        self.metrics = Metrics()
        self.mix = QueryMix.of(build_queries())
        self.clock = ArrivalClock(self.scenario.arrival_offsets()) if self.scenario.is_arrival_rate else None
        self.wanted_vus = self.scenario.pre_allocated_vus
        self.finished_vus = 0
        self._free_vus: list[int] = []
        self._next_vu = 1
        self._generators: dict[int, Mulberry32] = {}
        self._request_tags: dict[tuple[str, int, bool], tuple[tuple[str, str], ...]] = {}
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.aborted: str | None = None
        self.warned_rate = False
        self.greenlets: list[gevent.Greenlet] = []

    # VUs: numbered from 1 like k6's __VU; a stopped user's number (and generator) is reused.
    def take_vu(self) -> tuple[int, Mulberry32]:
        if self._free_vus:
            vu = heapq.heappop(self._free_vus)
        else:
            vu, self._next_vu = self._next_vu, self._next_vu + 1
        generator = self._generators.setdefault(vu, Mulberry32(vu_seed(self.seed, vu)))
        return vu, generator

    def release_vu(self, vu: int) -> None:
        heapq.heappush(self._free_vus, vu)

    def elapsed_ms(self) -> float:
        if self.started_at is None:
            return 0.0
        return ((self.stopped_at or time.monotonic()) - self.started_at) * 1000

    def record_request(self, name: str, status: int, expected: bool, duration_ms: float) -> None:
        tags = self._request_tags.get((name, status, expected))
        if tags is None:  # hot path: one tag tuple per (name, status, outcome), built once
            tags = self._request_tags[(name, status, expected)] = tags_of(
                {
                    "name": name,
                    "method": "GET",
                    "status": str(status),
                    "expected_response": "true" if expected else "false",
                    "scenario": self.scenario.name,
                }
            )
        self.metrics.add("http_reqs", 1, tags)
        self.metrics.add("http_req_duration", duration_ms, tags)
        self.metrics.add("http_req_failed", 0 if expected else 1, tags)

    def check(self, name: str, ok: bool) -> bool:
        self.metrics.add("checks", 1 if ok else 0, (("check", name), ("scenario", self.scenario.name)))
        return ok

    def take_ticket(self) -> float | None:
        """Seconds until this VU's next iteration starts (open model), or None when none is left."""
        assert self.clock is not None
        now = time.monotonic()
        due, dropped = self.clock.take(now)
        if dropped:
            self.metrics.add("dropped_iterations", dropped, (("scenario", self.scenario.name),))
            for _ in range(dropped):
                self.check("arrival_rate_kept", False)
            self.wanted_vus = min(self.scenario.max_vus, self.wanted_vus + dropped)
            if not self.warned_rate:
                self.warned_rate = True
                log.warning(
                    "could not keep the arrival rate: iterations were dropped with every VU busy "
                    "(VUs %d of maxVUs %d); the arrival_rate_kept check fails for each",
                    self.environment.runner.user_count if self.environment.runner else 0,
                    self.scenario.max_vus,
                )
        if due is None:
            return None
        self.check("arrival_rate_kept", True)
        return max(0.0, due - now)


RUN: Run | None = None


def _run() -> Run:
    assert RUN is not None, "the load profile was not loaded (see on_init)"
    return RUN


# --- the shopper -------------------------------------------------------------------------------

_UNSET = -1.0


class Shopper(FastHttpUser):
    """One k6 VU: runs the scenario's ``exec`` in a loop (paced by the arrival clock when open)."""

    def on_start(self) -> None:
        self.shared = _run()
        self.vu, self.rng = self.shared.take_vu()
        self.iterations = 0
        self.ticket = _UNSET

    def on_stop(self) -> None:
        self.shared.release_vu(self.vu)

    def wait_time(self) -> float:
        if self.shared.clock is None:
            return 0.0
        delay = self.shared.take_ticket()
        self.ticket = delay if delay is not None else math.inf
        return delay if delay is not None else 1.0

    @task
    def iteration(self) -> None:
        run = self.shared
        if run.clock is not None:
            if self.ticket == _UNSET:  # the first iteration: no wait_time before it
                delay = run.take_ticket()
                self.ticket = delay if delay is not None else math.inf
                gevent.sleep(delay or 0.0)
            if self.ticket == math.inf:
                return  # the schedule is over; idle until the shape ends the run
            self.ticket = _UNSET
        started = time.monotonic()
        if run.scenario.exec == "ratelimitProbe":
            self.ratelimit_probe()
        else:
            self.storefront()
        run.metrics.add("iterations", 1, (("scenario", run.scenario.name),))
        run.metrics.add("iteration_duration", (time.monotonic() - started) * 1000, (("scenario", run.scenario.name),))
        self.iterations += 1
        if run.scenario.executor == "per-vu-iterations" and self.iterations >= run.scenario.iterations:
            run.finished_vus += 1
            raise StopUser()

    # --- requests ----------------------------------------------------------------------------

    def get(self, name: str, path: str, params: dict[str, str] | None = None, also_expected: int = 0) -> Any:
        """GET, recorded with k6's metrics; ``http_req_failed`` unless 200–399 (or ``also_expected``)."""
        url = f"{path}?{urlencode(params)}" if params else path
        with self.client.get(url, name=name, headers=self.shared.headers, catch_response=True) as response:
            status = response.status_code or 0
            expected = 200 <= status < 400 or status == also_expected
            if expected:
                response.success()
            else:
                response.failure(f"HTTP {status}")
        self.shared.record_request(name, status, expected, response.request_meta["response_time"])
        return response

    def get_json(self, name: str, path: str, params: dict[str, str] | None = None) -> Any:
        response = self.get(name, path, params)
        if not self.shared.check(f"{name} status 200", response.status_code == 200):
            return None
        try:
            return orjson.loads(response.content or b"")
        except orjson.JSONDecodeError:
            self.shared.check(f"{name} answers JSON", False)
            return None

    def search(self, params: dict[str, str]) -> dict[str, Any] | None:
        answer = self.get_json("search", "/api/search", params)
        if answer is None:
            return None
        ok = isinstance(answer.get("items"), list) and isinstance(answer.get("facets"), dict)
        return answer if self.shared.check("search answers items and facets", ok) else None

    # --- what a VU does ----------------------------------------------------------------------

    def storefront(self) -> None:
        """One shopper's session, drawn up front (loadtest.traffic.draw_session)."""
        plan = draw_session(self.rng, self.shared.mix)
        scale = self.shared.profile.think_time_scale
        for prefix, delay in plan.keystrokes:
            gevent.sleep(delay * scale)
            self.get_json("suggest", "/api/search/suggestions", {"q": prefix})
        thinks = iter(plan.thinks)
        params = {"q": plan.query}
        answer = self.search(params)
        if answer is None:
            return
        facet = plan.facet(answer["facets"])
        if facet is not None:
            gevent.sleep(next(thinks) * scale)
            params[facet[0]] = facet[1]
            if plan.sort_roll < SORT_SHARE:
                params["sort"] = "price_asc"
            answer = self.search(params) or answer
        if plan.page_roll < PAGE_SHARE and answer.get("pages", 0) >= 2:
            gevent.sleep(next(thinks) * scale)
            answer = self.search({**params, "page": "2"}) or answer
        opened = plan.opened(answer["items"])
        for item in opened:
            gevent.sleep(next(thinks) * scale)
            self.get_json("product", f"/api/products/{item['id']}")
        if opened and plan.seller_roll < SELLER_SHARE:
            gevent.sleep(next(thinks) * scale)
            self.get_json("seller", f"/api/sellers/{opened[-1]['seller']['id']}")

    def ratelimit_probe(self) -> None:
        """One client past its limit: the 200s before the first 429 are the RateLimit-Policy quota
        (plus what refilled meanwhile), and 429s carry Retry-After and let the client in after it.

        The policy is read from the 429: a ``public`` answer carries no rate-limit headers
        (HTTP_CACHE_SCOPE). Each URL differs (an ignored ``utm_`` parameter), so no cache in
        front of the proxy can answer for it."""
        run = self.shared
        query = draw_session(self.rng, run.mix).query
        admitted, refused = 0, None
        started = time.monotonic()
        for n in range(MAX_PROBE_REQUESTS):  # bounded: a limit that never refuses fails the checks
            response = self.get("search", "/api/search", {"q": query, "utm_content": f"probe-{n}"}, also_expected=429)
            if response.status_code != 200:
                refused = response if response.status_code == 429 else None
                break
            admitted += 1
        elapsed = time.monotonic() - started
        if not run.check("a 429 arrives", refused is not None) or refused is None:
            log.warning("rate limit: %d requests admitted and no 429; is rate limiting on?", admitted)
            return
        headers = refused.headers or {}
        policy = _policy(headers.get("RateLimit-Policy"))
        if not run.check("429 carries RateLimit-Policy", policy is not None) or policy is None:
            return
        quota, window_s = policy
        refill = math.ceil(elapsed * quota / window_s)
        if not run.check("quota matches RateLimit-Policy", quota <= admitted <= quota + refill):
            log.warning(
                "rate limit: %d admitted before the first 429; policy q=%d (+%d refilled)", admitted, quota, refill
            )
        retry_after = headers.get("Retry-After") or ""
        run.check("429 carries Retry-After", retry_after.isdigit() and int(retry_after) >= 1)
        run.check("429 is problem+json", (headers.get("Content-Type") or "").startswith("application/problem+json"))
        if retry_after.isdigit() and int(retry_after) <= MAX_RETRY_AFTER_S:
            gevent.sleep(int(retry_after))
            again = self.get("search", "/api/search", {"q": query, "utm_content": "probe-again"}, also_expected=429)
            run.check("admitted after Retry-After", again.status_code == 200)


def _policy(header: str | None) -> tuple[int, float] | None:
    """``"default";q=60;w=60`` -> (60, 60.0)."""
    if not header:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in header.split(";")[1:])
    try:
        return int(fields["q"]), float(fields["w"])
    except (KeyError, ValueError):
        return None


# --- the shape ---------------------------------------------------------------------------------


class ProfileShape(LoadTestShape):
    """The profile's scenario over time: k6's planned VUs, or the open model's VUs."""

    def tick(self) -> tuple[int, float] | None:
        run = RUN
        if run is None:
            return None
        if run.aborted:
            run.environment.stop_timeout = 0  # k6 interrupts iterations when a threshold aborts
            return None
        t_ms = self.get_run_time() * 1000
        scenario = run.scenario
        if t_ms >= scenario.end_ms:
            return None
        if scenario.executor == "per-vu-iterations" and run.finished_vus >= scenario.vus:
            return None
        if t_ms < scenario.start_ms:
            return 0, SPAWN_RATE
        users = run.wanted_vus if scenario.is_arrival_rate else scenario.planned_vus_at(t_ms)
        return users, SPAWN_RATE


# --- events ------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    group = parser.add_argument_group("load profile (docs/load-testing.md)")
    group.add_argument("--load-profile", env_var="LOAD_PROFILE", default="smoke", help="profile name or JSON path")
    group.add_argument("--seed", env_var="LOAD_SEED", type=int, default=1, help="global seed of the traffic")
    group.add_argument(
        "--out-dir", env_var="LOAD_OUT", default=str(Path(__file__).resolve().parent / "out"), help="summary and report"
    )


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    global RUN
    options = environment.parsed_options
    if options is None:
        return
    if not isinstance(environment.runner, LocalRunner):
        log.error("run load profiles in one Locust process (no --processes, master or worker)")
        sys.exit(INVALID_CONFIG_EXIT)
    if not environment.host:
        log.error("--host (the proxy's base URL) is required")
        sys.exit(INVALID_CONFIG_EXIT)
    try:
        profile = load_profile(options.load_profile, dict(os.environ))
        profile.only_scenario()
    except ProfileError as exc:
        log.error("invalid profile: %s", exc)
        sys.exit(INVALID_CONFIG_EXIT)
    out_dir = Path(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Our summary replaces Locust's tables; its HTML report still goes next to summary.json.
    options.html_file = options.html_file or str(out_dir / "report.html")
    options.json_file = options.json_file or str(out_dir / "locust-stats")  # Locust adds .json
    options.only_summary = True
    environment.stop_timeout = profile.graceful_stop_ms / 1000  # k6's gracefulStop
    RUN = Run(environment, profile, options.seed, out_dir, os.environ.get("LOAD_API_KEY"))


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    run = _run()
    run.started_at = time.monotonic()
    run.greenlets = [gevent.spawn(_sample_vus, run), gevent.spawn(_progress, run)]
    if any(t.abort_on_fail for metric in run.profile.thresholds for t in metric.thresholds):
        run.greenlets.append(gevent.spawn(_watch_thresholds, run))


@events.test_stop.add_listener
def on_test_stop(environment: Environment, **_: Any) -> None:
    run = _run()
    run.stopped_at = run.stopped_at or time.monotonic()
    gevent.killall(run.greenlets, block=False)


def _sample_vus(run: Run) -> None:
    while True:  # k6 samples vus and vus_max once a second
        users = run.environment.runner.user_count if run.environment.runner else 0
        run.metrics.add("vus", users)
        initialized = run.wanted_vus if run.scenario.is_arrival_rate else run.scenario.max_planned_vus
        run.metrics.add("vus_max", max(users, initialized))
        gevent.sleep(1.0)


def _watch_thresholds(run: Run) -> None:
    while not run.aborted:
        gevent.sleep(EVALUATE_EVERY_S)
        elapsed = run.elapsed_ms()
        verdict = evaluate_thresholds(run.profile.thresholds, run.metrics, elapsed, during_run=True)
        if verdict.abort:
            names = sorted({outcome.metric.key for outcome in verdict.failed})
            run.aborted = (
                f"thresholds on {', '.join(names)} were crossed at {elapsed / 1000:.1f} s "
                f"(VUs {run.environment.runner.user_count if run.environment.runner else 0}, "
                f"arrival rate {run.profile.rate_at(elapsed):.1f}/s); abortOnFail stopped the test"
            )
            log.error("%s", run.aborted)


def _progress(run: Run) -> None:
    total = run.profile.duration_ms / 1000
    while True:
        gevent.sleep(PROGRESS_EVERY_S)
        failed = run.metrics.sink("http_req_failed")
        requests = getattr(failed, "total", 0)
        share = getattr(failed, "passes", 0) / requests * 100 if requests else 0.0
        users = run.environment.runner.user_count if run.environment.runner else 0
        print(
            f"  {run.elapsed_ms() / 1000:5.0f}/{total:.0f} s  VUs {users:<4} requests {requests:<7} "
            f"failed {share:.2f}%",
            file=sys.stderr,
            flush=True,
        )


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    run = RUN
    if run is None or run.started_at is None:
        return
    run.stopped_at = run.stopped_at or time.monotonic()
    duration_ms = run.elapsed_ms()
    verdict = evaluate_thresholds(run.profile.thresholds, run.metrics, duration_ms)
    info = RunInfo(environment.host or "", run.seed, "locust", duration_ms, run.aborted)
    summary = build_summary(run.profile, run.metrics, verdict, info)
    path = run.out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    report = environment.parsed_options.html_file if environment.parsed_options else None
    print(render(summary, [f"summary: {path}", f"report:  {report}"]), flush=True)
    environment.process_exit_code = exit_code(summary)
