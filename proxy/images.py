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

**Only http(s) images.** ``image_url`` is whatever a seller stored, so it is checked here before
any client sees it (issue 23): an absolute URL whose scheme is not ``http`` or ``https``
(``javascript:``, ``data:``, ``file:``...), a URL with control characters (a browser drops a tab
or newline inside ``java\tscript:``) or one longer than :data:`MAX_IMAGE_URL_CHARS` is given as
``null``. Spaces and other bytes a URL may not hold are percent-escaped, and in ``image_srcset``
commas too, so a path cannot split the list into candidates of its own. A relative path is kept
(it names an image on the storefront's own host, or on the CDN's).
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Final
from urllib.parse import quote, urlsplit

RESIZE_SCHEMES: Final = ("query", "cloudflare")
# Browsers and CDNs take far longer URLs, but no product image needs one.
MAX_IMAGE_URL_CHARS: Final = 2048
_SCHEMES: Final = ("http", "https")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
# What a URL may hold as it is; anything else (a space, non-ASCII...) is percent-escaped.
_URL_SAFE: Final = "/:?#[]@!$&'()*+,;=%-._~"


def safe_image_url(raw: object) -> str | None:
    """``raw`` fit to give a client as an image URL, or None (see the module docstring)."""
    if not isinstance(raw, str):
        return None
    # Every item of every answer the engine makes passes here: urlsplit and quote were the
    # proxy's dearest function on a cache miss (py-spy, issue 24). The same catalog's URLs come
    # back answer after answer, so ordinary ones are remembered (bounded by count and length).
    if len(raw) <= _REMEMBERED_URL_CHARS:
        return _checked_and_remembered(raw)
    return _checked(raw)


# URLs up to this length are remembered, at most _REMEMBERED_URLS of them (~2.5 MB at most).
_REMEMBERED_URL_CHARS: Final = 256
_REMEMBERED_URLS: Final = 4096


def _checked(raw: str) -> str | None:
    if not raw or len(raw) > MAX_IMAGE_URL_CHARS or _CONTROLS.search(raw):
        return None
    try:
        parts = urlsplit(raw)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    if parts.scheme and parts.scheme not in _SCHEMES:
        return None
    if parts.scheme and not parts.hostname:
        return None
    return quote(raw, safe=_URL_SAFE)


_checked_and_remembered = lru_cache(maxsize=_REMEMBERED_URLS)(_checked)


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

    def url(self, original: object) -> str | None:
        """``original`` on the CDN's host, its path and query kept; without a CDN as stored,
        escaped; None when it is not an http(s) URL (:func:`safe_image_url`)."""
        safe = safe_image_url(original)
        if safe is None or self.base is None:
            return safe
        return self.base + _path_and_query(safe)

    def srcset(self, original: object) -> str | None:
        """The ``srcset`` of the resized variants of ``original``; None without an image."""
        safe = safe_image_url(original)
        if safe is None or not self.widths:
            return None
        # A comma in a candidate's URL would read as the end of that candidate.
        return ", ".join(f"{self._variant(safe, width).replace(',', '%2C')} {width}w" for width in self.widths)

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
