"""Token-bucket rate limiting (issue 10), being built: the parts here are not wired into the
proxy yet. ``bucket`` (pure arithmetic), ``script`` (the same arithmetic as a Redis Lua script),
``identity`` (who a client is), ``headers`` (the RateLimit response headers); the circuit
breaker around Redis will be ``proxy.breaker``."""
