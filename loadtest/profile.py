"""Load profiles: the subset of k6's ``options`` in loadtest/profiles/*.json, read by k6's rules.

A profile is a k6 options object — ``stages`` (with ``vus`` as the starting count, 1 when
absent, as k6's shortcut does), or ``vus`` + ``duration``, or ``scenarios`` with the executors
``ramping-vus``, ``constant-vus``, ``per-vu-iterations``, ``constant-arrival-rate`` and
``ramping-arrival-rate``; ``thresholds``; ``summaryTrendStats`` — plus a ``hos`` object for this
repository's runners that k6 never sees: ``description``, ``proxyEnv`` (the proxy's environment
when ``make load`` starts a dev stack) and ``thinkTimeScale``. Any string value may name an
environment variable as ``${NAME}`` or ``${NAME:-default}`` (e.g. the soak's length).

What a profile plans at an instant follows k6's executors (lib/executor/*.go):

- ramping VUs move in whole VUs, each step once the straight line between two stage targets
  has passed it: ``from + trunc((to - from) * elapsed / duration)``; a 0 s stage jumps;
- ``ramping-arrival-rate`` interpolates the rate linearly and starts iteration i (from 1) where
  the area under the rate reaches i; ``constant-arrival-rate`` starts one every
  ``timeUnit / rate`` from 0.

Times are milliseconds (floats). loadtest/k6/profile.js reads the same files with the same
arithmetic, and tests/test_load_profiles.py holds the two to it. Pure but for
:func:`load_profile`, which reads one file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from loadtest.durations import DurationError, parse_duration
from loadtest.thresholds import MetricThresholds, ThresholdError, parse_thresholds

PROFILES_DIR: Final = Path(__file__).resolve().parent / "profiles"

# k6's defaults (lib/executor/*.go, lib/options.go).
DEFAULT_GRACEFUL_STOP_MS: Final = 30_000.0
DEFAULT_MAX_DURATION_MS: Final = 600_000.0
DEFAULT_TIME_UNIT_MS: Final = 1000.0
DEFAULT_TREND_STATS: Final = ("avg", "min", "med", "max", "p(90)", "p(95)")

EXECUTORS: Final = (
    "ramping-vus",
    "constant-vus",
    "per-vu-iterations",
    "constant-arrival-rate",
    "ramping-arrival-rate",
)
ARRIVAL_EXECUTORS: Final = ("constant-arrival-rate", "ramping-arrival-rate")


class ProfileError(ValueError):
    """A profile that k6 would refuse, or that uses what this subset does not support."""


# --- environment variables -------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with ``${NAME}`` / ``${NAME:-default}`` in every string replaced from ``env``."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if env.get(name):
                return env[name]
            if default is None:
                raise ProfileError(f"${{{name}}} is not set and has no default")
            return default

        return _ENV_REF.sub(replace, value)
    if isinstance(value, list):
        return [substitute_env(item, env) for item in value]
    if isinstance(value, dict):
        return {key: substitute_env(item, env) for key, item in value.items()}
    return value


# --- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    duration_ms: float
    target: float


def _walk(start: float, stages: tuple[Stage, ...], tau: float, *, whole: bool) -> float:
    """The value ``tau`` ms into ``stages`` starting from ``start``: linear within a stage,
    truncated towards the stage's starting value when ``whole`` (VUs), exact otherwise (rates)."""
    value, elapsed = start, 0.0
    for stage in stages:
        end = elapsed + stage.duration_ms
        if tau < end:  # inside this stage: its duration is > 0
            step = (stage.target - value) * (tau - elapsed) / stage.duration_ms
            return value + (math.trunc(step) if whole else step)
        value, elapsed = stage.target, end
    return value


@dataclass(frozen=True)
class Scenario:
    """One k6 scenario; fields an executor does not use keep their defaults."""

    name: str
    executor: str
    exec: str = "default"
    start_ms: float = 0.0
    graceful_stop_ms: float = DEFAULT_GRACEFUL_STOP_MS
    # ramping-vus (start_vus, stages), constant-vus and per-vu-iterations (vus).
    start_vus: int = 1
    vus: int = 1
    stages: tuple[Stage, ...] = ()
    duration_ms: float = 0.0
    iterations: int = 1
    # arrival rates: ``rate`` / ``start_rate`` iterations per ``time_unit_ms``.
    rate: float = 0.0
    start_rate: float = 0.0
    time_unit_ms: float = DEFAULT_TIME_UNIT_MS
    pre_allocated_vus: int = 0
    max_vus: int = 0

    @property
    def is_arrival_rate(self) -> bool:
        return self.executor in ARRIVAL_EXECUTORS

    @property
    def length_ms(self) -> float:
        """How long the executor runs, without its graceful stop."""
        if self.stages:
            return sum(stage.duration_ms for stage in self.stages)
        return self.duration_ms

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.length_ms

    @property
    def max_planned_vus(self) -> int:
        """The most VUs the executor plans at once (k6 initialises them before the start)."""
        if self.executor == "ramping-vus":
            return int(max(self.start_vus, *(stage.target for stage in self.stages)))
        return self.pre_allocated_vus if self.is_arrival_rate else self.vus

    def planned_vus_at(self, t_ms: float) -> int:
        """k6's planned VUs at ``t_ms`` from the test's start (arrival rates: pre-allocated)."""
        tau = t_ms - self.start_ms
        if tau < 0 or tau >= self.length_ms:
            return 0
        if self.executor == "ramping-vus":
            return int(_walk(self.start_vus, self.stages, tau, whole=True))
        if self.is_arrival_rate:
            return self.pre_allocated_vus
        return self.vus

    def rate_at(self, t_ms: float) -> float:
        """Iterations per second an arrival-rate scenario starts at ``t_ms`` (0 otherwise)."""
        tau = t_ms - self.start_ms
        if not self.is_arrival_rate or tau < 0 or tau >= self.length_ms:
            return 0.0
        per_unit = (
            self.rate
            if self.executor == "constant-arrival-rate"
            else _walk(self.start_rate, self.stages, tau, whole=False)
        )
        return per_unit * 1000.0 / self.time_unit_ms

    def arrival_offsets(self) -> Iterator[float]:
        """When each iteration starts, in ms from the scenario's start (k6's schedule)."""
        if self.executor == "constant-arrival-rate":
            if self.rate <= 0:
                return
            period = self.time_unit_ms / self.rate
            n = 0
            while n * period < self.duration_ms:
                yield n * period
                n += 1
            return
        if self.executor != "ramping-arrival-rate":
            return
        # lib/executor/ramping_arrival_rate.go cal(): iteration i starts where the area under the
        # rate (per ms) reaches i; linear ramps solve a quadratic.
        done, end_count, stage_start = 0.0, 0.0, 0.0
        rate_from = self.start_rate / self.time_unit_ms
        i = 1.0
        for stage in self.stages:
            rate_to = stage.target / self.time_unit_ms
            duration = stage.duration_ms
            if rate_from != rate_to:
                end_count += duration * ((rate_to - rate_from) / 2 + rate_from)
                while i <= end_count:
                    root = duration * (rate_from * rate_from * duration + 2 * (i - done) * (rate_to - rate_from))
                    yield (rate_from * duration - math.sqrt(max(root, 0.0))) / (rate_from - rate_to) + stage_start
                    i += 1
            else:
                end_count += duration * rate_to
                while i <= end_count:
                    yield (i - done) / rate_to + stage_start
                    i += 1
            done = end_count
            rate_from = rate_to
            stage_start += duration


def _int(raw: Mapping[str, Any], key: str, default: int | None, where: str) -> int:
    value = raw.get(key, default)
    if value is None:
        raise ProfileError(f"{where}: {key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
        raise ProfileError(f"{where}: {key} must be a whole number >= 0, got {value!r}")
    return int(value)


def _stages(raw: object, where: str) -> tuple[Stage, ...]:
    if not isinstance(raw, list) or not raw:
        raise ProfileError(f"{where}: stages must be a non-empty list")
    stages = []
    for index, stage in enumerate(raw):
        if not isinstance(stage, dict) or "duration" not in stage:
            raise ProfileError(f"{where}: stage {index} needs a duration")
        stages.append(Stage(parse_duration(stage["duration"]), _int(stage, "target", 0, f"{where} stage {index}")))
    return tuple(stages)


_SCENARIO_KEYS: Final = {
    "ramping-vus": {"startVUs", "stages", "gracefulRampDown"},
    "constant-vus": {"vus", "duration"},
    "per-vu-iterations": {"vus", "iterations", "maxDuration"},
    "constant-arrival-rate": {"rate", "timeUnit", "duration", "preAllocatedVUs", "maxVUs"},
    "ramping-arrival-rate": {"startRate", "timeUnit", "stages", "preAllocatedVUs", "maxVUs"},
}
_COMMON_KEYS: Final = {"executor", "exec", "startTime", "gracefulStop", "tags", "env"}


def parse_scenario(name: str, raw: Mapping[str, Any]) -> Scenario:
    where = f"scenario {name!r}"
    executor = raw.get("executor")
    if executor not in EXECUTORS:
        raise ProfileError(f"{where}: executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    unknown = set(raw) - _COMMON_KEYS - _SCENARIO_KEYS[executor]
    if unknown:
        raise ProfileError(f"{where}: unknown option(s) {', '.join(sorted(unknown))} for {executor}")
    common: dict[str, Any] = {
        "name": name,
        "executor": executor,
        "exec": str(raw.get("exec", "default")),
        "start_ms": parse_duration(raw.get("startTime", 0)),
        "graceful_stop_ms": parse_duration(raw.get("gracefulStop", DEFAULT_GRACEFUL_STOP_MS)),
    }
    if executor == "ramping-vus":
        stages = _stages(raw.get("stages"), where)
        return Scenario(**common, start_vus=_int(raw, "startVUs", 1, where), stages=stages)
    if executor == "constant-vus":
        if "duration" not in raw:
            raise ProfileError(f"{where}: duration is required")
        return Scenario(**common, vus=_int(raw, "vus", 1, where), duration_ms=parse_duration(raw["duration"]))
    if executor == "per-vu-iterations":
        return Scenario(
            **common,
            vus=_int(raw, "vus", 1, where),
            iterations=_int(raw, "iterations", 1, where),
            duration_ms=parse_duration(raw.get("maxDuration", DEFAULT_MAX_DURATION_MS)),
        )
    pre_allocated = _int(raw, "preAllocatedVUs", None, where)
    max_vus = _int(raw, "maxVUs", pre_allocated, where)
    if max_vus < pre_allocated:
        raise ProfileError(f"{where}: maxVUs can't be less than preAllocatedVUs")
    time_unit = parse_duration(raw.get("timeUnit", DEFAULT_TIME_UNIT_MS))
    if time_unit <= 0:
        raise ProfileError(f"{where}: timeUnit must be more than 0")
    arrival: dict[str, Any] = {
        **common,
        "time_unit_ms": time_unit,
        "pre_allocated_vus": pre_allocated,
        "max_vus": max_vus,
    }
    if executor == "constant-arrival-rate":
        if "duration" not in raw:
            raise ProfileError(f"{where}: duration is required")
        return Scenario(**arrival, rate=_int(raw, "rate", None, where), duration_ms=parse_duration(raw["duration"]))
    return Scenario(**arrival, start_rate=_int(raw, "startRate", 0, where), stages=_stages(raw.get("stages"), where))


# --- profiles ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    name: str
    scenarios: tuple[Scenario, ...]
    thresholds: tuple[MetricThresholds, ...] = ()
    summary_trend_stats: tuple[str, ...] = DEFAULT_TREND_STATS
    description: str = ""
    proxy_env: Mapping[str, str] = field(default_factory=dict)
    think_time_scale: float = 1.0

    @property
    def duration_ms(self) -> float:
        """When the last scenario's executor ends (graceful stops not included)."""
        return max(scenario.end_ms for scenario in self.scenarios)

    @property
    def graceful_stop_ms(self) -> float:
        return max(scenario.graceful_stop_ms for scenario in self.scenarios)

    def only_scenario(self) -> Scenario:
        """The scenario the Locust runner runs: it runs one per profile (k6 runs them all)."""
        if len(self.scenarios) != 1:
            raise ProfileError(f"{self.name}: the Locust runner runs one scenario per profile (k6 runs all)")
        return self.scenarios[0]

    def planned_vus_at(self, t_ms: float) -> int:
        return sum(scenario.planned_vus_at(t_ms) for scenario in self.scenarios)

    def rate_at(self, t_ms: float) -> float:
        return sum(scenario.rate_at(t_ms) for scenario in self.scenarios)


_OPTION_KEYS: Final = {"vus", "duration", "iterations", "stages", "scenarios", "thresholds", "summaryTrendStats", "hos"}


def _shortcut_scenarios(raw: Mapping[str, Any]) -> tuple[Scenario, ...]:
    """k6's DeriveScenariosFromShortcuts for what this subset supports."""
    has_stages = bool(raw.get("stages"))
    if "scenarios" in raw:
        if has_stages or "duration" in raw or "iterations" in raw:
            raise ProfileError("scenarios can't be combined with stages, duration or iterations")
        if not isinstance(raw["scenarios"], dict) or not raw["scenarios"]:
            raise ProfileError("scenarios must be a non-empty object")
        return tuple(parse_scenario(name, scenario) for name, scenario in raw["scenarios"].items())
    if "iterations" in raw:
        raise ProfileError("iterations (shared-iterations) is not supported; use a per-vu-iterations scenario")
    if "duration" in raw:
        if has_stages:
            raise ProfileError("duration and stages can't be used together")
        return (
            parse_scenario(
                "default", {"executor": "constant-vus", "vus": raw.get("vus", 1), "duration": raw["duration"]}
            ),
        )
    if has_stages:
        return (
            parse_scenario(
                "default", {"executor": "ramping-vus", "startVUs": raw.get("vus", 1), "stages": raw["stages"]}
            ),
        )
    return (parse_scenario("default", {"executor": "per-vu-iterations", "vus": 1, "iterations": 1}),)


def parse_profile(name: str, raw: Mapping[str, Any], env: Mapping[str, str]) -> Profile:
    """The profile in ``raw`` (a decoded JSON object), environment references resolved from ``env``."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{name}: a profile is a JSON object")
    unknown = set(raw) - _OPTION_KEYS
    if unknown:
        raise ProfileError(f"{name}: unsupported option(s) {', '.join(sorted(unknown))}")
    resolved = substitute_env(raw, env)
    hos = resolved.get("hos", {})
    try:
        scenarios = _shortcut_scenarios(resolved)
        thresholds = parse_thresholds(resolved.get("thresholds", {}))
    except (DurationError, ThresholdError) as exc:
        raise ProfileError(f"{name}: {exc}") from None
    stats = resolved.get("summaryTrendStats", list(DEFAULT_TREND_STATS))
    return Profile(
        name=name,
        scenarios=scenarios,
        thresholds=thresholds,
        summary_trend_stats=tuple(str(stat) for stat in stats),
        description=str(hos.get("description", "")),
        proxy_env={str(key): str(value) for key, value in hos.get("proxyEnv", {}).items()},
        think_time_scale=float(hos.get("thinkTimeScale", 1.0)),
    )


def profile_path(name_or_path: str) -> Path:
    """A profile name (``smoke``) is loadtest/profiles/<name>.json; anything else is a path."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", name_or_path):
        return PROFILES_DIR / f"{name_or_path}.json"
    return Path(name_or_path)


def load_profile(name_or_path: str, env: Mapping[str, str]) -> Profile:
    path = profile_path(name_or_path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: not JSON: {exc}") from None
    return parse_profile(path.stem, raw, env)


def profile_names() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.json"))
