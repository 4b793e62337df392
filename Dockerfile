# syntax=docker/dockerfile:1.7
#
# One Dockerfile for every Billfold image; pick one with --target:
#
#   docker build --target session-api -t billfold/session-api .
#   docker build --target migrate     -t billfold/migrate     .
#
# Why one file at the repository root rather than services/<name>/Dockerfile:
# every service is a member of one uv workspace with ONE lockfile (uv.lock at the
# root), so the build context has to be the root anyway and the recipe (locked
# deps into a venv, slim non-root runtime) is identical for all of them. Only the
# package installed, the port and the command differ, and those are the few lines
# of each target at the bottom. One file cannot drift between services; adding a
# service means adding one build-<name> stage and one <name> stage
# (tests/test_deploy_dockerfile.py fails until you do).
#
# Why targets instead of a single --build-arg SERVICE: each target has an explicit,
# greppable CMD and EXPOSE, and no shell tricks turn "session-api" into
# "session_api" at run time.
#
# libs/billfold-testing never reaches an image: .dockerignore keeps it out of the
# build context and every `uv sync` below passes --no-dev.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
# builder: uv (from PyPI, pinned) and the environment every build-* stage shares
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.8
# UV_PROJECT_ENVIRONMENT: the venv lives at /opt/venv, the same path in the
#   runtime image, so its scripts' shebangs stay valid after COPY --from.
# UV_PYTHON_DOWNLOADS=never: use the image's CPython 3.11, which the runtime has too.
# UV_LINK_MODE=copy: the uv cache is a separate mount; hard links would fail.
# UV_COMPILE_BYTECODE=1: compile .pyc at build time (the root filesystem is
#   read-only at run time, so Python could not write them later).
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src

# ---------------------------------------------------------------------------
# runtime: slim CPython, non-root user, nothing else (psycopg[binary], asyncpg,
# hiredis and uvloop ship manylinux wheels, so no system libraries are needed)
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 billfold \
    && useradd --system --uid 10001 --gid billfold --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin billfold
# BILLFOLD_HOST=0.0.0.0: the default (127.0.0.1) would be unreachable from
# outside the container. JSON logs: containers have no TTY, make it explicit.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BILLFOLD_HOST=0.0.0.0 \
    BILLFOLD_LOG_FORMAT=json
WORKDIR /app
# /app is empty and root-owned: `python -m` puts the CWD on sys.path, so it must
# not be writable by the app user.
# Numeric UID so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001

# ---------------------------------------------------------------------------
# build-all: every production package (the root project's dependencies, which
# list every service but not the dev group). Used by the migrate image, because
# each service registers its own migrations through an entry point.
# ---------------------------------------------------------------------------
FROM builder AS build-all
# Third-party dependencies first: this layer is reused until uv.lock changes.
# --frozen, not --locked: only the root pyproject.toml is mounted here, so uv
# cannot check the lock against the members' pyproject files (CI does that).
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace
COPY . /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---------------------------------------------------------------------------
# build-session-api: session-api and what it depends on, nothing more
# ---------------------------------------------------------------------------
FROM builder AS build-session-api
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace --package session-api
COPY . /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package session-api

# ---------------------------------------------------------------------------
# build-billing-sync: billing-sync and what it depends on, nothing more
# ---------------------------------------------------------------------------
FROM builder AS build-billing-sync
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace --package billing-sync
COPY . /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package billing-sync

# ---------------------------------------------------------------------------
# build-portal-web: portal-web (templates, static files and catalogues are package
# data of its wheel) and what it depends on, nothing more
# ---------------------------------------------------------------------------
FROM builder AS build-portal-web
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace --package portal-web
COPY . /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package portal-web

# ---------------------------------------------------------------------------
# build-notifier: the notifier and what it depends on
# ---------------------------------------------------------------------------
FROM builder AS build-notifier
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace --package notifier
COPY . /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package notifier

# ---------------------------------------------------------------------------
# Final images. The venv stays owned by root: the app user can read, not modify it.
# ---------------------------------------------------------------------------

# migrate: one-shot `billfold migrate` (compose service, Kubernetes Job)
FROM runtime AS migrate
COPY --from=build-all /opt/venv /opt/venv
CMD ["billfold", "migrate"]

# billing-sync: Stripe webhooks in, the mirror, the only Stripe client
FROM runtime AS billing-sync
COPY --from=build-billing-sync /opt/venv /opt/venv
EXPOSE 8082
CMD ["python", "-m", "billing_sync"]

# portal-web: the customer portal (links, browser sessions, pages)
FROM runtime AS portal-web
COPY --from=build-portal-web /opt/venv /opt/venv
EXPOSE 8081
CMD ["python", "-m", "portal_web"]

# notifier: emails and tenant webhooks; /healthz, /readyz, /metrics on 8083
FROM runtime AS notifier
COPY --from=build-notifier /opt/venv /opt/venv
EXPOSE 8083
CMD ["python", "-m", "notifier"]

# session-api (kept last so a plain `docker build .` produces it)
FROM runtime AS session-api
COPY --from=build-session-api /opt/venv /opt/venv
EXPOSE 8080
CMD ["python", "-m", "session_api"]
