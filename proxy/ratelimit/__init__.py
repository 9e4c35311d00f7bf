"""Token-bucket rate limiting: ``bucket`` (the arithmetic, pure), ``script`` (the same as a Redis
Lua script), ``identity`` (who a client is), ``headers`` (the RateLimit response headers) and
``limiter`` (a decision per request, with its Redis timeout, breaker and fallback). Wired in by
``proxy.middleware.ratelimit`` and, for cache hits, ``proxy.fastpath``."""
