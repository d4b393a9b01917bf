# syntax=docker/dockerfile:1
# The Phoenix node image: `phx node` as PID 1, non-root, health-checked.
#
#   docker build -t phoenix-cluster:0.1.0 .
#   docker run --rm -e PHX_COOKIE=change-me phoenix-cluster:0.1.0 --name a
#
# Applications build on it (FROM phoenix-cluster, COPY their agent modules, pass
# --import); docs/deployment.md walks through building, running and deploying it.

ARG PYTHON_VERSION=3.12

# ---------------------------------------------------------------- build stage
# Builds the wheel and installs it with its dependencies into a venv that the runtime
# stage copies whole: no compiler, pip cache or source tree reaches the final image.
FROM python:${PYTHON_VERSION}-slim AS build

# Extras from pyproject.toml: cli for `phx node`, web for the HTTP endpoint the
# HEALTHCHECK asks, dns for the DNS SRV discovery the Kubernetes manifests use (uvloop
# comes with the core). Add http2, quic, otel as needed (--build-arg EXTRAS=cli,web,dns,otel).
ARG EXTRAS=cli,web,dns

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/phoenix
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/phoenix/bin/pip install ".[${EXTRAS}]"

# ---------------------------------------------------------------- runtime stage
FROM python:${PYTHON_VERSION}-slim AS runtime

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and volume
# ownership (fsGroup) is predictable.
ARG UID=10001
RUN groupadd --system --gid "${UID}" phoenix \
    && useradd --system --uid "${UID}" --gid phoenix --home-dir /app \
       --shell /usr/sbin/nologin phoenix \
    && mkdir -p /app /data \
    && chown phoenix:phoenix /app /data
# /data: mount a volume here and pass --data-dir=/data for durable replicas.

COPY --from=build /opt/phoenix /opt/phoenix

# Logs go straight to stdout/stderr (no buffering), no .pyc files in a read-only root.
# PHX_HTTP turns on the endpoint the HEALTHCHECK below asks; it is loopback, so it needs
# no token. Override it (with http_public and a token) to let Prometheus scrape it.
ENV PATH=/opt/phoenix/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PHX_HTTP=127.0.0.1:9100

USER ${UID}:${UID}
WORKDIR /app
# 7100: peers (TCP; HTTP/2 and QUIC use 7101 when enabled). 9100: metrics and health.
EXPOSE 7100 9100

# Asks /health/live on the address PHX_HTTP names (a wildcard bind is asked on loopback).
# The slim image has no curl; the standard library does the request.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; h = os.environ.get('PHX_HTTP', '127.0.0.1:9100').replace('0.0.0.0', '127.0.0.1'); urllib.request.urlopen('http://' + h + '/health/live', timeout=2)"]

# Exec form: phx is PID 1 and gets SIGTERM itself, so `docker stop` and Kubernetes
# start its graceful leave (handoff, then exit 0) instead of killing a shell.
ENTRYPOINT ["phx", "node"]
