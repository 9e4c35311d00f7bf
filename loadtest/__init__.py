"""The load tests' Python side: profiles read by k6's rules, k6's threshold semantics, the summary.

- ``profile``: loadtest/profiles/*.json (a subset of k6's ``options``) and what they plan at a time t;
- ``durations``: k6's duration strings ("1m30s", "500ms", "1d") in milliseconds;
- ``thresholds``: threshold expressions and metric names with tags, evaluated as k6 does;
- ``metrics``: the samples a run collects (k6's counter, gauge, rate and trend sinks);
- ``summary``: the k6-style ``summary.json``, the one-screen summary, comparing two runs;
- ``traffic``: the seeded storefront traffic (query mix, think times), shared with loadtest/k6/;
- ``arrivals``: the open model's iteration clock for Locust;
- ``runner``: ``make load`` — a dev stack when needed, then Locust (loadtest/locustfile.py).

Everything but ``runner`` is pure: no sockets, no subprocesses, no clock of its own. Nothing
here imports the proxy, the indexer or a benchmark; the runner starts the proxy as a process.
"""
