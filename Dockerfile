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
# The gateway listens on every interface of the container, so a published port reaches it
# (`docker run -p 8765:8765 tickstream gateway --tokens T`); the other services serve only
# /metrics, on all interfaces already (TICKSTREAM_METRICS_PORT).
ENV TICKSTREAM_GATEWAY_HOST=0.0.0.0
# 9464 = default Prometheus /metrics port (TICKSTREAM_METRICS_PORT); 8765 = gateway websocket,
# live board, /healthz and /metrics.
EXPOSE 9464 8765
# Liveness whatever the role: TICKSTREAM_HEALTH_URL when set; else healthy when this container
# answers on /metrics of TICKSTREAM_METRICS_PORT (producer, processor, sink) or on /healthz of
# TICKSTREAM_GATEWAY_PORT (the gateway, which opens no metrics port; https with its TLS cert).
# docker-compose.yml gives each service a healthcheck of its own.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=4 \
    CMD ["python", "-c", "import contextlib, os, ssl, sys, urllib.request\nenv = os.environ.get\nscheme = 'https' if env('TICKSTREAM_GATEWAY_TLS_CERT') else 'http'\nurls = [env('TICKSTREAM_HEALTH_URL')] if env('TICKSTREAM_HEALTH_URL') else ['http://127.0.0.1:%s/metrics' % env('TICKSTREAM_METRICS_PORT', '9464'), '%s://127.0.0.1:%s/healthz' % (scheme, env('TICKSTREAM_GATEWAY_PORT', '8765'))]\nfor url in urls:\n    with contextlib.suppress(OSError, ValueError):\n        urllib.request.urlopen(url, timeout=2, context=ssl._create_unverified_context())\n        sys.exit(0)\nsys.exit(1)"]
ENTRYPOINT ["tickstream"]
CMD ["--help"]
