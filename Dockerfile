# syntax=docker/dockerfile:1
# One image for both processes:
#   API (default):  docker run -p 8000:8000 ticketing              -> `ticketing api`
#   worker:         docker run ticketing ticketing worker           -> `ticketing worker`
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# uv comes from its PyPI package (same version as the repo's .uv/), no curl | sh.
ARG UV_VERSION=0.13.8
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

WORKDIR /src

# Third-party dependencies first (cached layer while only our code changes).
# The `dev` extra is never installed: only the runtime dependencies, pinned with hashes.
COPY pyproject.toml requirements.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv /opt/venv && VIRTUAL_ENV=/opt/venv uv pip sync --require-hashes requirements.lock

# Then the project itself, installed as a regular (non-editable) wheel.
COPY ticketing ./ticketing
COPY api ./api
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
RUN --mount=type=cache,target=/root/.cache/uv \
    VIRTUAL_ENV=/opt/venv uv pip install --no-deps --no-editable .

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

# HOST is read by `ticketing api` (not a Settings field): listen on all interfaces in a container.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=prod \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKER_METRICS_PORT=9464

WORKDIR /app
USER 10001:10001

# 8000: API (/healthz, /readyz, /metrics, /api/...); 9464: worker Prometheus metrics.
EXPOSE 8000 9464

CMD ["ticketing", "api"]
