"""The storefront page in a real browser: Debian's Chromium, driven by Playwright.

Each test serves the page from an in-process proxy over the shared search catalog and uses it
as a shopper would — typing, arrow keys, clicks, back and forward — and checks what the page
shows against what the API answers. Product images (an example CDN host) are refused, so
cards show their placeholders. Screenshots of the states reached go to
``test-output/storefront/`` (not committed); ``HOS_DOCS_SCREENSHOT=1`` also rewrites
``docs/storefront.png``, the picture in docs/api.md.

Skipped, with the reason in the summary, where Playwright or Chromium is missing
(``pip install playwright``; ``apt-get install chromium`` — Playwright's own browser download
is not used).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from elasticsearch import AsyncElasticsearch

from devstack.servers import free_port
from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.settings import ProxySettings
from tests.conftest import SearchCatalog, proxy_settings
from tests.indexer_support import eventually

try:
    from playwright.async_api import Browser, Page, Request, Response, Route, ViewportSize, async_playwright, expect
except ImportError:  # the reason is given by the skip below
    async_playwright = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "storefront"
DOCS_SHOT = ROOT / "docs" / "storefront.png"
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
_MISSING = (
    "Playwright is not installed (pip install playwright)"
    if async_playwright is None
    else "Chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
    if CHROMIUM is None
    else None
)
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"no browser: {_MISSING}")

DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
# Generous: the first search of a fresh proxy also warms the engine.
WAIT_MS = 15_000


# --- fixtures: one browser per run, a proxy and a page per test ------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        await launched.close()


@asynccontextmanager
async def serving(settings: ProxySettings) -> AsyncIterator[str]:
    """An in-process proxy (a real server on loopback) with ``settings``: its base URL."""
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@asynccontextmanager
async def opened(browser: Browser, base: str, viewport: ViewportSize = DESKTOP) -> AsyncIterator[Page]:
    """A fresh page (own cookies and cache) that may reach ``base`` only; no script errors allowed."""
    context = await browser.new_context(viewport=viewport, locale="en-GB")
    context.set_default_timeout(WAIT_MS)

    async def elsewhere(route: Route) -> None:
        await route.abort()

    await context.route(lambda url: not url.startswith(base), elsewhere)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        assert errors == [], f"script errors on the page: {errors}"
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def base(search_catalog: SearchCatalog, stack_urls: StackUrls) -> AsyncIterator[str]:
    async with serving(proxy_settings(search_catalog, stack_urls)) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser, base: str) -> AsyncIterator[Page]:
    async with opened(browser, base) as opened_page:
        yield opened_page


if async_playwright is not None:
    expect.set_options(timeout=WAIT_MS)


# --- what the tests share ----------------------------------------------------------------------


def is_search(response: Response) -> bool:
    return urlsplit(response.url).path == "/api/search"


async def answered(page: Page, action: Callable[[], Awaitable[Any]]) -> Response:
    """Do ``action``, wait for the search it starts and for the page to show its answer."""
    async with page.expect_response(is_search) as response:
        await action()
    answer = await response.value
    await expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    return answer


def query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


async def shown_total(page: Page) -> int:
    return int(await page.locator("#status").get_attribute("data-total") or "-1")


async def shown_ids(page: Page) -> list[str]:
    return await page.locator(".card").evaluate_all("cards => cards.map(card => card.dataset.id)")


async def shown_prices(page: Page) -> list[float]:
    return await page.locator(".card .price").evaluate_all("prices => prices.map(p => Number(p.dataset.price))")


async def facet_counts(page: Page, name: str) -> dict[str, int]:
    """Every value of a facet with its count, as the page shows them ("Show all" opened)."""
    more = page.locator(f"#facet-{name} .more")
    if await more.count() and await more.get_attribute("aria-expanded") == "false":
        await more.click()
    return await page.locator(f'#facet-{name} input[name="{name}"]').evaluate_all(
        "inputs => Object.fromEntries(inputs.map(i => [i.value, Number(i.closest('li').querySelector('.count')"
        ".dataset.count)]))"
    )


async def screenshot(page: Page, name: str) -> None:
    """The page from its top, as the state's picture under ``test-output/storefront/``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=SHOTS / f"{name}.png")


# --- the search box ----------------------------------------------------------------------------


async def test_typing_hary_suggests_harry_potter_and_enter_shows_results(page: Page, base: str) -> None:
    await answered(page, lambda: page.goto(base + "/"))
    box = page.get_by_role("combobox", name="Search products")
    suggestion_requests: list[str] = []
    page.on("request", lambda r: suggestion_requests.append(r.url) if "/suggestions" in r.url else None)

    await box.press_sequentially("hary", delay=30)  # faster than the debounce: one request
    listbox = page.get_by_role("listbox")
    harry = listbox.get_by_role("option", name=re.compile("^Harry Potter"))
    await expect(harry.first).to_be_visible()
    await expect(box).to_have_attribute("aria-expanded", "true")
    assert [parse_qs(urlsplit(url).query)["q"] for url in suggestion_requests] == [["hary"]]
    # The typed prefix is marked (as far as it matches: "Har" of "Harry").
    await expect(listbox.locator('[role="option"] mark').first).to_have_text("Har")

    await box.press("ArrowDown")
    first = listbox.get_by_role("option").first
    await expect(first).to_have_attribute("aria-selected", "true")
    await expect(box).to_have_attribute("aria-activedescendant", await first.get_attribute("id") or "")
    await screenshot(page, "suggestions")
    await box.press("ArrowUp")  # back to the text box: nothing chosen
    await expect(box).not_to_have_attribute("aria-activedescendant", re.compile("."))
    await box.press("Escape")
    await expect(box).to_have_attribute("aria-expanded", "false")
    await expect(listbox).to_be_hidden()
    await expect(box).to_have_value("hary")

    answer = await answered(page, lambda: box.press("Enter"))
    assert query(page) == {"q": ["hary"]}
    body = await answer.json()
    assert body["total"] > 0
    await expect(page.locator("#status")).to_have_attribute("data-total", str(body["total"]))
    assert await shown_ids(page) == [item["id"] for item in body["items"]]
    marked = {text.lower() for text in await page.locator(".card .name mark").all_inner_texts()}
    assert "harry" in marked, marked
    # The signs of the system, from the answer's headers.
    system = page.locator("#system")
    await expect(system).to_have_attribute("data-backend", answer.headers["x-search-backend"])
    await expect(system).to_have_attribute("data-cache", answer.headers["x-cache"])
    await expect(system).to_contain_text(re.compile(r"\d+ ms"))
    await screenshot(page, "results")
    if os.environ.get("HOS_DOCS_SCREENSHOT"):
        await page.screenshot(path=DOCS_SHOT)


async def test_choosing_a_fandom_suggestion_filters_by_it(page: Page, base: str) -> None:
    await answered(page, lambda: page.goto(base + "/"))
    box = page.get_by_role("combobox", name="Search products")
    await box.press_sequentially("hary", delay=30)
    option = page.get_by_role("option", name=re.compile("^Harry Potter"))
    await expect(option.first).to_be_visible()
    assert await option.first.get_attribute("data-type") == "fandom"
    await box.press("ArrowDown")
    await answered(page, lambda: box.press("Enter"))
    assert query(page) == {"fandom": ["Harry Potter"]}
    await expect(page.locator('#facet-fandom input[value="Harry Potter"]')).to_be_checked()
    await expect(page.get_by_role("button", name="Remove filter Fandom: Harry Potter")).to_be_visible()
    await expect(box).to_have_value("")
    metas = await page.locator(".card .meta").all_inner_texts()
    assert metas and all(meta.startswith("Harry Potter") for meta in metas), metas


async def test_a_slow_stale_suggestion_is_cancelled_and_never_shown(page: Page, base: str) -> None:
    await answered(page, lambda: page.goto(base + "/"))
    release = asyncio.Event()

    def suggestions_for(prefix: str) -> Callable[[Request | Response], bool]:
        return lambda r: "/suggestions" in r.url and parse_qs(urlsplit(r.url).query)["q"] == [prefix]

    async def hold_the_first(route: Route) -> None:
        if suggestions_for("ha")(route.request):
            await release.wait()
        try:
            await route.continue_()
        except Exception:
            pass  # the page gave up on it: that is the point

    await page.route(re.compile(r"/api/search/suggestions\?"), hold_the_first)
    failed: list[Request] = []
    page.on("requestfailed", lambda request: failed.append(request))
    box = page.get_by_role("combobox", name="Search products")
    async with page.expect_request(suggestions_for("ha")):
        await box.press_sequentially("ha")
    async with page.expect_response(suggestions_for("harr")) as fresh:
        await box.press_sequentially("rr")
    wanted = [s["text"] for s in (await (await fresh.value).json())["suggestions"]]
    options = page.get_by_role("option")
    await expect(options.first).to_be_visible()
    release.set()

    async def cancelled() -> bool:
        return [r.failure for r in failed if suggestions_for("ha")(r)] == ["net::ERR_ABORTED"]

    await eventually(cancelled, timeout=WAIT_MS / 1000, what="the stale suggestion request cancelled")
    assert [text.strip() for text in await options.locator(".text").all_inner_texts()] == wanted


# --- facets ------------------------------------------------------------------------------------


async def test_two_fandoms_are_ored_and_the_other_fandom_counts_stay(page: Page, base: str) -> None:
    await answered(page, lambda: page.goto(base + "/"))
    before = await facet_counts(page, "fandom")
    assert len(before) > 2
    harry, wars = before["Harry Potter"], before["Star Wars"]

    await answered(page, lambda: page.locator('#facet-fandom input[value="Harry Potter"]').check())
    assert await shown_total(page) == harry
    await answered(page, lambda: page.locator('#facet-fandom input[value="Star Wars"]').check())
    assert query(page) == {"fandom": ["Harry Potter", "Star Wars"]}
    assert await shown_total(page) == harry + wars
    # Disjunctive: a fandom's count ignores the fandom filter, so none changed.
    assert await facet_counts(page, "fandom") == before
    await expect(page.locator('#facet-fandom input[value="Harry Potter"]')).to_be_checked()
    # The other facets do follow it: every product has one category.
    assert sum((await facet_counts(page, "category")).values()) == harry + wars
    fandoms = {text.split(" · ")[0] for text in await page.locator(".card .meta").all_inner_texts()}
    assert fandoms <= {"Harry Potter", "Star Wars"}
    await screenshot(page, "two-fandoms")


async def test_price_and_stock_filters_narrow_the_results(page: Page, base: str, engine: AsyncElasticsearch) -> None:
    await answered(page, lambda: page.goto(base + "/"))
    bucket = page.locator("#price-10-20")
    count = int(await page.locator('label[for="price-10-20"] .count').get_attribute("data-count") or "-1")
    await answered(page, lambda: bucket.check())
    assert query(page) == {"min_price": ["10"], "max_price": ["19.99"]}  # the bucket is [10, 20)
    root = (await engine.info()).body
    if root.get("cluster_name") == "osmem":
        # The imitation engine compares a scaled_float with 19.99 * 100 = 1998.99…, floored: it
        # leaves the 19.99s out of max_price=19.99 (OpenSearch and Elasticsearch do not).
        assert await shown_total(page) <= count
    else:
        assert await shown_total(page) == count
    assert all(10 <= price < 20 for price in await shown_prices(page))
    await answered(page, lambda: page.get_by_role("checkbox", name="In stock only").check())
    assert query(page)["in_stock"] == ["true"]
    assert await page.locator(".card .stock.out").count() == 0
    await answered(page, lambda: page.get_by_role("button", name="Remove filter Price: 10 to 19.99").click())
    assert query(page) == {"in_stock": ["true"]}


# --- paging, sorting, history --------------------------------------------------------------------


async def test_paging_and_sorting_change_the_results_and_the_url_and_back_restores_them(page: Page, base: str) -> None:
    await answered(page, lambda: page.goto(base + "/?fandom=Harry+Potter"))
    first_page = await shown_ids(page)
    pager = page.get_by_role("navigation", name="Pages")

    await answered(page, lambda: pager.get_by_role("link", name="Next").click())
    assert query(page) == {"fandom": ["Harry Potter"], "page": ["2"]}
    second_page = await shown_ids(page)
    assert second_page and not set(second_page) & set(first_page)
    await expect(pager.locator('[aria-current="page"]')).to_have_text("2")
    await screenshot(page, "page-2")

    await answered(page, lambda: page.get_by_label("Sort by").select_option("price_asc"))
    assert query(page) == {"fandom": ["Harry Potter"], "sort": ["price_asc"]}  # back to page 1
    cheapest = await shown_ids(page)
    prices = await shown_prices(page)
    assert prices == sorted(prices) and cheapest != first_page

    await answered(page, lambda: page.go_back())
    assert query(page) == {"fandom": ["Harry Potter"], "page": ["2"]}
    assert await shown_ids(page) == second_page
    await expect(page.get_by_label("Sort by")).to_have_value("newest")
    await answered(page, lambda: page.go_back())
    assert query(page) == {"fandom": ["Harry Potter"]}
    assert await shown_ids(page) == first_page
    await answered(page, lambda: page.go_forward())
    await answered(page, lambda: page.go_forward())
    assert await shown_ids(page) == cheapest
    await expect(page.get_by_label("Sort by")).to_have_value("price_asc")


async def test_a_shared_link_opens_the_same_search(page: Page, base: str) -> None:
    link = base + "/?q=wand&fandom=Harry+Potter&in_stock=true&sort=price_desc"
    answer = await answered(page, lambda: page.goto(link))
    assert urlsplit(answer.url).query == urlsplit(link).query
    await expect(page.get_by_role("combobox", name="Search products")).to_have_value("wand")
    await expect(page.locator('#facet-fandom input[value="Harry Potter"]')).to_be_checked()
    await expect(page.get_by_role("checkbox", name="In stock only")).to_be_checked()
    await expect(page.get_by_label("Sort by")).to_have_value("price_desc")
    body = await answer.json()
    assert await shown_ids(page) == [item["id"] for item in body["items"]]
    assert all(item["in_stock"] and item["fandom"] == "Harry Potter" for item in body["items"])


async def test_a_search_with_no_results_suggests_popular_fandoms(page: Page, base: str) -> None:
    await answered(page, lambda: page.goto(base + "/?q=qqqqqqqq"))
    empty = page.locator("#empty")
    await expect(empty).to_contain_text("No products found")
    popular = empty.get_by_role("link", name="Harry Potter")
    await expect(popular).to_be_visible()
    await screenshot(page, "no-results")
    await answered(page, lambda: popular.click())
    assert query(page) == {"fandom": ["Harry Potter"]}
    assert await shown_total(page) > 0


# --- when the API says no ----------------------------------------------------------------------


async def test_a_rate_limited_search_says_how_long_to_wait(
    browser: Browser, search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    settings = proxy_settings(search_catalog, stack_urls, rate_limit_enabled=True, rate_limit_max=1)
    async with serving(settings) as url, opened(browser, url) as page:
        await answered(page, lambda: page.goto(url + "/"))  # the one token
        refused = await answered(page, lambda: page.get_by_role("checkbox", name="In stock only").check())
        assert refused.status == 429
        wait = int(refused.headers["retry-after"])
        problem = page.get_by_role("alert")
        await expect(problem).to_contain_text("Too many searches")
        await expect(problem).to_contain_text(f"wait {wait} seconds")
        await expect(problem.get_by_role("button", name=re.compile("^Try again"))).to_be_disabled()
        await expect(page.locator(".card")).to_have_count(0)
        await screenshot(page, "rate-limited")


async def test_an_unavailable_search_backend_says_so(
    browser: Browser, search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    settings = proxy_settings(
        search_catalog,
        stack_urls,
        elasticsearch_node=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        fallback_enabled=False,
    )
    async with serving(settings) as url, opened(browser, url) as page:
        unavailable = await answered(page, lambda: page.goto(url + "/?q=wand"))
        assert unavailable.status == 503
        problem = page.get_by_role("alert")
        await expect(problem).to_contain_text("Search is unavailable right now")
        await expect(problem).to_contain_text(f"try again in {unavailable.headers['retry-after']} second")
        await screenshot(page, "unavailable")
        retry = problem.get_by_role("button", name="Try again")
        await expect(retry).to_be_enabled()  # after Retry-After
        again = await answered(page, lambda: retry.click())
        assert again.status == 503


async def test_a_link_the_api_refuses_says_why_and_offers_a_new_search(page: Page, base: str) -> None:
    refused = await answered(page, lambda: page.goto(base + "/?q=wand&min_price=cheap"))
    assert refused.status == 400
    problem = page.get_by_role("alert")
    await expect(problem).to_contain_text("This search could not be run")
    await expect(problem).to_contain_text("min_price: must be a decimal number")
    await expect(problem.get_by_role("button")).to_have_count(0)  # the same search again is no use
    await answered(page, lambda: problem.get_by_role("link", name="Start a new search").click())
    assert query(page) == {}
    assert await shown_total(page) > 0


# --- phones and accessibility ------------------------------------------------------------------


async def test_the_page_fits_a_phone_and_its_filters_fold_away(browser: Browser, base: str) -> None:
    async with opened(browser, base, PHONE) as page:
        await answered(page, lambda: page.goto(base + "/?q=wand"))
        width = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"the page scrolls sideways: {width}"
        filters = page.get_by_role("complementary", name="Filters")
        toggle = page.get_by_role("button", name="Filters")
        await expect(filters).to_be_hidden()
        await screenshot(page, "phone")
        await toggle.click()
        await expect(toggle).to_have_attribute("aria-expanded", "true")
        await expect(filters).to_be_visible()
        await answered(page, lambda: filters.get_by_role("checkbox", name="In stock only").check())
        assert query(page) == {"q": ["wand"], "in_stock": ["true"]}
        await expect(toggle).to_have_text("Filters (1)")
        await screenshot(page, "phone-filters")
        await filters.get_by_role("button", name="Show results").click()
        await expect(filters).to_be_hidden()
        await expect(page.get_by_role("heading", level=1)).to_be_focused()


# Every visible control named; text against its background at WCAG AA (4.5:1, 3:1 when large).
_AUDIT = """() => {
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const unnamed = [];
  for (const el of document.querySelectorAll("input, select, button, a[href], [role=combobox], [role=option]")) {
    if (!visible(el)) continue;
    const name = el.getAttribute("aria-label") || (el.labels && [...el.labels].map(l => l.textContent).join(" ")) ||
      el.textContent;
    if (!name || !name.trim()) unnamed.push(el.outerHTML.slice(0, 80));
  }
  const rgb = (value) => (value.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.backgroundImage !== "none") return null;  // gradients: decorative tiles only
      const color = rgb(style.backgroundColor);
      if (color.length === 3 || (color.length === 4 && color[3] > 0.5)) return color.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const weak = [];
  for (const el of document.querySelectorAll("body *")) {
    if (!visible(el) || el.closest("[aria-hidden=true], .visually-hidden")) continue;
    const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join("").trim();
    if (!text) continue;
    const style = getComputedStyle(el);
    const back = background(el);
    if (!back) continue;
    const [a, b] = [luminance(rgb(style.color).slice(0, 3)), luminance(back)];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) weak.push(`${text.slice(0, 30)}: ${ratio.toFixed(2)}`);
  }
  return {unnamed, weak};
}"""


async def test_every_control_is_named_and_all_text_has_enough_contrast(page: Page, base: str) -> None:
    await answered(page, lambda: page.goto(base + "/?q=wand"))
    box = page.get_by_role("combobox", name="Search products")
    await box.fill("")
    await box.press_sequentially("har")
    await expect(page.get_by_role("option").first).to_be_visible()
    audit = await page.evaluate(_AUDIT)
    assert audit == {"unnamed": [], "weak": []}


async def test_the_keyboard_reaches_the_search_box_early_and_focus_is_visible(page: Page, base: str) -> None:
    await answered(page, lambda: page.goto(base + "/"))
    order = []
    for _ in range(4):
        await page.keyboard.press("Tab")
        order.append(
            await page.evaluate(
                "() => { const el = document.activeElement;"
                " return [el.tagName, el.getAttribute('aria-label') || el.labels?.[0]?.textContent || el.textContent,"
                " getComputedStyle(el).outlineStyle] }"
            )
        )
    assert [(tag, name.strip()) for tag, name, _ in order] == [
        ("A", "Skip to results"),
        ("A", "House of Fandoms"),
        ("INPUT", "Search products"),
        ("BUTTON", "Search"),
    ]
    assert all(outline != "none" for _, _, outline in order), order
