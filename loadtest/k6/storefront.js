// k6 runner for loadtest/profiles/*.json: the same storefront sessions and rate-limit probe as
// loadtest/locustfile.py, for teams that run k6 (docs/load-testing.md).
//
//   mkdir -p loadtest/out && k6 run -e PROFILE=average -e PROXY_URL=https://search.staging.example -e SEED=1 \
//          -e OUT=loadtest/out [-e API_KEY=…] loadtest/k6/storefront.js
//
// PROFILE is a name in loadtest/profiles/ or a path to a JSON file (relative to this script). k6 runs
// the profile's stages or scenarios and judges its thresholds itself (exit 99 when one fails);
// handleSummary prints the one-screen summary (summary.js) and writes OUT/summary.json (k6's summary
// data, as the Locust runner writes it) into OUT, which must exist: `python -m loadtest --k6` (or
// make load K6=1) creates it and runs this script. Self-contained: nothing is fetched from the
// network, so it runs on a machine without internet.

import { check, sleep } from 'k6';
import http from 'k6/http';
import { loadProfile } from './profile.js';
import { textSummary } from './summary.js';
import { drawSession, facetOf, mulberry32, openedOf, PAGE_SHARE, queryMix, SELLER_SHARE, SORT_SHARE, vuSeed } from './traffic.js';

const PROFILE = __ENV.PROFILE || 'smoke';
const PROFILE_PATH = PROFILE.endsWith('.json') ? PROFILE : `../profiles/${PROFILE}.json`;
const NAME = PROFILE_PATH.split('/').pop().replace(/\.json$/, '');
const BASE = (__ENV.PROXY_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const SEED = parseInt(__ENV.SEED || '1', 10);
const OUT = __ENV.OUT || 'loadtest/out';
const HEADERS = __ENV.API_KEY ? { 'X-API-Key': __ENV.API_KEY } : {}; // a key with a budget of its own
const REQUEST_NAMES = ['search', 'suggest', 'product', 'seller'];

const profile = loadProfile(NAME, JSON.parse(open(PROFILE_PATH)), __ENV);
const SCALE = profile.hos.thinkTimeScale === undefined ? 1 : profile.hos.thinkTimeScale;

// Thresholds that always pass make k6 keep a submetric per request name in the summary, as the
// Locust runner's summary.json has them.
const perName = {};
for (const name of REQUEST_NAMES) {
  perName[`http_req_duration{name:${name}}`] = ['max>=0'];
  perName[`http_req_failed{name:${name}}`] = ['rate>=0'];
}
export const options = { ...profile.options, thresholds: { ...perName, ...(profile.options.thresholds || {}) } };
const BOOKKEEPING = Object.fromEntries(Object.entries(perName).filter(([key]) => !(key in (profile.options.thresholds || {}))));

const mix = queryMix();
let rng = null; // this VU's generator: seeded from SEED and __VU, as the Locust runner seeds its VUs

function generator() {
  if (rng === null) rng = mulberry32(vuSeed(SEED, __VU));
  return rng;
}

function query(params) {
  return Object.entries(params).map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value)}`).join('&');
}

const LIMITED = http.expectedStatuses({ min: 200, max: 399 }, 429);

function get(name, path, params, allow429) {
  const url = params ? `${BASE}${path}?${query(params)}` : `${BASE}${path}`;
  return http.get(url, allow429 ? { headers: HEADERS, tags: { name }, responseCallback: LIMITED } : { headers: HEADERS, tags: { name } });
}

function getJSON(name, path, params) {
  const response = get(name, path, params, false);
  if (!check(response, { [`${name} status 200`]: (r) => r.status === 200 })) return null;
  try {
    return response.json();
  } catch (error) {
    check(null, { [`${name} answers JSON`]: () => false });
    return null;
  }
}

function search(params) {
  const answer = getJSON('search', '/api/search', params);
  if (answer === null) return null;
  const ok = Array.isArray(answer.items) && answer.facets !== null && typeof answer.facets === 'object';
  return check(answer, { 'search answers items and facets': () => ok }) ? answer : null;
}

function header(response, name) {
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(response.headers)) if (key.toLowerCase() === wanted) return value;
  return null;
}

// One shopper's session: type into suggestions, search, narrow by a facet, page, open products and a seller.
export default function storefront() {
  const plan = drawSession(generator(), mix);
  for (const [prefix, delay] of plan.keystrokes) {
    sleep(delay * SCALE);
    getJSON('suggest', '/api/search/suggestions', { q: prefix });
  }
  const thinks = plan.thinks.slice();
  const params = { q: plan.query };
  let answer = search(params);
  if (answer === null) return;
  const facet = facetOf(plan, answer.facets);
  if (facet !== null) {
    sleep(thinks.shift() * SCALE);
    params[facet[0]] = facet[1];
    if (plan.sortRoll < SORT_SHARE) params.sort = 'price_asc';
    answer = search(params) || answer;
  }
  if (plan.pageRoll < PAGE_SHARE && (answer.pages || 0) >= 2) {
    sleep(thinks.shift() * SCALE);
    answer = search({ ...params, page: '2' }) || answer;
  }
  const opened = openedOf(plan, answer.items);
  for (const item of opened) {
    sleep(thinks.shift() * SCALE);
    getJSON('product', `/api/products/${item.id}`);
  }
  if (opened.length && plan.sellerRoll < SELLER_SHARE) {
    sleep(thinks.shift() * SCALE);
    getJSON('seller', `/api/sellers/${opened[opened.length - 1].seller.id}`);
  }
}

// One client past its limit (the ratelimit profile): as Shopper.ratelimit_probe in loadtest/locustfile.py.
// The policy is read from the 429 (public answers carry no rate-limit headers); every URL differs.
export function ratelimitProbe() {
  const q = drawSession(generator(), mix).query;
  let admitted = 0;
  let refused = null;
  const started = Date.now();
  for (let n = 0; n < 10000; n += 1) {
    const response = get('search', '/api/search', { q, utm_content: `probe-${n}` }, true);
    if (response.status !== 200) {
      refused = response.status === 429 ? response : null;
      break;
    }
    admitted += 1;
  }
  const elapsedS = (Date.now() - started) / 1000;
  if (!check(refused, { 'a 429 arrives': (r) => r !== null })) return;
  const policy = /;\s*q=(\d+).*;\s*w=(\d+)/.exec(header(refused, 'RateLimit-Policy') || '');
  if (!check(refused, { '429 carries RateLimit-Policy': () => policy !== null })) return;
  const [quota, windowS] = [parseInt(policy[1], 10), parseFloat(policy[2])];
  const refill = Math.ceil(elapsedS * quota / windowS);
  check(admitted, { 'quota matches RateLimit-Policy': (n) => quota <= n && n <= quota + refill });
  const retryAfter = header(refused, 'Retry-After') || '';
  check(refused, {
    '429 carries Retry-After': () => /^\d+$/.test(retryAfter) && parseInt(retryAfter, 10) >= 1,
    '429 is problem+json': () => (header(refused, 'Content-Type') || '').startsWith('application/problem+json'),
  });
  if (/^\d+$/.test(retryAfter) && parseInt(retryAfter, 10) <= 30) {
    sleep(parseInt(retryAfter, 10));
    const again = get('search', '/api/search', { q, utm_content: 'probe-again' }, true);
    check(again, { 'admitted after Retry-After': (r) => r.status === 200 });
  }
}

export function handleSummary(data) {
  let failed = 0;
  for (const metric of Object.values(data.metrics)) {
    for (const result of Object.values(metric.thresholds || {})) if (!result.ok) failed += 1;
  }
  const hos = { profile: NAME, runner: 'k6', target: BASE, seed: SEED, aborted: null, thresholdsFailed: failed };
  // k6 creates no folder for these files (it logs an error and still exits 0): OUT must exist.
  // python -m loadtest --k6 creates it; by hand, mkdir -p it first.
  return {
    stdout: textSummary(data, hos, BOOKKEEPING),
    [`${OUT}/summary.json`]: JSON.stringify({ ...data, hos }, null, 2),
  };
}
