# syntax=docker/dockerfile:1.7
# One image for every mediaflow process. The Helm chart picks the process per Deployment
# through `command` (mediaflow-auth, -gateway, -notifier, -worker, -migrate); the CMD below
# is only the default for a bare `docker run`. See deploy/README.md for why one image.
#
# Build from the repository root:  docker build -t mediaflow:dev .

# Base images pinned by exact version and by digest (the multi-arch index), so a rebuild gets
# the same bytes; bump both together (`docker buildx imagetools inspect <image>:<tag>`).
# The digest is the one several public projects pin for this tag; it could not be pulled
# where this line was written. uv is pinned by exact version only: no digest for 0.13.9
# could be verified.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- builder: resolve the locked dependencies into /app/.venv --------------------------
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_FROZEN=1
WORKDIR /src

# Third-party dependencies first, from the lock file and the members' pyproject.toml only,
# so that a source change does not invalidate this (slow) layer.
COPY pyproject.toml uv.lock ./
COPY libs/pyproject.toml libs/
COPY services/auth/pyproject.toml services/auth/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/notifier/pyproject.toml services/notifier/
COPY services/worker/pyproject.toml services/worker/
COPY cli/pyproject.toml cli/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace

# Then the workspace members themselves, installed as real (non-editable) wheels, so the
# runtime stage needs nothing from /src.
COPY libs/ libs/
COPY services/ services/
COPY cli/ cli/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---- runtime: the interpreter, the virtualenv, an unprivileged user ---------------------
FROM ${PYTHON_IMAGE} AS runtime
# ffmpeg muxes streams served apart (it reads only pipes the worker feeds); yt-dlp, yt-dlp-ejs
# and deno (for YouTube's JavaScript challenges) come with the worker's locked dependencies.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 mediaflow \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin mediaflow
# Owned by root and not writable by the app user: the code cannot be changed at run time,
# and the root filesystem can be mounted read-only (bytecode is already compiled).
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
# auth 8101 (and 8111, its internal port), gateway 8102, notifier 8103, worker (health and metrics) 8104
EXPOSE 8101 8111 8102 8103 8104
LABEL org.opencontainers.image.title="mediaflow" \
      org.opencontainers.image.description="mediaflow services: auth, gateway, notifier, worker, migrate"
CMD ["mediaflow-gateway"]
