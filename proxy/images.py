"""Product image URLs as responses give them: through the CDN when ``CDN_URL`` is set. Pure.

``CDN_URL`` (``https://cdn.hos-marketplace.com``, optionally with a path prefix) replaces the
scheme and host of every ``image_url``; the path (and query) is kept, after the prefix. With
``CDN_IMAGE_WIDTHS`` an item also carries ``image_srcset``, an HTML ``srcset`` of the resized
variants the CDN makes, addressed by ``CDN_IMAGE_RESIZE``:

- ``query`` (default): ``<url>?width=400`` — CloudFront with a resizing function, Fastly Image
  Optimizer, imgix and most image CDNs take a width parameter;
- ``cloudflare``: Cloudflare Image Resizing, ``<cdn origin>/cdn-cgi/image/width=400/<path>``.

URLs are rewritten when an answer is made, by the shaping code (``proxy.answers``), for the
engine's and the fallback's answers alike; :attr:`ImageUrls.cache_namespace` goes into the
response cache's Redis keys, so proxies with other image settings sharing a Redis never serve
each other's bytes, and a changed setting is never answered from an entry made before it.
"""

from __future__ import annotations

import hashlib
from typing import Final
from urllib.parse import urlsplit

RESIZE_SCHEMES: Final = ("query", "cloudflare")


class ImageUrls:
    __slots__ = ("base", "cache_namespace", "origin", "prefix", "resize", "widths")

    def __init__(self, cdn_url: str | None = None, widths: tuple[int, ...] = (), resize: str = "query") -> None:
        assert resize in RESIZE_SCHEMES, resize
        assert cdn_url is not None or not widths, "widths need a CDN"
        self.base = cdn_url.rstrip("/") if cdn_url else None
        self.widths = widths
        self.resize = resize
        parts = urlsplit(self.base or "")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path
        # Empty without a CDN: the keys of a proxy that uses none stay as they were.
        settings = repr((self.base, widths, resize)).encode()
        self.cache_namespace = "" if self.base is None else hashlib.blake2b(settings, digest_size=6).hexdigest() + "|"

    def url(self, original: str | None) -> str | None:
        """``original`` on the CDN's host, its path and query kept; unchanged without a CDN."""
        if original is None or self.base is None:
            return original
        return self.base + _path_and_query(original)

    def srcset(self, original: str | None) -> str | None:
        """The ``srcset`` of the resized variants of ``original``; None without an image."""
        if original is None or not self.widths:
            return None
        return ", ".join(f"{self._variant(original, width)} {width}w" for width in self.widths)

    def _variant(self, original: str, width: int) -> str:
        if self.resize == "cloudflare":
            return f"{self.origin}/cdn-cgi/image/width={width}{self.prefix}{_path_and_query(original)}"
        url = self.url(original)
        assert url is not None
        return f"{url}{'&' if '?' in url else '?'}width={width}"


def _path_and_query(url: str) -> str:
    """``/path?query`` of ``url`` (absolute or not); the fragment is dropped."""
    parts = urlsplit(url)
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    return path + (f"?{parts.query}" if parts.query else "")
