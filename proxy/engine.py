"""The proxy's gateway to the search engine: one round trip per request, bounded in time.

Wraps the shared client factory from ``catalog.engine``. The engine may be down when the proxy
starts; the gateway then keeps trying to detect it (at most once a second, on demand) and
answers :class:`BackendUnavailable` meanwhile. Every engine failure — connection refused,
timeout, any error status, a missing index — becomes :class:`BackendUnavailable` (a 503). That
includes an engine 400: the request was already validated, so a body the engine calls malformed
is our bug, not something the client could fix; it is logged with its status. The engine's own
error text never leaves here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from elastic_transport import ApiError as TransportApiError
from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch

from catalog.config import EngineAccess, redact_url
from catalog.engine import EngineAccessRefused, EngineInfo, create_engine_client
from proxy.errors import BackendUnavailable

log = logging.getLogger("hos_search.proxy.engine")

_DETECT_INTERVAL_S = 1.0
# /readyz asks every few seconds per worker and per probe; the cluster's health changes on the
# scale of seconds, and a health call costs the cluster manager a little each time.
_HEALTH_TTL_S = 1.0


class EngineGateway:
    """Searches the alias; owns the engine client's lifetime (see ``proxy.app``)."""

    def __init__(
        self, url: str, alias: str, *, pool_size: int, timeout: float, access: EngineAccess | None = None
    ) -> None:
        self.url = url
        self.access = access or EngineAccess()
        # What log lines name: the URL without its password, if it carries one.
        self.where = redact_url(url)
        self.alias = alias
        self.pool_size = pool_size
        self.timeout = timeout
        self.client: AsyncElasticsearch | None = None
        self.info: EngineInfo | None = None
        self._last_detect = -_DETECT_INTERVAL_S
        self._detect_lock = asyncio.Lock()
        self._health: tuple[float, str] | None = None  # (when, the alias's cluster health)

    async def connect(self) -> bool:
        """Detect the engine and build the client; False (and logged) when it does not answer."""
        async with self._detect_lock:
            if self.client is not None:
                return True
            now = time.monotonic()
            if now - self._last_detect < _DETECT_INTERVAL_S:
                return False
            self._last_detect = now
            try:
                client, info = await asyncio.wait_for(
                    create_engine_client(
                        self.url, access=self.access, pool_size=self.pool_size, request_timeout=self.timeout
                    ),
                    self.timeout,
                )
            except (TransportError, ApiError, OSError, TimeoutError) as exc:
                log.warning("search engine at %s not reachable yet: %s", self.where, type(exc).__name__)
                return False
            except EngineAccessRefused as exc:
                # Checked at start (proxy.__main__); a change of credentials since then is logged
                # here (the message names the setting, never the secret) and searches fall back.
                log.error("search engine at %s: %s", self.where, exc)
                return False
            self.client, self.info = client, info
            log.info("search engine: %s %s at %s", info.distribution, info.version, self.where)
            return True

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def _client(self) -> AsyncElasticsearch:
        if self.client is None and not await self.connect():
            raise BackendUnavailable("The search engine is not reachable.")
        assert self.client is not None
        return self.client

    async def search(self, body: dict[str, Any]) -> dict[str, Any]:
        """One search against the alias; the engine's JSON answer as a dict, or BackendUnavailable."""
        client = await self._client()
        try:
            # A shard without any live copy (a red cluster) fails the search instead of answering
            # from the other shards: a silently partial answer looks right and is not; the
            # fallback serves instead.
            response = await client.search(index=self.alias, body=body, allow_partial_search_results=False)
        except (ApiError, TransportApiError) as exc:
            status = getattr(exc, "status_code", None) or getattr(getattr(exc, "meta", None), "status", 0)
            log.warning("engine answered %s to a search on %s", status, self.alias)
            raise BackendUnavailable("The search engine could not answer.") from None
        except (TransportError, OSError, TimeoutError) as exc:
            log.warning("engine search failed: %s", type(exc).__name__)
            raise BackendUnavailable("The search engine is not reachable or did not answer in time.") from None
        return response.body  # type: ignore[no-any-return]

    async def ready(self) -> tuple[bool, str]:
        """Whether the alias exists and its cluster health is green or yellow; a short reason when not.

        Red (a primary shard has no live copy) is not ready: searches fail and the fallback
        serves. The alias check runs every time (it is what shows the engine answering); the
        health is asked at most once a second. Bounded only by the engine timeout: ``/readyz``
        bounds it by the readiness budget and treats anything it raises as "down"
        (``proxy.readiness.probe``).
        """
        try:
            client = await self._client()
            if not await client.indices.exists_alias(name=self.alias):
                return False, f"alias {self.alias} does not exist"
            now = time.monotonic()
            if self._health is None or now - self._health[0] >= _HEALTH_TTL_S:
                health = await client.cluster.health(index=self.alias)
                self._health = (now, str(health.body.get("status")))
        except BackendUnavailable:
            return False, "unreachable"
        except (ApiError, TransportError, OSError, TimeoutError) as exc:
            return False, type(exc).__name__
        status = self._health[1]
        return (True, "ok") if status == "green" else (status == "yellow", f"cluster {status}")


async def check_engine_access(url: str, access: EngineAccess, timeout: float) -> None:
    """At start: raise :class:`EngineAccessRefused` if the engine refuses our credentials or
    certificate (the proxy then exits 2); an engine that does not answer is not an error here —
    the proxy starts degraded and keeps trying."""
    try:
        client, _ = await asyncio.wait_for(
            create_engine_client(url, access=access, pool_size=1, request_timeout=timeout), timeout
        )
    except (TransportError, ApiError, OSError, TimeoutError):
        return
    await client.close()
