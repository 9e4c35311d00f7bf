"""How the proxy serves the storefront page: versioned assets, ETags, 304s, gzip (no browser).

What the page does in a browser is ``tests/test_storefront_browser.py``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.errors import PROBLEM_CONTENT_TYPE
from proxy.storefront import ASSETS, DIRECTORY, IMMUTABLE, PAGE, accepts_gzip, load, versioned_name
from tests.conftest import SearchCatalog, proxy_settings

_ASSET_PATH = re.compile(r'(?:href|src)="(/storefront/[^"]+)"')
_IDENTITY = {"Accept-Encoding": "identity"}


async def _asset_paths(client: TestClient) -> list[str]:
    response = await client.get("/", headers=_IDENTITY)
    return _ASSET_PATH.findall(await response.text())


async def test_the_page_is_revalidated_on_every_load_with_its_etag(proxy_client: TestClient) -> None:
    response = await proxy_client.get("/", headers=_IDENTITY)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    etag = response.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]+"', etag), etag  # strong
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        revalidated = await proxy_client.get("/", headers={**_IDENTITY, "If-None-Match": sent})
        assert revalidated.status == 304, sent
        assert await revalidated.read() == b""
        assert revalidated.headers["ETag"] == etag
        assert revalidated.headers["Cache-Control"] == "no-cache"
    changed = await proxy_client.get("/", headers={**_IDENTITY, "If-None-Match": '"not-this-one"'})
    assert changed.status == 200


async def test_the_assets_have_versioned_names_and_are_cached_for_a_year(proxy_client: TestClient) -> None:
    paths = await _asset_paths(proxy_client)
    assert len(paths) == len(ASSETS)
    for path in paths:
        response = await proxy_client.get(path, headers=_IDENTITY)
        assert response.status == 200, path
        assert response.headers["Cache-Control"] == IMMUTABLE == "public, max-age=31536000, immutable"
        body = await response.read()
        original = next(name for name in ASSETS if path.endswith(versioned_name(name, body)))
        assert body == (DIRECTORY / original).read_bytes()
        revalidated = await proxy_client.get(path, headers={**_IDENTITY, "If-None-Match": response.headers["ETag"]})
        assert revalidated.status == 304
        assert revalidated.headers["Cache-Control"] == IMMUTABLE


async def test_gzip_goes_to_clients_that_take_it_with_an_etag_of_its_own(proxy_client: TestClient) -> None:
    for path in ["/", *await _asset_paths(proxy_client)]:
        plain = await proxy_client.get(path, headers=_IDENTITY)
        zipped = await proxy_client.get(path, headers={"Accept-Encoding": "br, gzip;q=0.8"})
        assert "Content-Encoding" not in plain.headers
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert zipped.headers["Vary"] == plain.headers["Vary"] == "Accept-Encoding"
        assert await zipped.read() == await plain.read()  # the client decompressed it
        assert zipped.headers["ETag"] != plain.headers["ETag"]
        again = await proxy_client.get(
            path, headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]}
        )
        assert again.status == 304


async def test_head_answers_the_headers_alone(proxy_client: TestClient) -> None:
    response = await proxy_client.head("/", headers=_IDENTITY)
    assert response.status == 200
    assert response.headers["ETag"]
    assert await response.read() == b""


@pytest.mark.parametrize(
    "path", ["/storefront/storefront.js", "/storefront/__init__.py", "/storefront/storefront.000000000000.js"]
)
async def test_anything_but_a_current_versioned_asset_is_a_404(proxy_client: TestClient, path: str) -> None:
    response = await proxy_client.get(path)
    assert response.status == 404
    assert response.headers["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)


async def test_the_page_is_not_rate_limited(search_catalog: SearchCatalog, stack_urls: StackUrls) -> None:
    settings = proxy_settings(search_catalog, stack_urls, rate_limit_enabled=True, rate_limit_max=1)
    async with TestClient(TestServer(create_app(settings))) as client:
        paths = ["/", *await _asset_paths(client)]
        for _ in range(3):
            for path in paths:
                assert (await client.get(path)).status == 200, path
        assert (await client.get("/api/search")).status == 200
        assert (await client.get("/api/search")).status == 429


@pytest.mark.parametrize(
    ("accept_encoding", "gzip"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=junk", False),
        ("deflate, br", False),
        ("*", False),
        ("", False),
        ("x-gzip", False),
    ],
)
def test_gzip_is_sent_only_when_the_client_names_it(accept_encoding: str, gzip: bool) -> None:
    assert accepts_gzip(accept_encoding) is gzip


def test_a_page_naming_a_file_that_is_not_an_asset_fails_at_start(tmp_path: Path) -> None:
    for name in (*ASSETS, PAGE):
        shutil.copy(DIRECTORY / name, tmp_path / name)
    load(tmp_path)  # as shipped: fine
    page = tmp_path / PAGE
    page.write_text(page.read_text().replace("</body>", '<script src="extra.js"></script></body>'))
    with pytest.raises(ValueError, match=r"extra\.js"):
        load(tmp_path)


def test_a_versioned_name_changes_with_the_bytes() -> None:
    assert versioned_name("storefront.js", b"a") != versioned_name("storefront.js", b"b")
    assert re.fullmatch(r"storefront\.[0-9a-f]{12}\.js", versioned_name("storefront.js", b"a"))
