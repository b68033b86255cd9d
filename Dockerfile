# One image for every tickstream service (process, sink, produce, gateway); the compose file
# picks the subcommand. Build: docker build -t tickstream .   Run: docker run tickstream --help
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a virtual environment.
# Every dependency ships manylinux wheels, so no compiler is needed.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/tickstream
WORKDIR /src
# .dockerignore lets only pyproject.toml, README.md and the package folders through.
COPY . .
RUN /opt/tickstream/bin/pip install . \
    && /opt/tickstream/bin/tickstream --version

# --- runtime: the virtual environment only, run as an unprivileged user
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/tickstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 tickstream \
    && useradd --system --uid 10001 --gid tickstream --home-dir /data \
        --shell /usr/sbin/nologin tickstream \
    && mkdir -p /data \
    && chown tickstream:tickstream /data
COPY --from=build /opt/tickstream /opt/tickstream
# Faust keeps its local state (<app>-data/) under the working directory: a named volume in compose.
WORKDIR /data
USER tickstream:tickstream
# 9464 = default Prometheus /metrics port (TICKSTREAM_METRICS_PORT); 8765 = gateway websocket.
EXPOSE 9464 8765
# Liveness: this process's /metrics answers (every service serves it; see tickstream/metrics.py).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('TICKSTREAM_METRICS_PORT', '9464'), timeout=4)"]
ENTRYPOINT ["tickstream"]
CMD ["--help"]
