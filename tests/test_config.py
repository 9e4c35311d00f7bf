"""Bad configuration stops a process with one clear line naming the setting."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from catalog.config import ConfigError, database_url, elasticsearch_node, env_bool, env_int, search_index
from indexer.settings import IndexerSettings
from proxy.settings import ProxySettings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("reader", "env", "named"),
    [
        (database_url, {"DATABASE_URL": "mysql://x@localhost/db"}, "DATABASE_URL"),
        (database_url, {"DATABASE_URL": "postgresql://localhost:99999/db"}, "DATABASE_URL"),
        (elasticsearch_node, {"ELASTICSEARCH_NODE": "localhost:9200"}, "ELASTICSEARCH_NODE"),
        (search_index, {"SEARCH_INDEX": "Products!"}, "SEARCH_INDEX"),
        (
            lambda env: env_int(env, "RATE_LIMIT_MAX", 100, minimum=1),
            {"RATE_LIMIT_MAX": "ten"},
            "RATE_LIMIT_MAX",
        ),
        (
            lambda env: env_int(env, "RATE_LIMIT_MAX", 100, minimum=1),
            {"RATE_LIMIT_MAX": "0"},
            "RATE_LIMIT_MAX",
        ),
        (
            lambda env: env_bool(env, "RATE_LIMIT_ENABLED", True),
            {"RATE_LIMIT_ENABLED": "maybe"},
            "RATE_LIMIT_ENABLED",
        ),
        (IndexerSettings.from_env, {"SEARCH_INDEX_REFRESH_INTERVAL": "1 second"}, "SEARCH_INDEX_REFRESH_INTERVAL"),
        (IndexerSettings.from_env, {"SEARCH_INDEX_REFRESH_INTERVAL": "0s"}, "SEARCH_INDEX_REFRESH_INTERVAL"),
        (IndexerSettings.from_env, {"SEARCH_INDEX_REFRESH_INTERVAL": "1.5s"}, "SEARCH_INDEX_REFRESH_INTERVAL"),
        (ProxySettings.from_env, {"REDIS_TIMEOUT_MS": "0"}, "REDIS_TIMEOUT_MS"),
        (ProxySettings.from_env, {"RATE_LIMIT_FALLBACK": "maybe"}, "RATE_LIMIT_FALLBACK"),
        (ProxySettings.from_env, {"RATE_LIMIT_KEYS": "short 1 1"}, "RATE_LIMIT_KEYS"),
        (ProxySettings.from_env, {"ENGINE_QUEUE_MS": "-1"}, "ENGINE_QUEUE_MS"),
        (ProxySettings.from_env, {"ENGINE_BREAKER_FAILURES": "0"}, "ENGINE_BREAKER_FAILURES"),
        (ProxySettings.from_env, {"ENGINE_BREAKER_PROBES": "few"}, "ENGINE_BREAKER_PROBES"),
        (ProxySettings.from_env, {"FALLBACK_ENABLED": "perhaps"}, "FALLBACK_ENABLED"),
        (ProxySettings.from_env, {"FALLBACK_MAX_CONCURRENCY": "0"}, "FALLBACK_MAX_CONCURRENCY"),
        (ProxySettings.from_env, {"FALLBACK_STATEMENT_TIMEOUT_MS": "5"}, "FALLBACK_STATEMENT_TIMEOUT_MS"),
        (ProxySettings.from_env, {"FALLBACK_FACETS_MAX_AGE_MS": "-1"}, "FALLBACK_FACETS_MAX_AGE_MS"),
        (ProxySettings.from_env, {"FALLBACK_FACETS_MAX_AGE_MS": "5s"}, "FALLBACK_FACETS_MAX_AGE_MS"),
        (ProxySettings.from_env, {"RATE_LIMIT_COSTS": "search"}, "RATE_LIMIT_COSTS"),
        (ProxySettings.from_env, {"RATE_LIMIT_COSTS": "autocomplete=1"}, "RATE_LIMIT_COSTS"),
        (ProxySettings.from_env, {"RATE_LIMIT_COSTS": "search=cheap"}, "RATE_LIMIT_COSTS"),
        (ProxySettings.from_env, {"RATE_LIMIT_COSTS": "search=-1"}, "RATE_LIMIT_COSTS"),
        (ProxySettings.from_env, {"RATE_LIMIT_COSTS": "search=nan"}, "RATE_LIMIT_COSTS"),
        (ProxySettings.from_env, {"RATE_LIMIT_MAX": "10", "RATE_LIMIT_COSTS": "search=11"}, "RATE_LIMIT_COSTS"),
        (ProxySettings.from_env, {"REDIS_TIMEOUT_MS": "5000"}, "REDIS_TIMEOUT_MS"),
        (ProxySettings.from_env, {"CACHE_ENABLED": "sometimes"}, "CACHE_ENABLED"),
        (ProxySettings.from_env, {"CACHE_TTL_S": "0"}, "CACHE_TTL_S"),
        (ProxySettings.from_env, {"CACHE_TTL_S": "1m"}, "CACHE_TTL_S"),
        (ProxySettings.from_env, {"CACHE_TTL_S": "10", "CACHE_REVALIDATE_MS": "20000"}, "CACHE_REVALIDATE_MS"),
        (
            ProxySettings.from_env,
            {"CACHE_TTL_S": "30", "CACHE_REFRESH_AHEAD_MS": "15001"},
            "CACHE_REFRESH_AHEAD_MS: must not exceed half of CACHE_TTL_S",
        ),
        (ProxySettings.from_env, {"CACHE_MAX_STALE_MS": "-1"}, "CACHE_MAX_STALE_MS"),
        (ProxySettings.from_env, {"CACHE_L1_MAX_ENTRIES": "0"}, "CACHE_L1_MAX_ENTRIES"),
        (ProxySettings.from_env, {"CACHE_L1_MAX_MB": "lots"}, "CACHE_L1_MAX_MB"),
        (ProxySettings.from_env, {"CACHE_LOCK_WAIT_MS": "60000"}, "CACHE_LOCK_WAIT_MS"),
        (ProxySettings.from_env, {"CACHE_STALE_IF_ERROR_S": "x"}, "CACHE_STALE_IF_ERROR_S"),
        (IndexerSettings.from_env, {"INDEXER_CHECKPOINT_EXPIRY_S": "10"}, "INDEXER_CHECKPOINT_EXPIRY_S"),
        (IndexerSettings.from_env, {"INDEXER_CHECKPOINT_EXPIRY_S": "a week"}, "INDEXER_CHECKPOINT_EXPIRY_S"),
        (ProxySettings.from_env, {"RATE_LIMIT_IPV6_PREFIX": "129"}, "RATE_LIMIT_IPV6_PREFIX"),
        (ProxySettings.from_env, {"HTTP_HEADER_TIMEOUT_S": "0"}, "HTTP_HEADER_TIMEOUT_S"),
        (ProxySettings.from_env, {"HTTP_KEEPALIVE_TIMEOUT_S": "7200"}, "HTTP_KEEPALIVE_TIMEOUT_S"),
        (ProxySettings.from_env, {"HTTP_MAX_CONNECTIONS": "0"}, "HTTP_MAX_CONNECTIONS"),
        (ProxySettings.from_env, {"RATE_LIMIT_IPV6_PREFIX": "8"}, "RATE_LIMIT_IPV6_PREFIX"),
        (ProxySettings.from_env, {"RATE_LIMIT_IPV6_PREFIX": "/64"}, "RATE_LIMIT_IPV6_PREFIX"),
        (ProxySettings.from_env, {"RATE_LIMIT_KEY_GROUPS": "0"}, "RATE_LIMIT_KEY_GROUPS"),
        (ProxySettings.from_env, {"RATE_LIMIT_KEY_GROUPS": "257"}, "RATE_LIMIT_KEY_GROUPS"),
    ],
)
def test_bad_values_name_their_variable(
    reader: Callable[[Mapping[str, str]], object], env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        reader(env)


def test_the_refresh_interval_is_taken_as_the_engine_writes_it() -> None:
    assert IndexerSettings.from_env({}).refresh_interval == "1s"
    for value in ("500ms", "2s", "1m", "-1"):
        assert IndexerSettings.from_env({"SEARCH_INDEX_REFRESH_INTERVAL": value}).refresh_interval == value


def test_the_cache_settings_default_to_the_documented_values() -> None:
    settings = ProxySettings.from_env({})
    assert (settings.redis_timeout_ms, settings.cache_enabled, settings.cache_ttl_s) == (50, True, 60)
    assert (settings.cache_revalidate_ms, settings.cache_max_stale_ms, settings.cache_stale_if_error_s) == (
        15_000,
        500,
        300,
    )
    assert (settings.cache_l1_max_entries, settings.cache_l1_max_mb, settings.cache_lock_wait_ms) == (10_000, 64, 1000)
    assert settings.cache_refresh_ahead_ms == 10_000


def test_defaults_apply_when_unset() -> None:
    assert elasticsearch_node({}) == "http://localhost:9200"
    assert search_index({}) == "products"
    assert env_int({}, "RATE_LIMIT_MAX", 100) == 100
    assert env_bool({"X": "false"}, "X", True) is False


def _run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "hos_search", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_reports_a_malformed_database_url_in_one_line() -> None:
    result = _run_cli("migrate", DATABASE_URL="postgres://localhost:notaport/db")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_reports_an_unreachable_database_after_its_retries() -> None:
    # Port 1 on loopback: nothing listens there, so every try is refused at once.
    result = _run_cli("--log-level", "error", "migrate", DATABASE_URL="postgresql://postgres@127.0.0.1:1/db")
    assert result.returncode == 1
    assert "DATABASE_URL" in result.stderr and "after 5 tries" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_log_lines_are_one_object_each() -> None:
    result = _run_cli("migrate", DATABASE_URL="postgresql://postgres@127.0.0.1:1/db", LOG_FORMAT="json")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert warnings, result.stderr
    import json

    entry = json.loads(warnings[0])
    assert entry["level"] == "warning" and "retrying" in entry["message"]


def test_a_bad_log_level_is_named() -> None:
    result = _run_cli("migrate", LOG_LEVEL="loud")
    assert result.returncode == 2
    assert "LOG_LEVEL" in result.stderr and "Traceback" not in result.stderr


def test_each_package_has_one_family_of_expected_failures() -> None:
    """The entry points catch CatalogError, IndexerError and ProxyError, and nothing narrower."""
    from catalog.connections import ServerUnreachable
    from catalog.errors import CatalogError
    from catalog.migrate import MigrationError
    from catalog.seed import SeedError
    from indexer.errors import IndexerError
    from indexer.reindex import ReindexBusy, ReindexError
    from proxy.errors import ProxyError
    from proxy.server import PortInUse
    from proxy.synonyms import SynonymError

    assert all(issubclass(e, CatalogError) for e in (ConfigError, ServerUnreachable, MigrationError, SeedError))
    assert all(issubclass(e, IndexerError) for e in (ReindexError, ReindexBusy))
    assert all(issubclass(e, ProxyError) for e in (PortInUse, SynonymError))


def test_repeated_log_lines_are_held_back_and_counted() -> None:
    import logging

    from catalog.logs import RepeatFilter

    now = [100.0]
    repeat = RepeatFilter(interval=10.0, clock=lambda: now[0])

    def record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("hos_search.proxy.engine", level, __file__, 1, msg, args, None)

    assert repeat.filter(record("engine search failed: %s", "ConnectionTimeout"))
    held = [repeat.filter(record("engine search failed: %s", "ConnectionTimeout")) for _ in range(5)]
    assert held == [False] * 5
    assert repeat.filter(record("engine answered %s", 500))  # another template goes through
    assert repeat.filter(record("engine search failed: %s", "X", level=logging.ERROR))  # another level too
    now[0] += 10.5
    after = record("engine search failed: %s", "ConnectionTimeout")
    assert repeat.filter(after)
    assert after.getMessage() == "engine search failed: ConnectionTimeout (and 5 more like it in the last 10 s)"
    now[0] += 10.5
    quiet = record("engine search failed: %s", "ConnectionTimeout")
    assert repeat.filter(quiet) and quiet.getMessage() == "engine search failed: ConnectionTimeout"


# Fields computed from more than one variable (or none) rather than declared with their own.
_COMPUTED = {"rate_limit_keys", "rate_limit_costs", "cdn_image_widths", "shutdown_timeout_s"}


@pytest.mark.parametrize("settings", [ProxySettings, IndexerSettings])
def test_each_setting_is_declared_once_with_its_variable(settings: type) -> None:
    # Issue 20: defaults were written twice (the dataclass and from_env) and could drift.
    assert settings.from_env({}) == settings()  # type: ignore[attr-defined]
    example = (ROOT / ".env.example").read_text()
    for field in dataclasses.fields(settings):
        if field.name in _COMPUTED:
            continue
        variable = field.metadata["env"].name
        assert variable in example, f"{variable} ({field.name}) is not in .env.example"


def test_durations_are_given_in_seconds_from_their_milliseconds() -> None:
    settings = ProxySettings.from_env({"ENGINE_QUEUE_MS": "40", "CACHE_LOCK_WAIT_MS": "1500"})
    assert (settings.engine_queue, settings.cache_lock_wait, settings.redis_timeout) == (0.04, 1.5, 0.05)
    assert IndexerSettings.from_env({"INDEXER_LINGER_MS": "250"}).linger == 0.25
