# One image for both services: `hos-search proxy` or `hos-search indexer`.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY catalog ./catalog
COPY proxy ./proxy
COPY indexer ./indexer
COPY hos_search ./hos_search
COPY devstack ./devstack
RUN pip install . && useradd --system --uid 10001 hos
USER hos
EXPOSE 8080
ENTRYPOINT ["hos-search"]
CMD ["proxy", "--host", "0.0.0.0", "--port", "8080"]
