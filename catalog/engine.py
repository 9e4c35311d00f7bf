"""The search-engine client factory shared by the proxy and the indexer.

Both services talk to the engine through the official ``elasticsearch[async]`` client. Real
Elasticsearch 9 accepts its compatibility media type and marks every answer with
``X-Elastic-Product: Elasticsearch``; OpenSearch (the dev stack's real node, and ``osmem-server``)
answers 406 to that media type and sends no product header, which the client refuses with
``UnsupportedProductError``. The factory asks ``GET /`` which engine it faces and, for an
OpenSearch-compatible one, uses a node class that sends plain ``application/json`` and vouches
for the product. One client class, no forked request code. Never holds a module-level client.

``ELASTICSEARCH_NODE`` may list several nodes: the client spreads requests over them (round
robin), marks a node that fails dead for a while (``dead_node_backoff_factor``) and retries a
request that failed to connect, or got 502/503/504, on another node — up to one retry per other
node. Timeouts are not retried: the caller's time budget is spent by then. Sniffing
(``ELASTICSEARCH_SNIFF``) learns the rest of the cluster; sniffed nodes are built from the same
node class, so OpenSearch's plain JSON holds for them too. Credentials (API key or user and
password), a CA file and a Cloud ID come from :class:`catalog.config.EngineAccess`; TLS
certificates are always verified. An engine refusing the credentials or the certificate raises
:class:`EngineAccessRefused` naming the setting, never echoing a secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import re
import ssl
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from elastic_transport import (
    AiohttpHttpNode,
    ApiResponseMeta,
    ConnectionError,
    ConnectionTimeout,
    HttpHeaders,
    NodeConfig,
    TlsError,
)
from elastic_transport._node._base import NodeApiResponse
from elastic_transport._node._http_aiohttp import aiohttp_fingerprint
from elastic_transport.client_utils import DEFAULT, DefaultType
from elasticsearch import AsyncElasticsearch, AuthenticationException, AuthorizationException
from elasticsearch.serializer import OrjsonSerializer

from catalog.config import ConfigError, EngineAccess, engine_nodes

# "application/vnd.elasticsearch+json; compatible-with=9" -> "application/json"
_COMPAT_MEDIA_TYPE = re.compile(r"application/vnd\.elasticsearch\+([a-z-]+);\s*compatible-with=\d+")
# Raised as they are, as elastic_transport's own node does: bugs, not a node failing.
_PROGRAMMING_ERRORS = (
    ValueError,
    KeyError,
    NameError,
    AttributeError,
    LookupError,
    AssertionError,
    MemoryError,
    RuntimeError,
    SystemError,
    TypeError,
)


class EngineNode(AiohttpHttpNode):
    """elastic_transport's aiohttp node, with less work per request.

    The same request, errors and TLS as its parent, whose ``perform_request`` this replaces: that
    one copied the node's headers into every request (the session sends them already) and made a
    new ``ClientTimeout`` each time, and, for OpenSearch, the old ``PlainJsonNode`` copied the
    headers once more and the answer's meta twice. Issue 24: on a miss the engine client's layers
    cost about twice the CPU of aiohttp's own client under them; this node took 75–200 µs of CPU
    off each engine request in three in-process runs against the replay engine (2-core machine,
    load 10+; benchmarks/results/2026-12-06-miss-path/).
    """

    plain_json: ClassVar[bool] = False

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    def _timeout(self, request_timeout: DefaultType | float | None) -> aiohttp.ClientTimeout:
        seconds = self.config.request_timeout if isinstance(request_timeout, DefaultType) else request_timeout
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            # total=0: no timeout, as the parent class reads None.
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds if seconds is not None else 0)
        return timeout

    async def perform_request(  # type: ignore[override]
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: DefaultType | float | None = DEFAULT,
    ) -> NodeApiResponse:
        if self.session is None:
            self._create_aiohttp_session()
        assert self.session is not None
        # The node's own headers are the session's defaults: aiohttp adds them.
        sent = dict(headers.items()) if headers else {}
        if self.plain_json:
            for name in ("accept", "content-type"):
                value = sent.get(name)
                if value and "compatible-with" in value:
                    sent[name] = _COMPAT_MEDIA_TYPE.sub(r"application/\1", value)
        if body and self._http_compress:
            body = gzip.compress(body)
            sent["content-encoding"] = "gzip"
        options: dict[str, Any] = {}
        if self._ssl_assert_fingerprint:
            options["ssl"] = aiohttp_fingerprint(self._ssl_assert_fingerprint)
        start = self._loop.time()
        try:
            async with self.session.request(
                method,
                self.base_url + target,
                data=body or None,
                headers=sent,
                timeout=self._timeout(request_timeout),
                **options,
            ) as response:
                raw = await response.read()
        except (RecursionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            error: Exception
            if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
                error = ConnectionTimeout("Connection timed out during request", errors=(exc,))
            elif isinstance(exc, (ssl.SSLError, aiohttp.ClientSSLError)):
                error = TlsError(str(exc), errors=(exc,))
            elif isinstance(exc, _PROGRAMMING_ERRORS):
                raise
            else:
                error = ConnectionError(str(exc), errors=(exc,))
            self._log_request(method=method, target=target, headers=headers, body=body, exception=error)
            raise error from None
        answer_headers = HttpHeaders(response.headers)
        if self.plain_json:
            # OpenSearch sends no product header; the client checks it (the APIs we use are alike).
            answer_headers["x-elastic-product"] = "Elasticsearch"
        meta = ApiResponseMeta(
            node=self.config,
            duration=self._loop.time() - start,
            http_version="1.1",
            status=response.status,
            headers=answer_headers,
        )
        self._log_request(method=method, target=target, headers=headers, body=body, meta=meta, response=raw)
        return NodeApiResponse(meta, raw)


class PlainJsonNode(EngineNode):
    """An :class:`EngineNode` for OpenSearch-compatible engines.

    It rewrites Elasticsearch compatibility media types to plain JSON, and marks each answer
    with the product header the client checks (OpenSearch does not send it; the request and
    response bodies of the APIs we use are the same on both engines).
    """

    plain_json: ClassVar[bool] = True


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


class EngineAccessRefused(ConfigError):
    """The engine refused our credentials or its certificate failed verification; names the setting."""


def sniffed_node(node_info: dict[str, Any], node_config: NodeConfig) -> NodeConfig | None:
    """A sniffed node worth sending searches to: any but a dedicated cluster manager."""
    roles = set(node_info.get("roles") or ())
    return None if roles and roles <= {"master", "cluster_manager"} else node_config


def _client(
    url: str,
    *,
    plain_json: bool,
    pool_size: int,
    request_timeout: float,
    max_retries: int,
    access: EngineAccess,
) -> AsyncElasticsearch:
    options: dict[str, Any] = {}
    if access.cloud_id:
        options["cloud_id"] = access.cloud_id
    else:
        nodes = engine_nodes(url)
        options["hosts"] = nodes
        # One more try per other node: a dead node's request is sent to the next one.
        max_retries += len(nodes) - 1
    if access.api_key:
        options["api_key"] = access.api_key
    elif access.username:
        options["basic_auth"] = (access.username, access.password)
    if access.ca_certs:
        options["ca_certs"] = access.ca_certs
    if access.sniff:
        options.update(
            sniff_on_start=True,
            sniff_on_node_failure=True,
            min_delay_between_sniffing=10.0,
            sniff_timeout=request_timeout,
            sniffed_node_callback=sniffed_node,
        )
    return AsyncElasticsearch(
        node_class=PlainJsonNode if plain_json else EngineNode,
        connections_per_node=pool_size,
        request_timeout=request_timeout,
        max_retries=max_retries,
        retry_on_timeout=False,
        verify_certs=True,
        http_compress=False,
        # orjson parses engine answers several times faster than the stdlib json module; a
        # search answer with aggregations is the biggest thing on the proxy's hot path.
        serializer=OrjsonSerializer(),
        **options,
    )


async def create_engine_client(
    url: str,
    *,
    access: EngineAccess | None = None,
    pool_size: int = 32,
    request_timeout: float = 5.0,
    max_retries: int = 0,
) -> tuple[AsyncElasticsearch, EngineInfo]:
    """Detect the engine behind ``url`` (one URL or a comma-separated list) and return a client
    speaking its media types.

    Raises the client's ``ConnectionError`` when the engine does not answer (callers decide
    whether to retry, as the indexer does, or start degraded, as the proxy does), and
    :class:`EngineAccessRefused` when it refuses the credentials or its certificate.
    """
    access = access or EngineAccess()
    # Both engines accept plain application/json, so the probe always uses it; no sniffing yet.
    probe_access = dataclasses.replace(access, sniff=False)
    probe = _client(
        url, plain_json=True, pool_size=1, request_timeout=request_timeout, max_retries=0, access=probe_access
    )
    try:
        root = await probe.info()
    except AuthenticationException:
        raise EngineAccessRefused(f"{access.credential_setting}: the engine refused these credentials (401)") from None
    except AuthorizationException:
        raise EngineAccessRefused(
            f"{access.credential_setting}: the engine accepted these credentials but denies them access (403)"
        ) from None
    except TlsError:
        where = "the CA in that file" if access.ca_certs else "the system's CAs (set it to the engine's CA)"
        raise EngineAccessRefused(
            f"ELASTICSEARCH_CA_CERTS: the engine's TLS certificate does not verify against {where}"
        ) from None
    finally:
        await probe.close()
    info = engine_info_from_root(dict(root.body))
    client = _client(
        url,
        plain_json=info.plain_json,
        pool_size=pool_size,
        request_timeout=request_timeout,
        max_retries=max_retries,
        access=access,
    )
    return client, info
