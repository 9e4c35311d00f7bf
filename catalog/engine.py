"""The search-engine client factory shared by the proxy and the indexer.

Both services talk to the engine through the official ``elasticsearch[async]`` client. Real
Elasticsearch 9 accepts its compatibility media type and marks every answer with
``X-Elastic-Product: Elasticsearch``; OpenSearch (the dev stack's real node, and ``osmem-server``)
answers 406 to that media type and sends no product header, which the client refuses with
``UnsupportedProductError``. The factory asks ``GET /`` which engine it faces and, for an
OpenSearch-compatible one, uses a node class that sends plain ``application/json`` and vouches
for the product. One client class, no forked request code. Never holds a module-level client.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from elastic_transport import AiohttpHttpNode, HttpHeaders
from elastic_transport._node._base import NodeApiResponse
from elastic_transport.client_utils import DEFAULT, DefaultType
from elasticsearch import AsyncElasticsearch
from elasticsearch.serializer import OrjsonSerializer

# "application/vnd.elasticsearch+json; compatible-with=9" -> "application/json"
_COMPAT_MEDIA_TYPE = re.compile(r"application/vnd\.elasticsearch\+([a-z-]+);\s*compatible-with=\d+")


class PlainJsonNode(AiohttpHttpNode):
    """An aiohttp node for OpenSearch-compatible engines.

    It rewrites Elasticsearch compatibility media types to plain JSON, and marks each answer
    with the product header the client checks (OpenSearch does not send it; the request and
    response bodies of the APIs we use are the same on both engines).
    """

    async def perform_request(  # type: ignore[override]
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: DefaultType | float | None = DEFAULT,
    ) -> NodeApiResponse:
        if headers:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value:
                    headers[name] = _COMPAT_MEDIA_TYPE.sub(r"application/\1", value)
        response = await super().perform_request(
            method, target, body=body, headers=headers, request_timeout=request_timeout
        )
        answer_headers = response.meta.headers.copy()
        answer_headers["x-elastic-product"] = "Elasticsearch"
        return NodeApiResponse(dataclasses.replace(response.meta, headers=answer_headers), response.body)


@dataclass(frozen=True)
class EngineInfo:
    distribution: str  # "elasticsearch" or "opensearch"
    version: str

    @property
    def plain_json(self) -> bool:
        return self.distribution != "elasticsearch"


def engine_info_from_root(body: dict[str, Any]) -> EngineInfo:
    """Read the distribution from a ``GET /`` answer; Elasticsearch omits the field."""
    version = body.get("version") or {}
    return EngineInfo(
        distribution=str(version.get("distribution") or "elasticsearch").lower(),
        version=str(version.get("number") or ""),
    )


def _client(
    url: str, *, plain_json: bool, pool_size: int, request_timeout: float, max_retries: int
) -> AsyncElasticsearch:
    return AsyncElasticsearch(
        hosts=[url],
        node_class=PlainJsonNode if plain_json else AiohttpHttpNode,
        connections_per_node=pool_size,
        request_timeout=request_timeout,
        max_retries=max_retries,
        retry_on_timeout=False,
        http_compress=False,
        # orjson parses engine answers several times faster than the stdlib json module; a
        # search answer with aggregations is the biggest thing on the proxy's hot path.
        serializer=OrjsonSerializer(),
    )


async def create_engine_client(
    url: str,
    *,
    pool_size: int = 32,
    request_timeout: float = 5.0,
    max_retries: int = 0,
) -> tuple[AsyncElasticsearch, EngineInfo]:
    """Detect the engine behind ``url`` and return a client speaking its media types.

    Raises the client's ``ConnectionError`` when the engine does not answer; callers decide
    whether to retry (the indexer) or start degraded (the proxy).
    """
    # Both engines accept plain application/json, so the probe always uses it.
    probe = _client(url, plain_json=True, pool_size=1, request_timeout=request_timeout, max_retries=0)
    try:
        root = await probe.info()
    finally:
        await probe.close()
    info = engine_info_from_root(dict(root.body))
    client = _client(
        url,
        plain_json=info.plain_json,
        pool_size=pool_size,
        request_timeout=request_timeout,
        max_retries=max_retries,
    )
    return client, info
