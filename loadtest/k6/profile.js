// Load profiles (loadtest/profiles/*.json) for k6: the same reading as loadtest/profile.py.
//
// A profile is a k6 options object plus a `hos` object for this repository's runners; `loadProfile`
// resolves ${NAME} / ${NAME:-default} from the environment, validates what the Locust runner
// supports, and returns `options` for k6 (without `hos`). The planning functions (`plannedVUsAt`,
// `rateAt`, `arrivalOffsets`) and the threshold parser exist so tests/test_load_profiles.py can check,
// with Node.js, that both runners read every profile the same way; k6 itself plans from `options`.
// Pure: no k6 imports, no I/O. Times are milliseconds.

const UNIT_MS = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };
const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const GO_PART = /^(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;
const DAYS = /^(\d+)d(.*)$/s;

export const DEFAULT_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)'];
export const METRIC_TYPES = {
  http_reqs: 'counter',
  http_req_duration: 'trend',
  http_req_failed: 'rate',
  checks: 'rate',
  iterations: 'counter',
  iteration_duration: 'trend',
  dropped_iterations: 'counter',
  vus: 'gauge',
  vus_max: 'gauge',
};
const AGGREGATIONS = { counter: ['count', 'rate'], gauge: ['value'], rate: ['rate'], trend: ['avg', 'min', 'max', 'med', 'p'] };
const OPERATORS = ['<=', '<', '>=', '>', '===', '==', '!='];
const METHODS = ['value', 'count', 'rate', 'avg', 'min', 'med', 'max'];
const FLOAT = /^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)$/i;

function fail(message) {
  throw new Error(message);
}

function goDuration(text) {
  if (text === '0') return 0;
  let total = 0;
  let rest = text;
  if (rest === '') fail(`invalid duration ${JSON.stringify(text)}`);
  while (rest !== '') {
    const part = GO_PART.exec(rest);
    if (part === null) fail(`invalid duration ${JSON.stringify(text)}`);
    total += parseFloat(part[1]) * UNIT_MS[part[2]];
    rest = rest.slice(part[0].length);
  }
  return total;
}

export function parseDuration(value) {
  let ms;
  if (typeof value === 'number') ms = value;
  else if (typeof value === 'string') {
    const days = DAYS.exec(value);
    if (NUMBER.test(value)) ms = parseFloat(value);
    else if (days) ms = parseInt(days[1], 10) * 86400000 + (days[2] ? goDuration(days[2]) : 0);
    else ms = goDuration(value);
  } else fail(`invalid duration ${JSON.stringify(value)}`);
  if (!Number.isFinite(ms) || ms < 0) fail(`invalid duration ${JSON.stringify(value)}: must be a finite, non-negative time`);
  return ms;
}

export function substituteEnv(value, env) {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_, name, fallback) => {
      if (env[name]) return env[name];
      if (fallback === undefined) fail(`\${${name}} is not set and has no default`);
      return fallback;
    });
  }
  if (Array.isArray(value)) return value.map((item) => substituteEnv(item, env));
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const [key, item] of Object.entries(value)) out[key] = substituteEnv(item, env);
    return out;
  }
  return value;
}

// --- thresholds (metrics/thresholds_parser.go, metrics/metric.go) ---------------------------

function parseNumber(text) {
  if (!FLOAT.test(text)) fail(`${JSON.stringify(text)} is not a number`);
  const lower = text.toLowerCase().replace(/^\+/, '');
  if (lower === 'inf' || lower === 'infinity') return Infinity;
  if (lower === '-inf' || lower === '-infinity') return -Infinity;
  if (lower.endsWith('nan')) return NaN;
  return parseFloat(text);
}

export function parseExpression(source) {
  let left;
  let right;
  let op;
  for (const candidate of OPERATORS) {
    const at = source.indexOf(candidate);
    if (at !== -1 && source.slice(at + candidate.length) !== '') {
      [left, right, op] = [source.slice(0, at), source.slice(at + candidate.length), candidate];
      break;
    }
  }
  if (op === undefined) fail(`malformed threshold expression ${JSON.stringify(source)}`);
  let method = left.trim();
  let percentile = null;
  if (!METHODS.includes(method)) {
    if (!(method.startsWith('p(') && method.endsWith(')'))) fail(`${JSON.stringify(source)}: unknown aggregation method ${JSON.stringify(method)}`);
    percentile = parseNumber(method.slice(2, -1));
    if (Number.isNaN(percentile) || percentile < 0 || percentile > 100) fail(`${JSON.stringify(source)}: a percentile is a number from 0 to 100`);
    method = 'p';
  }
  const sinkKey = percentile === null ? method : `p(${percentile})`;
  return { method, percentile, operator: op, value: parseNumber(right.trim()), sinkKey };
}

export function parseMetricName(key) {
  const opening = key.indexOf('{');
  const closing = key.lastIndexOf('}');
  if (opening === -1 && closing === -1) return { metric: key, tags: [] };
  if (opening === -1 || closing === -1 || closing < opening || closing !== key.length - 1) {
    fail(`metric ${JSON.stringify(key)} has unmatched or misplaced curly braces`);
  }
  const parts = key.slice(opening + 1, closing).split(',');
  for (const part of parts) {
    const colon = part.indexOf(':');
    if (colon === -1 || part.slice(colon + 1) === '') fail(`metric ${JSON.stringify(key)}: tag expression ${JSON.stringify(part)} is malformed`);
  }
  const strip = (text) => text.trim().replace(/^["']+|["']+$/g, '');
  const tags = parts.map((part) => {
    const colon = part.indexOf(':');
    return [strip(part.slice(0, colon)), strip(part.slice(colon + 1))];
  });
  return { metric: key.slice(0, opening), tags };
}

export function parseThresholds(raw) {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail('thresholds must be an object');
  return Object.entries(raw).map(([key, sources]) => {
    const { metric, tags } = parseMetricName(key);
    if (!(metric in METRIC_TYPES)) fail(`threshold on ${JSON.stringify(key)}: no metric ${JSON.stringify(metric)} (known: ${Object.keys(METRIC_TYPES).join(', ')})`);
    if (!Array.isArray(sources)) fail(`${key}: thresholds are a list`);
    const thresholds = sources.map((source) => {
      if (typeof source === 'string') return { source, expression: parseExpression(source), abortOnFail: false, delayAbortEvalMs: null };
      if (source === null || typeof source !== 'object' || typeof source.threshold !== 'string') fail(`${key}: a threshold is a string or {threshold, abortOnFail, delayAbortEval}`);
      const unknown = Object.keys(source).filter((name) => !['threshold', 'abortOnFail', 'delayAbortEval'].includes(name));
      if (unknown.length) fail(`${key}: unknown threshold option(s) ${unknown.sort().join(', ')}`);
      const delay = source.delayAbortEval;
      return {
        source: source.threshold,
        expression: parseExpression(source.threshold),
        abortOnFail: Boolean(source.abortOnFail),
        delayAbortEvalMs: delay === undefined || delay === null ? null : parseDuration(delay),
      };
    });
    const allowed = AGGREGATIONS[METRIC_TYPES[metric]];
    for (const threshold of thresholds) {
      if (!allowed.includes(threshold.expression.method)) fail(`${JSON.stringify(threshold.source)} on ${key}: ${threshold.expression.method} does not apply to a ${METRIC_TYPES[metric]}`);
    }
    return { key, metric, tags, thresholds };
  });
}

// --- scenarios (lib/executor/*.go) ------------------------------------------------------------

const EXECUTORS = ['ramping-vus', 'constant-vus', 'per-vu-iterations', 'constant-arrival-rate', 'ramping-arrival-rate'];
const ARRIVAL = ['constant-arrival-rate', 'ramping-arrival-rate'];
const SCENARIO_KEYS = {
  'ramping-vus': ['startVUs', 'stages', 'gracefulRampDown'],
  'constant-vus': ['vus', 'duration'],
  'per-vu-iterations': ['vus', 'iterations', 'maxDuration'],
  'constant-arrival-rate': ['rate', 'timeUnit', 'duration', 'preAllocatedVUs', 'maxVUs'],
  'ramping-arrival-rate': ['startRate', 'timeUnit', 'stages', 'preAllocatedVUs', 'maxVUs'],
};
const COMMON_KEYS = ['executor', 'exec', 'startTime', 'gracefulStop', 'tags', 'env'];
const OPTION_KEYS = ['vus', 'duration', 'iterations', 'stages', 'scenarios', 'thresholds', 'summaryTrendStats', 'hos'];

function whole(raw, key, fallback, where) {
  const value = raw[key] === undefined ? fallback : raw[key];
  if (value === null || value === undefined) fail(`${where}: ${key} is required`);
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) fail(`${where}: ${key} must be a whole number >= 0, got ${JSON.stringify(value)}`);
  return value;
}

function stagesOf(raw, where) {
  if (!Array.isArray(raw) || raw.length === 0) fail(`${where}: stages must be a non-empty list`);
  return raw.map((stage, index) => {
    if (stage === null || typeof stage !== 'object' || !('duration' in stage)) fail(`${where}: stage ${index} needs a duration`);
    return { durationMs: parseDuration(stage.duration), target: whole(stage, 'target', 0, `${where} stage ${index}`) };
  });
}

export function parseScenario(name, raw) {
  const where = `scenario ${JSON.stringify(name)}`;
  const executor = raw.executor;
  if (!EXECUTORS.includes(executor)) fail(`${where}: executor must be one of ${EXECUTORS.join(', ')}, got ${JSON.stringify(executor)}`);
  const unknown = Object.keys(raw).filter((key) => !COMMON_KEYS.includes(key) && !SCENARIO_KEYS[executor].includes(key));
  if (unknown.length) fail(`${where}: unknown option(s) ${unknown.sort().join(', ')} for ${executor}`);
  const scenario = {
    name,
    executor,
    exec: String(raw.exec === undefined ? 'default' : raw.exec),
    startMs: parseDuration(raw.startTime === undefined ? 0 : raw.startTime),
    gracefulStopMs: parseDuration(raw.gracefulStop === undefined ? 30000 : raw.gracefulStop),
    startVUs: 1, vus: 1, stages: [], durationMs: 0, iterations: 1,
    rate: 0, startRate: 0, timeUnitMs: 1000, preAllocatedVUs: 0, maxVUs: 0,
  };
  if (executor === 'ramping-vus') {
    scenario.stages = stagesOf(raw.stages, where);
    scenario.startVUs = whole(raw, 'startVUs', 1, where);
  } else if (executor === 'constant-vus') {
    if (!('duration' in raw)) fail(`${where}: duration is required`);
    scenario.vus = whole(raw, 'vus', 1, where);
    scenario.durationMs = parseDuration(raw.duration);
  } else if (executor === 'per-vu-iterations') {
    scenario.vus = whole(raw, 'vus', 1, where);
    scenario.iterations = whole(raw, 'iterations', 1, where);
    scenario.durationMs = parseDuration(raw.maxDuration === undefined ? 600000 : raw.maxDuration);
  } else {
    scenario.preAllocatedVUs = whole(raw, 'preAllocatedVUs', null, where);
    scenario.maxVUs = whole(raw, 'maxVUs', scenario.preAllocatedVUs, where);
    if (scenario.maxVUs < scenario.preAllocatedVUs) fail(`${where}: maxVUs can't be less than preAllocatedVUs`);
    scenario.timeUnitMs = parseDuration(raw.timeUnit === undefined ? 1000 : raw.timeUnit);
    if (scenario.timeUnitMs <= 0) fail(`${where}: timeUnit must be more than 0`);
    if (executor === 'constant-arrival-rate') {
      if (!('duration' in raw)) fail(`${where}: duration is required`);
      scenario.rate = whole(raw, 'rate', null, where);
      scenario.durationMs = parseDuration(raw.duration);
    } else {
      scenario.startRate = whole(raw, 'startRate', 0, where);
      scenario.stages = stagesOf(raw.stages, where);
    }
  }
  return scenario;
}

function lengthMs(scenario) {
  return scenario.stages.length ? scenario.stages.reduce((sum, stage) => sum + stage.durationMs, 0) : scenario.durationMs;
}

function walk(start, stages, tau, wholeSteps) {
  let value = start;
  let elapsed = 0;
  for (const stage of stages) {
    const end = elapsed + stage.durationMs;
    if (tau < end) {
      const step = (stage.target - value) * (tau - elapsed) / stage.durationMs;
      return value + (wholeSteps ? Math.trunc(step) : step);
    }
    value = stage.target;
    elapsed = end;
  }
  return value;
}

export function plannedVUsAt(scenario, tMs) {
  const tau = tMs - scenario.startMs;
  if (tau < 0 || tau >= lengthMs(scenario)) return 0;
  if (scenario.executor === 'ramping-vus') return walk(scenario.startVUs, scenario.stages, tau, true);
  if (ARRIVAL.includes(scenario.executor)) return scenario.preAllocatedVUs;
  return scenario.vus;
}

export function rateAt(scenario, tMs) {
  const tau = tMs - scenario.startMs;
  if (!ARRIVAL.includes(scenario.executor) || tau < 0 || tau >= lengthMs(scenario)) return 0;
  const perUnit = scenario.executor === 'constant-arrival-rate' ? scenario.rate : walk(scenario.startRate, scenario.stages, tau, false);
  return perUnit * 1000 / scenario.timeUnitMs;
}

// The first `limit` iteration start times, in ms from the scenario's start.
export function arrivalOffsets(scenario, limit) {
  const out = [];
  if (scenario.executor === 'constant-arrival-rate') {
    if (scenario.rate <= 0) return out;
    const period = scenario.timeUnitMs / scenario.rate;
    for (let n = 0; n * period < scenario.durationMs && out.length < limit; n += 1) out.push(n * period);
    return out;
  }
  if (scenario.executor !== 'ramping-arrival-rate') return out;
  let done = 0;
  let endCount = 0;
  let stageStart = 0;
  let from = scenario.startRate / scenario.timeUnitMs;
  let i = 1;
  for (const stage of scenario.stages) {
    const to = stage.target / scenario.timeUnitMs;
    const duration = stage.durationMs;
    if (from !== to) {
      endCount += duration * ((to - from) / 2 + from);
      for (; i <= endCount && out.length < limit; i += 1) {
        const root = duration * (from * from * duration + 2 * (i - done) * (to - from));
        out.push((from * duration - Math.sqrt(Math.max(root, 0))) / (from - to) + stageStart);
      }
    } else {
      endCount += duration * to;
      for (; i <= endCount && out.length < limit; i += 1) out.push((i - done) / to + stageStart);
    }
    done = endCount;
    from = to;
    stageStart += duration;
  }
  return out;
}

// --- profiles ---------------------------------------------------------------------------------

function shortcutScenarios(raw) {
  const hasStages = Array.isArray(raw.stages) && raw.stages.length > 0;
  if ('scenarios' in raw) {
    if (hasStages || 'duration' in raw || 'iterations' in raw) fail("scenarios can't be combined with stages, duration or iterations");
    if (raw.scenarios === null || typeof raw.scenarios !== 'object' || Object.keys(raw.scenarios).length === 0) fail('scenarios must be a non-empty object');
    return Object.entries(raw.scenarios).map(([name, scenario]) => parseScenario(name, scenario));
  }
  if ('iterations' in raw) fail('iterations (shared-iterations) is not supported; use a per-vu-iterations scenario');
  if ('duration' in raw) {
    if (hasStages) fail("duration and stages can't be used together");
    return [parseScenario('default', { executor: 'constant-vus', vus: raw.vus === undefined ? 1 : raw.vus, duration: raw.duration })];
  }
  if (hasStages) return [parseScenario('default', { executor: 'ramping-vus', startVUs: raw.vus === undefined ? 1 : raw.vus, stages: raw.stages })];
  return [parseScenario('default', { executor: 'per-vu-iterations', vus: 1, iterations: 1 })];
}

// `raw` is the decoded profile file; returns {name, scenarios, thresholds, hos, options (for k6)}.
export function loadProfile(name, raw, env) {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(`${name}: a profile is a JSON object`);
  const unknown = Object.keys(raw).filter((key) => !OPTION_KEYS.includes(key));
  if (unknown.length) fail(`${name}: unsupported option(s) ${unknown.sort().join(', ')}`);
  const resolved = substituteEnv(raw, env);
  let scenarios;
  let thresholds;
  try {
    scenarios = shortcutScenarios(resolved);
    thresholds = parseThresholds(resolved.thresholds === undefined ? {} : resolved.thresholds);
  } catch (error) {
    fail(`${name}: ${error.message}`);
  }
  const options = {};
  for (const key of OPTION_KEYS) if (key !== 'hos' && key in resolved) options[key] = resolved[key];
  options.summaryTrendStats = resolved.summaryTrendStats || DEFAULT_TREND_STATS;
  return { name, scenarios, thresholds, hos: resolved.hos || {}, options };
}

export function durationMs(profile) {
  return Math.max(...profile.scenarios.map((scenario) => scenario.startMs + lengthMs(scenario)));
}
