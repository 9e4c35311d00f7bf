"""Process-wide logging set-up for every entry point: one line per event, text or JSON.

``LOG_LEVEL`` (debug, info, warning, error) and ``LOG_FORMAT`` (``text``, or ``json`` for log
collectors: one JSON object per line with time, level, logger and message). Called once by
each ``__main__``; library code only ever calls ``logging.getLogger``.

A failing dependency repeats the same line for every request: at 2× the engine's capacity the
proxy logged 4,287 identical warnings in 15 s (``benchmarks/fallback.py``). :class:`RepeatFilter`
lets the first of a kind through (same logger, level and message template), holds back the
repeats for ``interval`` seconds, and then says how many it held back.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping

import orjson

from catalog.config import ConfigError

LEVELS = ("debug", "info", "warning", "error")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class RepeatFilter(logging.Filter):
    """At most one record per (logger, level, template) every ``interval`` seconds, plus a count."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # -> (last let through, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) > 10_000:  # templates are few; a flood of distinct ones must not grow this
            self._seen.clear()
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = f"{record.msg} (and {last[1]} more like it in the last {now - last[0]:.0f} s)"
        return True


def configure_logging(env: Mapping[str, str], level: str | None = None) -> None:
    """Configure the root logger from ``LOG_LEVEL``/``LOG_FORMAT`` (``level`` overrides)."""
    chosen = (level or env.get("LOG_LEVEL") or "info").strip().lower()
    if chosen not in LEVELS:
        raise ConfigError(f"LOG_LEVEL={chosen!r} is not one of {', '.join(LEVELS)}")
    fmt = (env.get("LOG_FORMAT") or "text").strip().lower()
    if fmt not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={fmt!r} is not text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen.upper())
    # The engine client logs every request at INFO: one line per search or bulk would drown ours.
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
