"""What the benchmarks share: processes, wrk, metric scraping, percentiles, scratch catalogs, results,
a Redis Cluster beside the one Redis.

The kit may use ``devstack`` (embedded servers, scratch databases and catalogs); it never imports a
bench, and nothing outside ``benchmarks`` imports it.
"""
