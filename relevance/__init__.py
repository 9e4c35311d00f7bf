"""Search quality on a judged query set: the judgements, the runner that scores them, the baseline.

``make relevance`` (``python -m relevance``) indexes the deterministic sample catalog on a real
engine and scores every judged query through the proxy's search path against the committed
baseline; ``tests/test_relevance.py`` enforces its floors. Never imports a benchmark.
"""
