"""The storefront page: one HTML page with its stylesheet, script and icon, served at ``/``.

The files beside this module are the page as written — no framework, no build step. They are
read once, when the app is built (:func:`add_routes`): each asset is served under a name that
carries a hash of its bytes (``/storefront/storefront.3f2a1b9c04d1.js``), so it can be cached
for a year as ``immutable``; the HTML names those versions and is served ``no-cache``, so a
browser revalidates it on every load and a deploy reaches it at once. Every answer has a strong
``ETag`` (of the bytes sent: the gzip variant has its own) and ``If-None-Match`` is answered
with a 304.

The page calls the public HTTP API like any storefront would; this module never imports the
API's routes, the cache or anything on the search path, and reads no file per request.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

from proxy.http_caching import NO_CACHE, conditional_response, entity_tag

DIRECTORY: Final = Path(__file__).resolve().parent
PAGE: Final = "index.html"
# What the page is made of; nothing else in this directory (this module included) is served.
ASSETS: Final = ("storefront.css", "storefront.js", "favicon.svg")
ASSET_PREFIX: Final = "/storefront/"
# The paths this module serves, for the API's contract test (the page is not part of the API).
PATHS: Final = frozenset({"/", ASSET_PREFIX + "{name}"})

_CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# A versioned name never changes its bytes.
IMMUTABLE: Final = "public, max-age=31536000, immutable"
# The page talks to its own origin only; product images may come from any HTTPS host (the CDN).
_PAGE_SECURITY: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
# href="storefront.css" / src="storefront.js" in the HTML: replaced by the versioned path.
_REFERENCE: Final = re.compile(r'\b(href|src)="([A-Za-z0-9_.-]+)"')


@dataclass(frozen=True, slots=True)
class Variant:
    body: bytes
    etag: str


@dataclass(frozen=True, slots=True)
class Asset:
    """One file as served: its bytes and their gzip, each with its ETag, and fixed headers."""

    identity: Variant
    gzipped: Variant
    headers: dict[str, str]

    @classmethod
    def of(cls, body: bytes, content_type: str, cache_control: str, **extra: str) -> Asset:
        # mtime=0: the same bytes give the same gzip (and ETag) on every worker and host.
        gzipped = gzip.compress(body, compresslevel=9, mtime=0)
        headers = {
            "Content-Type": content_type,
            "Cache-Control": cache_control,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
            **extra,
        }
        return cls(Variant(body, entity_tag(body)), Variant(gzipped, entity_tag(gzipped)), headers)


@dataclass(frozen=True, slots=True)
class Storefront:
    page: Asset
    # By versioned name: "storefront.3f2a1b9c04d1.js".
    assets: dict[str, Asset]


def versioned_name(name: str, body: bytes) -> str:
    """``storefront.js`` -> ``storefront.<12 hex digits of its bytes' digest>.js``."""
    stem, dot, suffix = name.rpartition(".")
    digest = entity_tag(body).strip('"')[:12]
    return f"{stem}.{digest}{dot}{suffix}"


def load(directory: Path = DIRECTORY) -> Storefront:
    """Read the page and its assets; the HTML's references point at the versioned names.

    A reference in the HTML to a file that is not one of :data:`ASSETS` is a mistake in the
    page, and fails here, at start-up, rather than as a 404 in someone's browser.
    """
    assets: dict[str, Asset] = {}
    paths: dict[str, str] = {}
    for name in ASSETS:
        body = (directory / name).read_bytes()
        versioned = versioned_name(name, body)
        assets[versioned] = Asset.of(body, _CONTENT_TYPES[Path(name).suffix], IMMUTABLE)
        paths[name] = ASSET_PREFIX + versioned

    def versioned_reference(match: re.Match[str]) -> str:
        attribute, name = match.groups()
        if name not in paths:
            raise ValueError(f"{PAGE} refers to {name!r}, which is not one of the storefront's assets {ASSETS}")
        return f'{attribute}="{paths[name]}"'

    html = _REFERENCE.sub(versioned_reference, (directory / PAGE).read_text(encoding="utf-8"))
    page = Asset.of(html.encode(), _CONTENT_TYPES[".html"], NO_CACHE, **_PAGE_SECURITY)
    return Storefront(page, assets)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` names gzip with a quality above 0 (``*`` is not relied on)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() == "gzip":
            name, _, value = params.partition("=")
            if name.strip().lower() != "q":
                return True
            try:
                return float(value) > 0
            except ValueError:
                return False
    return False


def respond(request: web.BaseRequest, asset: Asset) -> web.Response:
    """The asset (gzipped when the client takes it), or a 304 when ``If-None-Match`` names it."""
    headers = dict(asset.headers)
    variant = asset.identity
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        variant = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    headers["ETag"] = variant.etag
    return conditional_response(variant.body, headers, request.headers.get("If-None-Match"))


def add_routes(app: web.Application) -> None:
    """Serve the page at ``/`` and its assets under ``/storefront/`` (GET and HEAD)."""
    storefront = load()

    async def page(request: web.Request) -> web.Response:
        return respond(request, storefront.page)

    async def asset(request: web.Request) -> web.Response:
        found = storefront.assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()  # the problems middleware answers it
        return respond(request, found)

    app.router.add_get("/", page)
    app.router.add_get(ASSET_PREFIX + "{name}", asset)
