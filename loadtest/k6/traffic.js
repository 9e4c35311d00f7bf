// The storefront traffic for k6: the same generator, query mix and sessions as
// loadtest/traffic.py (tests/test_load_profiles.py compares them with Node.js). Pure.

import { QUERIES } from './vocabulary.js';

export const QUERY_ZIPF_EXPONENT = 1.0;
export const TYPO_SHARE = 0.05;
export const KEYSTROKE_S = [0.08, 0.2];
export const THINK_S = [0.5, 2.0];
export const THINKS = 6;
export const MIN_PREFIX = 2;
export const FACET_SHARE = 0.6;
export const FACET_TOP = 5;
export const PAGE_SHARE = 0.25;
export const SORT_SHARE = 0.2;
export const MAX_OPENS = 3;
export const SELLER_SHARE = 0.35;

// mulberry32: 32-bit state, Math.imul keeps every step within 32 bits as the Python port does.
export function mulberry32(seed) {
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    const a = state;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { random, between: (low, high) => low + (high - low) * random() };
}

export function vuSeed(globalSeed, vu) {
  return (Math.imul(globalSeed >>> 0, 1000003) + vu) >>> 0;
}

export function queryMix(queries = QUERIES, exponent = QUERY_ZIPF_EXPONENT) {
  const cumulative = [];
  let total = 0;
  for (let rank = 1; rank <= queries.length; rank += 1) {
    total += 1 / rank ** exponent;
    cumulative.push(total);
  }
  return {
    pick(rng) {
      const u = rng.random() * cumulative[cumulative.length - 1];
      let low = 0;
      let high = cumulative.length;
      while (low < high) { // bisect_right
        const mid = (low + high) >> 1;
        if (u < cumulative[mid]) high = mid;
        else low = mid + 1;
      }
      return queries[Math.min(low, queries.length - 1)];
    },
  };
}

export function withTypo(rng, query) {
  const [typo, which, where, how] = [rng.random(), rng.random(), rng.random(), rng.random()];
  const words = query.split(' ');
  const long = words.map((word, i) => [word, i]).filter(([word]) => word.length >= 5).map(([, i]) => i);
  if (typo >= TYPO_SHARE || long.length === 0) return query;
  const index = long[Math.trunc(which * long.length)];
  let word = words[index];
  const at = 1 + Math.trunc(where * (word.length - 2));
  if (how < 0.5) word = word.slice(0, at) + word.slice(at + 1);
  else word = word.slice(0, at) + word[at + 1] + word[at] + word.slice(at + 2);
  words[index] = word;
  return words.join(' ');
}

export function drawSession(rng, mix) {
  const query = withTypo(rng, mix.pick(rng));
  const keystrokes = [];
  for (let length = MIN_PREFIX; length <= query.length; length += 1) {
    if (query[length - 1] !== ' ') keystrokes.push([query.slice(0, length), rng.between(...KEYSTROKE_S)]);
  }
  const thinks = [];
  for (let i = 0; i < THINKS; i += 1) thinks.push(rng.between(...THINK_S));
  const [facetRoll, facetKindRoll, facetPickRoll, pageRoll, sortRoll] = [rng.random(), rng.random(), rng.random(), rng.random(), rng.random()];
  const opens = 1 + Math.trunc(rng.random() * MAX_OPENS);
  const openRolls = [];
  for (let i = 0; i < MAX_OPENS; i += 1) openRolls.push(rng.random());
  return { query, keystrokes, thinks, facetRoll, facetKindRoll, facetPickRoll, pageRoll, sortRoll, opens, openRolls, sellerRoll: rng.random() };
}

// The (parameter, value) a shopper narrows by, from the facets of the answer, or null.
export function facetOf(plan, facets) {
  if (plan.facetRoll >= FACET_SHARE) return null;
  const kind = plan.facetKindRoll < 0.5 ? 'category' : 'fandom';
  const buckets = (facets[kind] || []).filter((bucket) => bucket.count).slice(0, FACET_TOP);
  if (buckets.length === 0) return null;
  return [kind, String(buckets[Math.trunc(plan.facetPickRoll * buckets.length)].value)];
}

export function openedOf(plan, items) {
  if (!items.length) return [];
  return plan.openRolls.slice(0, plan.opens).map((roll) => items[Math.trunc(roll * items.length)]);
}
