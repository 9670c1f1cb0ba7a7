# syntax=docker/dockerfile:1
# Webhook Bridge: `docker run -v bridge-data:/data -p 8080:8080 IMAGE` serves the API on 0.0.0.0
# inside the container (configure auth tokens, or it refuses to start), state in /data (SQLite).
# Runs as a numeric non-root user and works with a read-only root filesystem.

ARG PYTHON=python:3.11-slim-bookworm

FROM ${PYTHON} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, each file checked against the runtime lock's hashes (the build backend is
# locked there too), so that layer stays cached until the lock changes.
COPY requirements.lock ./
RUN pip install --require-hashes --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY service ./service
# The runtime installs nothing: pip and setuptools (the build backend) stay out of the image.
RUN pip install --no-deps --no-build-isolation . \
    && python -m pip uninstall --yes pip setuptools wheel \
    && python -m compileall -q /opt/venv

FROM ${PYTHON}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BRIDGE_CONFIG=/etc/webhook-bridge/bridge.toml \
    BRIDGE_SERVER__HOST=0.0.0.0 \
    BRIDGE_STORE__URL=sqlite:////data/bridge.db
COPY --from=build /opt/venv /opt/venv
COPY config/bridge.toml /etc/webhook-bridge/bridge.toml
# /data holds the SQLite database: mount a volume there (and an emptyDir on /tmp with a
# read-only root filesystem). The system Python's pip, setuptools and wheel go too.
RUN /usr/local/bin/python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel \
    && mkdir /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /data
EXPOSE 8080
# /livez on the health port if BRIDGE_SERVER__HEALTH_PORT is set, else on the API port (8080 in
# bridge.toml); each check starts a Python (~50 ms of CPU), hence every 30 s, and the first
# minute, in which migrations run, does not count.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; port = os.environ.get('BRIDGE_SERVER__HEALTH_PORT') or os.environ.get('BRIDGE_SERVER__PORT') or '8080'; r.build_opener(r.ProxyHandler({})).open(f'http://127.0.0.1:{port}/livez', timeout=4)"]
ENTRYPOINT ["webhook-bridge"]
CMD ["serve"]
