"""The two-tier response cache: keys, entries, L1, L2, freshness, fill notices, subscriber.

``proxy.cache.response_cache.ResponseCache`` ties them together for the routes.
"""
