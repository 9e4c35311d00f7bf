"""Process-wide logging set-up for every entry point: one line per event, text or JSON.

``LOG_LEVEL`` (debug, info, warning, error) and ``LOG_FORMAT`` (``text``, or ``json`` for log
collectors: one JSON object per line with time, level, logger and message). Called once by
each ``__main__``; library code only ever calls ``logging.getLogger``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen.upper())
    # The engine client logs every request at INFO: one line per search or bulk would drown ours.
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
