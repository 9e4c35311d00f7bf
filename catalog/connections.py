"""Opening connections to Postgres with a bounded, logged retry budget.

Used by every entry point at start-up. When the budget runs out it raises
:class:`ServerUnreachable` whose message names the setting and the server — the entry point
prints that one line and exits. It never shows a URL's password in a log line or an error: every
URL goes through :func:`catalog.config.redact_url`, the one redaction of the project.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from catalog.config import redact_url
from catalog.errors import CatalogError
from catalog.retry import AT_START

log = logging.getLogger("hos_search.connections")


class ServerUnreachable(CatalogError):
    """A server did not answer within the retry budget; the message names the setting."""


async def connect_postgres(
    url: str, *, attempts: int = 5, timeout: float = 5.0, setting: str = "DATABASE_URL"
) -> asyncpg.Connection:
    """One connection, retried as :data:`catalog.retry.AT_START` says (0.2 s, 0.4 s, …, ≤ 5 s)."""
    for attempt in range(1, attempts + 1):
        try:
            return await asyncpg.connect(url, timeout=timeout)
        except (TimeoutError, OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as exc:
            if attempt == attempts:
                raise ServerUnreachable(
                    f"{setting}: cannot connect to {redact_url(url)} after {attempts} tries: {exc}"
                ) from None
            delay = AT_START.delay(attempt)
            log.warning(
                "postgres %s unreachable (%s); retrying in %.1fs, %d tries left",
                redact_url(url),
                exc,
                delay,
                attempts - attempt,
            )
            await asyncio.sleep(delay)
        except (
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError,
            asyncpg.InvalidPasswordError,
        ) as exc:
            # Retrying cannot fix a wrong user, password or database name.
            raise ServerUnreachable(f"{setting}: {redact_url(url)} refused the connection: {exc}") from None
    raise AssertionError("unreachable")
