// The storefront page: search box with autocomplete, results, facets and paging over the
// proxy's public HTTP API (/api/search, /api/search/suggestions). Plain DOM, no framework.
//
// The page's state lives in its URL: the query string is the API's own parameters, so a
// shared link, a reload, back and forward all show the same search. Text from the API is only
// ever inserted as text nodes (never innerHTML); the highlighted names are parsed by hand.
"use strict";

(() => {
  const SEARCH_URL = "/api/search";
  const SUGGEST_URL = "/api/search/suggestions";
  const SUGGEST_DEBOUNCE_MS = 120;
  const SUGGEST_SIZE = 8;
  const SUGGEST_MAX_CHARS = 100; // the API refuses longer prefixes
  const FACET_SHOWN = 8; // values of a facet shown before "Show all"
  const POPULAR_SHOWN = 6;
  const MULTI = ["fandom", "category", "seller_id"];
  const FACET_LABELS = { fandom: "Fandom", category: "Category", seller_id: "Seller" };
  const BASE_TITLE = document.title;

  const $ = (id) => document.getElementById(id);
  const els = {
    form: $("search-form"),
    input: $("q"),
    listbox: $("suggestions"),
    heading: $("results-heading"),
    status: $("status"),
    system: $("system"),
    notice: $("notice"),
    problem: $("problem"),
    results: $("results"),
    empty: $("empty"),
    pager: $("pager"),
    activeFilters: $("active-filters"),
    sort: $("sort"),
    inStock: $("in-stock"),
    priceList: document.querySelector("#facet-price .facet-values"),
    priceForm: $("price-range"),
    minPrice: $("min-price"),
    maxPrice: $("max-price"),
    filters: $("filters"),
    filtersToggle: $("filters-toggle"),
  };
  const numbers = new Intl.NumberFormat(undefined);

  // --- small DOM helpers ----------------------------------------------------------------------

  function h(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  // --- the state and the URL ------------------------------------------------------------------

  function readState(search) {
    const params = new URLSearchParams(search);
    const values = (name) => [
      ...new Set(
        params
          .getAll(name)
          .flatMap((value) => value.split(","))
          .map((value) => value.trim())
          .filter(Boolean),
      ),
    ];
    const page = Number.parseInt(params.get("page") || "1", 10);
    return {
      q: (params.get("q") || "").trim(),
      fandom: values("fandom"),
      category: values("category"),
      seller_id: values("seller_id"),
      min_price: params.get("min_price") || "",
      max_price: params.get("max_price") || "",
      in_stock: params.get("in_stock") || "",
      sort: params.get("sort") || "",
      page: Number.isFinite(page) && page > 0 ? page : 1,
      size: params.get("size") || "",
    };
  }

  // The API's parameters for a state, in a fixed order: also the page's own query string.
  function queryString(s) {
    const params = new URLSearchParams();
    if (s.q) params.set("q", s.q);
    for (const name of MULTI) for (const value of s[name]) params.append(name, value);
    for (const name of ["min_price", "max_price", "in_stock", "sort"]) if (s[name]) params.set(name, s[name]);
    if (s.page > 1) params.set("page", String(s.page));
    if (s.size) params.set("size", s.size);
    return params.toString();
  }

  const withQuery = (path, query) => (query ? `${path}?${query}` : path);
  const pageUrl = (s) => withQuery(location.pathname, queryString(s));

  let state = readState(location.search);

  // Any change made by the user: a new history entry, the controls, a search.
  function navigate(change) {
    state = { ...state, page: 1, ...change };
    const url = pageUrl(state);
    if (url !== location.pathname + location.search) history.pushState(null, "", url);
    syncControls();
    search();
  }

  // Every filter a shopper can set, off.
  const NO_FILTERS = Object.freeze({
    fandom: [],
    category: [],
    seller_id: [],
    min_price: "",
    max_price: "",
    in_stock: "",
  });
  const clearFilters = () => navigate(NO_FILTERS);
  const inStockOnly = () => state.in_stock === "true" || state.in_stock === "1";
  const hasFilters = () =>
    MULTI.some((name) => state[name].length) || state.min_price || state.max_price || state.in_stock;

  // A new text from the search box is a new search: filters and sort belong to the old one
  // (the in-stock switch is the shopper's preference, and stays).
  const newSearchChange = (q, change = {}) => ({ ...NO_FILTERS, in_stock: state.in_stock, sort: "", q, ...change });
  const newSearch = (q, change) => navigate(newSearchChange(q, change));
  const newSearchUrl = (q, change) => pageUrl({ ...state, page: 1, ...newSearchChange(q, change) });

  window.addEventListener("popstate", () => {
    state = readState(location.search);
    cancelSuggestions();
    syncControls();
    search();
  });

  function syncControls() {
    els.input.value = state.q;
    els.inStock.checked = inStockOnly();
    const relevance = els.sort.querySelector('option[value="relevance"]');
    relevance.disabled = !state.q; // without words there is no relevance: the API sorts by newest
    // The sort the API uses: the one asked for, else relevance with words and newest without.
    const asked = state.sort && !(state.sort === "relevance" && !state.q);
    els.sort.value = asked ? state.sort : state.q ? "relevance" : "newest";
    els.minPrice.value = state.min_price;
    els.maxPrice.value = state.max_price;
    document.title = state.q ? `“${state.q}” — ${BASE_TITLE}` : BASE_TITLE;
    els.heading.textContent = state.q ? `Results for “${state.q}”` : "All products";
    renderActiveFilters();
  }

  // --- searching ------------------------------------------------------------------------------

  let searchController = null;
  const sellerNames = new Map(); // seller id -> name, learnt from results (for the filter chips)
  let lastFacets = null;

  async function search() {
    if (searchController) searchController.abort();
    const controller = (searchController = new AbortController());
    const query = queryString(state);
    setBusy(true);
    const started = performance.now();
    let response;
    let body = null;
    try {
      response = await fetch(withQuery(SEARCH_URL, query), {
        signal: controller.signal,
        headers: { Accept: "application/json" },
      });
      body = await response.json().catch(() => null);
    } catch {
      if (controller !== searchController) return; // superseded by a newer search
      setBusy(false);
      showSystem(null, null, null);
      showProblem("Could not reach the search service.", "Check your connection, then try again.");
      return;
    }
    if (controller !== searchController) return;
    setBusy(false);
    showSystem(response, performance.now() - started, body);
    if (response.ok && body) renderAnswer(body);
    else renderError(response, body);
  }

  function setBusy(busy) {
    els.results.setAttribute("aria-busy", busy ? "true" : "false");
    document.body.classList.toggle("loading", busy);
  }

  // Small signs of the system: which backend answered, the cache, the time taken.
  function showSystem(response, elapsedMs, body) {
    const backend = response ? response.headers.get("X-Search-Backend") : null;
    const cache = response ? response.headers.get("X-Cache") : null;
    els.system.dataset.backend = backend || "";
    els.system.dataset.cache = cache || "";
    const parts = [];
    const sign = (title, text) => parts.push(h("span", { title }, text));
    if (response && !response.ok) sign("The HTTP status of the answer", `HTTP ${response.status}`);
    if (backend) {
      sign("X-Search-Backend: the backend that answered", backend === "postgres" ? "postgres (fallback)" : backend);
    }
    if (cache) sign("X-Cache: how the answer was obtained", `cache ${cache}`);
    if (elapsedMs !== null) {
      const took = body && Number.isFinite(body.took_ms) ? ` (backend ${body.took_ms} ms)` : "";
      sign("Time from request to answer, in this browser", `${Math.round(elapsedMs)} ms${took}`);
    }
    els.system.replaceChildren(...parts.flatMap((part, i) => (i ? [" · ", part] : [part])));
  }

  // --- answers --------------------------------------------------------------------------------

  function renderAnswer(body) {
    clearProblem();
    const total = body.total || 0;
    const plus = body.total_relation === "gte" ? "+" : "";
    const pageNote = body.pages > 1 ? ` · page ${numbers.format(body.page)} of ${numbers.format(body.pages)}` : "";
    els.status.textContent = `${numbers.format(total)}${plus} ${total === 1 ? "product" : "products"}${pageNote}`;
    els.status.dataset.total = String(total);
    for (const item of body.items || []) {
      if (item.seller && item.seller.id) sellerNames.set(item.seller.id, item.seller.name);
    }
    renderNotice(body);
    els.results.replaceChildren(...(body.items || []).map(card));
    lastFacets = body.facets || {};
    renderFacets(lastFacets);
    renderActiveFilters();
    renderPager(body.page || state.page, body.pages || 0);
    if (total === 0) renderEmpty(body);
    else show(els.empty, false);
  }

  function renderNotice(body) {
    if (!body.relaxed || !body.items || body.items.length === 0) {
      show(els.notice, false);
      return;
    }
    const asked = state.q ? `“${state.q}”` : "this search";
    if (body.did_you_mean) {
      els.notice.replaceChildren(
        `No exact matches for ${asked}. Showing results for `,
        h("strong", {}, `“${body.did_you_mean}”`),
        ".",
      );
    } else {
      els.notice.replaceChildren(
        `No product matches every word of ${asked}; showing products that match most of them.`,
      );
    }
    show(els.notice, true);
  }

  // "Harry <em>Potter</em> &amp; co": text nodes and <mark>, never innerHTML. The API escapes
  // the name and adds only <em> and </em>; entities are decoded here into plain text.
  const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
  function decodeEntities(text) {
    return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
      if (name[0] === "#") {
        const hex = name[1] === "x" || name[1] === "X";
        const code = hex ? Number.parseInt(name.slice(2), 16) : Number.parseInt(name.slice(1), 10);
        return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
      }
      return ENTITIES[name.toLowerCase()] ?? whole;
    });
  }

  function highlighted(item) {
    const marked = item.highlight && typeof item.highlight.name === "string" ? item.highlight.name : null;
    if (marked === null) return [item.name || ""];
    const nodes = [];
    let inside = false;
    for (const part of marked.split(/(<em>|<\/em>)/)) {
      if (part === "<em>") inside = true;
      else if (part === "</em>") inside = false;
      else if (part) {
        const text = decodeEntities(part);
        nodes.push(inside ? h("mark", {}, text) : document.createTextNode(text));
      }
    }
    return nodes;
  }

  function money(amount, currency) {
    if (typeof amount !== "number") return "";
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "GBP" }).format(amount);
    } catch {
      return `${amount.toFixed(2)} ${currency || ""}`.trim();
    }
  }

  function safeImageUrl(url) {
    if (typeof url !== "string" || !url) return null;
    try {
      const parsed = new URL(url, location.href);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  // "Lord of the Rings" -> "LR": the capitalised words first, small words skipped.
  function initials(text) {
    const words = String(text || "").split(/\s+/).filter((word) => /^[\p{L}\p{N}]/u.test(word));
    const capitals = words.filter((word) => /^[\p{Lu}\p{N}]/u.test(word));
    return (capitals.length ? capitals : words).slice(0, 2).map((word) => [...word][0].toUpperCase()).join("") || "?";
  }

  function tone(text) {
    let sum = 0;
    for (const char of String(text || "")) sum = (sum * 31 + char.codePointAt(0)) % 997;
    return `tone-${sum % 6}`;
  }

  function placeholder(item) {
    const tile = { class: `thumb placeholder ${tone(item.fandom)}`, "aria-hidden": "true" };
    return h("div", tile, initials(item.fandom || item.name));
  }

  function thumbnail(item) {
    const src = safeImageUrl(item.image_url);
    if (!src) return placeholder(item);
    // alt="": the product's name is the heading right beside it.
    const img = h("img", { src, alt: "", loading: "lazy", decoding: "async", width: 320, height: 320 });
    const replace = () => img.parentNode && img.parentNode.replaceWith(placeholder(item));
    img.addEventListener("error", replace, { once: true });
    return h("div", { class: "thumb" }, img);
  }

  function rating(value) {
    if (typeof value !== "number") return h("p", { class: "rating none" }, "Not rated yet");
    const stars = Math.round(value);
    return h(
      "p",
      { class: "rating" },
      h("span", { class: "stars", "aria-hidden": "true" }, "★".repeat(stars) + "☆".repeat(Math.max(0, 5 - stars))),
      h("span", { class: "visually-hidden" }, "Rated "),
      ` ${value.toFixed(1)}`,
      h("span", { class: "visually-hidden" }, " out of 5"),
    );
  }

  function card(item) {
    const titleId = `product-${item.id}`;
    const seller = item.seller || {};
    const sellerControl =
      seller.id && seller.name
        ? h(
            "button",
            {
              type: "button",
              class: "link",
              title: `Show only products sold by ${seller.name}`,
              onclick: () => navigate({ seller_id: [seller.id] }),
            },
            seller.name,
          )
        : seller.name || "";
    return h(
      "li",
      { class: "card", "data-id": item.id },
      h(
        "article",
        { "aria-labelledby": titleId },
        thumbnail(item),
        h("h2", { class: "name", id: titleId }, highlighted(item)),
        h("p", { class: "meta" }, [item.fandom, item.category].filter(Boolean).join(" · ")),
        h(
          "div",
          { class: "buy" },
          h("p", { class: "price", "data-price": item.price }, money(item.price, item.currency)),
          h("p", { class: item.in_stock ? "stock in" : "stock out" }, item.in_stock ? "In stock" : "Out of stock"),
        ),
        rating(item.rating),
        h("p", { class: "seller" }, "Sold by ", sellerControl),
      ),
    );
  }

  // --- facets ---------------------------------------------------------------------------------

  const expandedFacets = new Set();

  // Re-rendering replaces the checkboxes: keep the keyboard focus on the one the user was on.
  function keepingFocus(render) {
    const focused = document.activeElement;
    const within = focused instanceof HTMLInputElement && focused.name && els.filters.contains(focused);
    const [name, value] = within ? [focused.name, focused.value] : [null, null];
    render();
    if (!within || focused.isConnected) return;
    const inputs = [...els.filters.querySelectorAll("input")];
    const again = inputs.find((input) => input.name === name && input.value === value);
    if (again) again.focus();
  }

  function renderFacets(facets) {
    keepingFocus(() => {
      for (const name of ["fandom", "category"]) renderTermFacet(name, facets[name] || []);
      renderPriceFacet(facets.price || []);
    });
  }

  function renderTermFacet(name, buckets) {
    const fieldset = $(`facet-${name}`);
    const list = fieldset.querySelector(".facet-values");
    const selected = new Set(state[name]);
    const entries = buckets.map((bucket) => ({ value: bucket.value, count: bucket.count }));
    // A checked value the answer does not count (no product with the other filters) stays.
    for (const value of selected) {
      if (!entries.some((entry) => entry.value === value)) entries.push({ value, count: 0 });
    }
    const expanded = expandedFacets.has(name);
    const shown = entries.filter((entry, i) => expanded || i < FACET_SHOWN || selected.has(entry.value));
    list.replaceChildren(
      ...shown.map((entry, i) => {
        const id = `facet-${name}-${i}`;
        const checked = selected.has(entry.value);
        return h(
          "li",
          {},
          h("input", {
            type: "checkbox",
            id,
            name,
            value: entry.value,
            checked,
            onchange: (event) => toggleValue(name, entry.value, event.target.checked),
          }),
          h(
            "label",
            { for: id },
            h("span", { class: "value" }, entry.value),
            h("span", { class: "count", "data-count": entry.count }, numbers.format(entry.count)),
          ),
        );
      }),
    );
    let more = fieldset.querySelector(".more");
    if (entries.length > FACET_SHOWN) {
      if (!more) {
        more = h("button", { type: "button", class: "link more" });
        more.addEventListener("click", () => {
          if (expandedFacets.has(name)) expandedFacets.delete(name);
          else expandedFacets.add(name);
          keepingFocus(() => renderTermFacet(name, (lastFacets && lastFacets[name]) || []));
        });
        fieldset.append(more);
      }
      more.setAttribute("aria-expanded", expanded ? "true" : "false");
      more.textContent = expanded ? "Show fewer" : `Show all ${entries.length}`;
    } else if (more) {
      more.remove();
    }
    show(fieldset, entries.length > 0);
  }

  function toggleValue(name, value, on) {
    const values = state[name].filter((existing) => existing !== value);
    if (on) values.push(value);
    navigate({ [name]: values });
  }

  // Buckets count from <= price < to; the filter includes both ends, so "10-20" asks for
  // 10 to 19.99 (prices have two decimals).
  function bucketRange(bucket) {
    return {
      min_price: bucket.from === null || bucket.from === undefined ? "" : String(bucket.from),
      max_price: bucket.to === null || bucket.to === undefined ? "" : (bucket.to - 0.01).toFixed(2),
    };
  }

  function bucketLabel(bucket) {
    if (bucket.from === null || bucket.from === undefined) return `Under ${bucket.to}`;
    if (bucket.to === null || bucket.to === undefined) return `${bucket.from} and over`;
    return `${bucket.from} to ${bucket.to}`;
  }

  function samePrice(a, b) {
    return a === b || (a !== "" && b !== "" && Number(a) === Number(b));
  }

  function renderPriceFacet(buckets) {
    const anyPrice = !state.min_price && !state.max_price;
    const option = (id, label, count, range, checked) =>
      h(
        "li",
        {},
        h("input", {
          type: "radio",
          id,
          name: "price",
          value: id,
          checked,
          disabled: count === 0 && !checked,
          onchange: () => navigate(range),
        }),
        h(
          "label",
          { for: id },
          h("span", { class: "value" }, label),
          count === null ? null : h("span", { class: "count", "data-count": count }, numbers.format(count)),
        ),
      );
    els.priceList.replaceChildren(
      option("price-any", "Any price", null, { min_price: "", max_price: "" }, anyPrice),
      ...buckets.map((bucket) => {
        const range = bucketRange(bucket);
        const checked = samePrice(range.min_price, state.min_price) && samePrice(range.max_price, state.max_price);
        return option(`price-${bucket.key}`, bucketLabel(bucket), bucket.count, range, checked);
      }),
    );
  }

  // --- active filters (removable chips) ------------------------------------------------------

  function renderActiveFilters() {
    const chips = [];
    const chip = (label, change) =>
      chips.push(
        h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "chip", "aria-label": `Remove filter ${label}`, onclick: () => navigate(change) },
            label,
            h("span", { "aria-hidden": "true" }, " ×"),
          ),
        ),
      );
    for (const name of MULTI) {
      for (const value of state[name]) {
        const shown = name === "seller_id" ? sellerNames.get(value) || `#${value}` : value;
        chip(`${FACET_LABELS[name]}: ${shown}`, { [name]: state[name].filter((v) => v !== value) });
      }
    }
    if (state.min_price || state.max_price) {
      const { min_price: low, max_price: high } = state;
      chip(`Price: ${low && high ? `${low} to ${high}` : low ? `from ${low}` : `up to ${high}`}`, {
        min_price: "",
        max_price: "",
      });
    }
    if (state.in_stock) chip(inStockOnly() ? "In stock only" : "Out of stock only", { in_stock: "" });
    // On a phone the filters are folded away: their button says how many are on.
    els.filtersToggle.textContent = chips.length ? `Filters (${chips.length})` : "Filters";
    if (chips.length > 1) {
      chips.push(h("li", {}, h("button", { type: "button", class: "link", onclick: clearFilters }, "Clear all")));
    }
    els.activeFilters.replaceChildren(...chips);
    show(els.activeFilters, chips.length > 0);
  }

  // --- nothing found --------------------------------------------------------------------------

  let popular = null; // the most stocked fandoms, asked for once

  function popularFandoms() {
    if (!popular) {
      popular = fetch(`${SEARCH_URL}?size=1`, { headers: { Accept: "application/json" } })
        .then((response) => (response.ok ? response.json() : Promise.reject(new Error(String(response.status)))))
        .then((body) => ((body.facets && body.facets.fandom) || []).slice(0, POPULAR_SHOWN))
        .then((buckets) => buckets.map((bucket) => bucket.value))
        .catch(() => {
          popular = null; // try again next time
          return [];
        });
    }
    return popular;
  }

  function renderEmpty(body) {
    const asked = state.q ? `“${state.q}”` : "your search";
    const tries = h("ul", { class: "tries" });
    const searchFor = (label, q, change) =>
      h("a", { href: newSearchUrl(q, change), onclick: link(() => newSearch(q, change)) }, label);
    if (body.did_you_mean) {
      tries.append(h("li", {}, "Did you mean ", searchFor(body.did_you_mean, body.did_you_mean), "?"));
    }
    if (hasFilters()) {
      const remove = h("button", { type: "button", class: "link", onclick: clearFilters }, "Remove all filters");
      tries.append(h("li", {}, remove));
    }
    if (state.q) tries.append(h("li", {}, "Check the spelling, or use fewer or more general words."));
    const fandoms = h("p", { class: "popular" });
    const title = `No products found for ${asked}${hasFilters() ? " with these filters" : ""}.`;
    els.empty.replaceChildren(h("h2", {}, title), tries, fandoms);
    show(els.empty, true);
    const forState = state;
    popularFandoms().then((names) => {
      if (forState !== state || names.length === 0) return;
      fandoms.replaceChildren(
        "Popular fandoms: ",
        ...names.flatMap((name, i) => [i ? ", " : "", searchFor(name, "", { fandom: [name] })]),
      );
    });
  }

  // A link's click handled in the page, unless the user asked for a new tab or window.
  function link(action) {
    return (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      action();
    };
  }

  // --- paging ---------------------------------------------------------------------------------

  function pageNumbers(current, pages) {
    const wanted = new Set([1, pages, current - 2, current - 1, current, current + 1, current + 2]);
    const list = [...wanted].filter((n) => n >= 1 && n <= pages).sort((a, b) => a - b);
    const out = [];
    for (const n of list) {
      if (out.length && n - out[out.length - 1] > 1) out.push(null); // a gap
      out.push(n);
    }
    return out;
  }

  // Keyboard and screen-reader users land where the new results begin.
  function focusResults() {
    els.heading.focus({ preventScroll: true });
    els.heading.scrollIntoView({ block: "start" });
  }

  function goToPage(page) {
    navigate({ page });
    focusResults();
  }

  function renderPager(current, pages) {
    if (pages <= 1) {
      els.pager.replaceChildren();
      show(els.pager, false);
      return;
    }
    const pageLink = (page, label, attributes = {}) =>
      h("a", { href: pageUrl({ ...state, page }), onclick: link(() => goToPage(page)), ...attributes }, label);
    const items = [
      current > 1
        ? pageLink(current - 1, "Previous", { rel: "prev", class: "step" })
        : h("span", { class: "step", "aria-disabled": "true" }, "Previous"),
      ...pageNumbers(current, pages).map((n) =>
        n === null
          ? h("span", { class: "gap", "aria-hidden": "true" }, "…")
          : pageLink(n, String(n), { "aria-label": `Page ${n}`, "aria-current": n === current ? "page" : null }),
      ),
      current < pages
        ? pageLink(current + 1, "Next", { rel: "next", class: "step" })
        : h("span", { class: "step", "aria-disabled": "true" }, "Next"),
    ];
    els.pager.replaceChildren(h("ul", {}, ...items.map((item) => h("li", {}, item))));
    show(els.pager, true);
  }

  // --- errors ---------------------------------------------------------------------------------

  let retryTimer = 0;

  function clearProblem() {
    clearInterval(retryTimer);
    els.problem.replaceChildren();
    show(els.problem, false);
  }

  // A problem instead of results; `retry` offers the same search again (after `wait` seconds),
  // otherwise a way to start over (the search itself is wrong).
  function showProblem(title, detail, reference, { retry = true, wait = 0 } = {}) {
    clearProblem();
    els.results.replaceChildren();
    show(els.empty, false);
    show(els.notice, false);
    show(els.pager, false);
    els.status.textContent = "";
    const action = retry
      ? h("button", { type: "button", class: "primary", onclick: () => search() }, "Try again")
      : h("a", { href: location.pathname, onclick: link(() => navigate(readState(""))) }, "Start a new search");
    if (retry && wait > 0) {
      // Trying before the wait is over would only be refused again.
      let left = wait;
      action.disabled = true;
      action.textContent = `Try again in ${left} s`;
      retryTimer = setInterval(() => {
        left -= 1;
        if (left > 0) {
          action.textContent = `Try again in ${left} s`;
          return;
        }
        clearInterval(retryTimer);
        action.disabled = false;
        action.textContent = "Try again";
      }, 1000);
    }
    els.problem.append(
      h("p", { class: "problem-title" }, title),
      detail ? h("p", {}, detail) : null,
      h("p", {}, action),
      reference ? h("p", { class: "reference" }, `Reference: ${reference}`) : null,
    );
    show(els.problem, true);
  }

  function retryAfter(response) {
    const value = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    return Number.isFinite(value) && value > 0 ? value : 0;
  }

  const seconds = (n) => `${n} ${n === 1 ? "second" : "seconds"}`;

  function renderError(response, body) {
    const reference = response.headers.get("X-Request-ID");
    const wait = retryAfter(response);
    if (response.status === 429) {
      showProblem(
        "Too many searches in a short time.",
        `Please wait ${seconds(wait || 1)}, then try again.`,
        reference,
        { wait },
      );
    } else if (response.status === 503) {
      showProblem(
        "Search is unavailable right now.",
        `Our search service is having trouble. Please try again in ${seconds(wait || 1)}.`,
        reference,
        { wait },
      );
    } else if (response.status === 400 && body) {
      const reasons = (body.invalid_params || []).map((p) => `${p.name}: ${p.reason}`);
      showProblem("This search could not be run.", reasons.length ? reasons.join("; ") : body.detail, reference, {
        retry: false,
      });
    } else {
      const detail = `The search service answered ${response.status}. Please try again.`;
      showProblem("Something went wrong.", detail, reference);
    }
  }

  // --- the search box and its suggestions (ARIA combobox with a listbox popup) ---------------

  let suggestTimer = 0;
  let suggestController = null;
  let suggestions = [];
  let active = -1;

  function fold(text) {
    return text.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  }

  // The typed prefix marked in a suggestion: the longest start of what was typed (at least
  // three characters) found at the start of a word, ignoring case and accents ("hary" marks
  // "Har" of "Harry Potter", "poke" marks "Poké" of "Pokémon").
  function markPrefix(text, typed) {
    const wanted = fold(typed.trim());
    if (!wanted) return [text];
    let folded = "";
    const origin = []; // index in folded -> index in text
    let offset = 0;
    for (const char of text) {
      const f = fold(char);
      for (let i = 0; i < f.length; i++) origin.push(offset);
      folded += f;
      offset += char.length;
    }
    origin.push(text.length);
    for (let length = wanted.length; length >= Math.min(3, wanted.length); length--) {
      const needle = wanted.slice(0, length);
      let at = folded.indexOf(needle);
      while (at !== -1 && at > 0 && /[\p{L}\p{N}]/u.test(folded[at - 1])) at = folded.indexOf(needle, at + 1);
      if (at !== -1) {
        const start = origin[at];
        const end = origin[at + length];
        const parts = [text.slice(0, start), h("mark", {}, text.slice(start, end)), text.slice(end)];
        return parts.filter((part) => part !== "");
      }
    }
    return [text];
  }

  function openSuggestions() {
    show(els.listbox, true);
    els.input.setAttribute("aria-expanded", "true");
  }

  function closeSuggestions() {
    show(els.listbox, false);
    els.input.setAttribute("aria-expanded", "false");
    els.input.removeAttribute("aria-activedescendant");
    active = -1;
  }

  // What was suggested no longer applies: nothing in flight, nothing to reopen.
  function cancelSuggestions() {
    clearTimeout(suggestTimer);
    if (suggestController) suggestController.abort();
    suggestController = null;
    suggestions = [];
    els.listbox.replaceChildren();
    closeSuggestions();
  }

  function setActive(index) {
    active = index;
    els.listbox.querySelectorAll('[role="option"]').forEach((option, i) => {
      option.setAttribute("aria-selected", i === index ? "true" : "false");
      if (i === index) option.scrollIntoView({ block: "nearest" });
    });
    if (index >= 0) els.input.setAttribute("aria-activedescendant", `suggestion-${index}`);
    else els.input.removeAttribute("aria-activedescendant");
  }

  const KIND_LABELS = { fandom: "fandom", category: "category" };

  function renderSuggestions(list, typed) {
    suggestions = list;
    active = -1;
    if (list.length === 0) {
      els.listbox.replaceChildren();
      closeSuggestions();
      return;
    }
    els.listbox.replaceChildren(
      ...list.map((suggestion, i) =>
        h(
          "li",
          {
            id: `suggestion-${i}`,
            role: "option",
            "aria-selected": "false",
            "data-type": suggestion.type,
            onclick: () => choose(suggestion),
            onmousemove: () => active !== i && setActive(i),
          },
          h("span", { class: "text" }, markPrefix(suggestion.text, typed)),
          KIND_LABELS[suggestion.type] ? h("span", { class: "kind" }, ` ${KIND_LABELS[suggestion.type]}`) : null,
        ),
      ),
    );
    els.input.removeAttribute("aria-activedescendant");
    openSuggestions();
  }

  async function fetchSuggestions(typed) {
    if (suggestController) suggestController.abort(); // a stale request is not worth its answer
    const controller = (suggestController = new AbortController());
    try {
      const params = new URLSearchParams({ q: typed, size: String(SUGGEST_SIZE) });
      const response = await fetch(`${SUGGEST_URL}?${params}`, {
        signal: controller.signal,
        headers: { Accept: "application/json" },
      });
      const body = response.ok ? await response.json() : null;
      if (controller !== suggestController || els.input.value !== typed) return;
      renderSuggestions((body && body.suggestions) || [], typed);
    } catch {
      if (controller === suggestController) closeSuggestions(); // aborted, or no network
    }
  }

  // Fandoms and categories are filters; a product name is searched for.
  function choose(suggestion) {
    cancelSuggestions();
    if (suggestion.type === "fandom" || suggestion.type === "category") {
      newSearch("", { [suggestion.type]: [suggestion.text] });
    } else {
      newSearch(suggestion.text);
    }
  }

  els.input.addEventListener("input", () => {
    clearTimeout(suggestTimer);
    const typed = els.input.value;
    if (!typed.trim() || typed.length > SUGGEST_MAX_CHARS) {
      cancelSuggestions();
      return;
    }
    suggestTimer = setTimeout(() => fetchSuggestions(typed), SUGGEST_DEBOUNCE_MS);
  });

  els.input.addEventListener("keydown", (event) => {
    const open = !els.listbox.hidden;
    const count = suggestions.length;
    switch (event.key) {
      case "ArrowDown":
        if (!count) return;
        event.preventDefault();
        if (!open) openSuggestions();
        setActive(open ? (active + 1) % count : 0);
        break;
      case "ArrowUp":
        if (!count) return;
        event.preventDefault();
        if (!open) openSuggestions();
        // From the first option back to the text box, then round to the last.
        setActive(!open ? count - 1 : active === -1 ? count - 1 : active - 1);
        break;
      case "Enter":
        if (open && active >= 0) {
          event.preventDefault();
          choose(suggestions[active]);
        }
        break; // otherwise the form is submitted
      case "Escape":
        if (open) {
          event.preventDefault(); // the list closes; the text stays
          closeSuggestions();
        }
        break;
      case "Tab":
        closeSuggestions();
        break;
      default:
        break;
    }
  });

  els.input.addEventListener("blur", () => closeSuggestions());
  // A click on an option must not take the focus from the text box first.
  els.listbox.addEventListener("mousedown", (event) => event.preventDefault());

  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    cancelSuggestions();
    newSearch(els.input.value.trim());
  });

  // --- the other controls ---------------------------------------------------------------------

  els.sort.addEventListener("change", () => navigate({ sort: els.sort.value }));
  els.inStock.addEventListener("change", () => navigate({ in_stock: els.inStock.checked ? "true" : "" }));
  els.priceForm.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate({ min_price: els.minPrice.value.trim(), max_price: els.maxPrice.value.trim() });
  });
  // Phones: the filters fold away behind a button.
  function showFilters(open) {
    els.filtersToggle.setAttribute("aria-expanded", open ? "true" : "false");
    els.filters.classList.toggle("open", open);
  }
  els.filtersToggle.addEventListener("click", () => {
    showFilters(els.filtersToggle.getAttribute("aria-expanded") !== "true");
  });
  $("filters-done").addEventListener("click", () => {
    showFilters(false);
    focusResults();
  });

  syncControls();
  search();
})();
