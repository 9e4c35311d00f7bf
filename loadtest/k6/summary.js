// The one-screen text summary of a k6 run, as loadtest/summary.py renders the Locust runner's:
// thresholds ✓/✗ with the observed value, requests by name, failed checks, iterations.
//
// Written here rather than imported from jslib.k6.io: a script that imports a URL fails before its
// first request on any machine without internet (found running the real k6 in CI, issue 20).
// Pure: no k6 imports, no I/O; `data` is what k6 passes to handleSummary.

const REQUEST_NAMES = ['search', 'suggest', 'product', 'seller'];

// Python's format(value, 'g') for the counts and plain numbers shown here: up to `digits`
// significant digits, no trailing zeros.
function general(value, digits = 6) {
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return '0';
  const exponent = Math.floor(Math.log10(Math.abs(value)));
  if (exponent < -4 || exponent >= digits) {
    const [mantissa, power] = value.toExponential(digits - 1).split('e');
    const trimmed = mantissa.includes('.') ? mantissa.replace(/\.?0+$/, '') : mantissa;
    const sign = power.startsWith('-') ? '-' : '+';
    return `${trimmed}e${sign}${power.replace(/^[+-]/, '').padStart(2, '0')}`;
  }
  const fixed = value.toFixed(Math.max(0, digits - 1 - exponent));
  return fixed.includes('.') ? fixed.replace(/\.?0+$/, '') : fixed;
}

function shown(metric, stat, value) {
  if (stat === 'rate' && metric.type === 'rate') return `${(value * 100).toFixed(2)}%`;
  if (['count', 'passes', 'fails', 'value'].includes(stat)) return general(value);
  if (stat === 'rate') return `${value.toFixed(2)}/s`;
  if (metric.contains === 'time') return value < 1000 ? `${value.toFixed(2)}ms` : `${(value / 1000).toFixed(2)}s`;
  return general(value, 4);
}

function pad(text, width) {
  return String(text).padStart(width, ' ');
}

// The text for `data`; `hos` says what ran: {profile, target, seed, aborted, thresholdsFailed}.
// `hidden` ({metric: [source, …]}) are thresholds the script added for bookkeeping, not the profile's:
// neither shown nor counted, so the text reads as the Locust runner's does.
export function textSummary(data, hos, hidden = {}) {
  const metrics = data.metrics;
  const judged = (key, metric) => Object.entries(metric.thresholds || {}).filter(([source]) => !(hidden[key] || []).includes(source));
  const stats = (data.options && data.options.summaryTrendStats) || ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)'];
  const lines = [];
  let total = 0;
  for (const [key, metric] of Object.entries(metrics)) total += judged(key, metric).length;
  const failed = hos.thresholdsFailed;
  const seconds = data.state.testRunDurationMs / 1000;
  const mark = failed || hos.aborted ? '✗' : '✓';
  const verdict = failed ? `${failed} of ${total} thresholds failed` : `all ${total} thresholds passed`;
  lines.push(`${mark} ${hos.profile}: ${verdict} — ${seconds.toFixed(1)} s against ${hos.target} (seed ${hos.seed})`);
  if (hos.aborted) lines.push(`  aborted: ${hos.aborted}`);
  lines.push('', '  THRESHOLDS');
  for (const [key, metric] of Object.entries(metrics)) {
    for (const [source, result] of judged(key, metric)) {
      const stat = source.split('<')[0].split('>')[0].split('=')[0].split('!')[0].trim();
      const observed = metric.values[stat];
      const value = observed === undefined ? '' : ` ${stat}=${shown(metric, stat, observed)}`;
      lines.push(`    ${result.ok ? '✓' : '✗'} ${key}: '${source}'${value}`);
    }
  }
  lines.push('');
  const columns = stats.filter((stat) => stat !== 'count');
  lines.push(`  REQUESTS   ${['count', 'failed', ...columns].map((head) => pad(head, 10)).join('')}`);
  for (const name of [...REQUEST_NAMES, null]) {
    const tag = name ? `{name:${name}}` : '';
    const duration = metrics[`http_req_duration${tag}`];
    const failedRate = metrics[`http_req_failed${tag}`];
    if (!duration || !failedRate) continue;
    const count = failedRate.values.passes + failedRate.values.fails;
    const row = [general(count), `${(failedRate.values.rate * 100).toFixed(2)}%`];
    for (const stat of columns) row.push(stat in duration.values ? shown(duration, stat, duration.values[stat]) : 'nan');
    lines.push(`    ${(name || 'all').padEnd(8, ' ')}${row.map((cell) => pad(cell, 10)).join('')}`);
  }
  const checks = data.root_group.checks || [];
  if (checks.length) {
    const passes = checks.reduce((sum, c) => sum + c.passes, 0);
    const fails = checks.reduce((sum, c) => sum + c.fails, 0);
    lines.push('', `  CHECKS  ✓ ${passes}  ✗ ${fails}`);
    for (const c of checks) if (c.fails) lines.push(`    ✗ ${c.name}: ${c.fails} of ${c.passes + c.fails} failed`);
  }
  lines.push('');
  const iterations = (metrics.iterations || {}).values || {};
  const dropped = ((metrics.dropped_iterations || {}).values || {}).count || 0;
  const vus = ((metrics.vus_max || metrics.vus || {}).values || {}).max || 0;
  lines.push(`  iterations ${general(iterations.count || 0)} (${(iterations.rate || 0).toFixed(2)}/s), dropped ${general(dropped)}, VUs max ${general(vus)}`);
  if (dropped) lines.push(`  ⚠ the arrival rate was not kept: ${general(dropped)} iterations found every VU busy (arrival_rate_kept)`);
  return `${lines.join('\n')}\n`;
}
