# syntax=docker/dockerfile:1
# One image for every process of hos-search: the command picks it.
#   docker run IMAGE                       the proxy on 0.0.0.0:8080 (the default command)
#   docker run IMAGE indexer               the indexer, /metrics on 0.0.0.0:9187
#   docker run IMAGE migrate | reindex     one-shot jobs
# Settings come from the environment (.env.example lists them all). Checked by
# tests/test_deploy.py (structure, .dockerignore, commands, ports) and by hadolint where installed.

# --- build: wheels of the project and of its runtime dependencies only -----------------------
# install_requires of setup.cfg; never the [dev] extra (embedded servers, test and lint tools).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies first, from setup.cfg alone, so that their layer survives every code change.
COPY setup.cfg ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); \
print(c['options']['install_requires'].strip())" > requirements.txt \
    && pip wheel --wheel-dir /wheels --requirement requirements.txt
COPY pyproject.toml README.md ./
COPY catalog ./catalog
COPY proxy ./proxy
COPY indexer ./indexer
COPY hos_search ./hos_search
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: those wheels on a slim Python, as an unprivileged user -------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    LOG_FORMAT=json \
    INDEXER_METRICS_HOST=0.0.0.0 \
    INDEXER_METRICS_PORT=9187
# The wheels are mounted for this one step, not copied: no layer keeps them. --no-index: nothing
# is fetched here that the build stage did not build.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/*.whl \
    && groupadd --system --gid 10001 hos \
    && useradd --system --uid 10001 --gid hos --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin hos
WORKDIR /srv
# Numeric, so that Kubernetes' runAsNonRoot can verify it (deploy/k8s runs as the same uid).
USER 10001:10001
# 8080: the proxy's API, /healthz, /readyz and /metrics; 9187: the indexer's /metrics.
EXPOSE 8080 9187
# The proxy's liveness; slim has no curl. The indexer and the jobs set their own (compose) or
# none: Kubernetes ignores HEALTHCHECK and uses the probes of deploy/k8s.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["hos-search"]
CMD ["proxy", "--host", "0.0.0.0", "--port", "8080"]
