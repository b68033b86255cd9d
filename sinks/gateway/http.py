"""The gateway's plain HTTP, on the websocket port: the handshake's token check and the pages.

``/`` (the live board), ``/healthz`` (503 until caught up with Kafka), ``/metrics``
(Prometheus) and ``/stats`` (JSON counters). A websocket upgrade is let through only to
``/ws`` (or ``/``) with a known token, in the query string or an ``Authorization: Bearer``
header; its access then rides on the connection to the session handler.

``/stats`` asks for a token the same way (401 without one, 403 for an unknown one): it is
read by people and scripts that hold a desk token anyway, so nothing needs it open.

``/metrics`` stays open: Prometheus scrapes it (deploy/prometheus/prometheus.yml), and in the
compose stack the desk port is published on the host's loopback only; a desk port opened
wider goes through a proxy passing only ``/`` and ``/ws`` (README, "Running in production").
What it may show is therefore fixed here rather than left to whatever shares the process's
registry: the gateway's own families (``PUBLISHED``), whose labels are protocol words
(frame types, error codes, refusal reasons, topic roles, signal kinds) and never a symbol,
a token or a client address; tests/integration/test_gateway_limits.py holds it to that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from sinks.gateway.access import Access, TokenTable
from tickstream import metrics

STATIC = Path(__file__).with_name("static")
# Metric families the open /metrics serves (name prefixes): the gateway's counters, the signal
# latency it measures, and the process's CPU, memory and file descriptors.
PUBLISHED = ("tickstream_gateway_", "tickstream_signal_latency_", "process_")


class _Published:
    """The default registry seen through ``PUBLISHED``: whatever else the process registers
    (tests, an embedding process) stays off the unauthenticated page."""

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name.startswith(PUBLISHED):
                yield family


_METRICS = CollectorRegistry(auto_describe=False)
_METRICS.register(_Published())


class Http:
    """Answers every request before (or instead of) the websocket handshake."""

    def __init__(
        self,
        tokens: TokenTable,
        counts: dict[str, int],
        ready: asyncio.Event,
        stats: Callable[[], dict[str, Any]],
    ) -> None:
        self.tokens = tokens
        self.counts = counts
        self.ready = ready
        self.stats = stats
        self._board = (STATIC / "board.html").read_bytes().decode()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """None lets a websocket handshake go on; a response ends the request there."""
        parts = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._page(connection, request, parts.path)
        if parts.path not in ("/", "/ws"):
            return connection.respond(HTTPStatus.NOT_FOUND, "websocket endpoint is /ws\n")
        access = self._access(connection, request)
        if isinstance(access, Response):
            return access
        connection.tickstream_access = access  # type: ignore[attr-defined]
        return None

    def _access(self, connection: ServerConnection, request: Request) -> Access | Response:
        """The access of the request's token, or the refusal to send (counted either way).

        The token comes in the query string (browsers cannot set a websocket's headers) or
        in an ``Authorization: Bearer`` header.
        """
        token = parse_qs(urlsplit(request.path).query).get("token", [None])[0]
        if token is None:
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                token = auth[len("Bearer ") :].strip()
        if not token:
            self.counts["refused"] += 1
            metrics.GATEWAY_REFUSED.labels("missing").inc()
            return connection.respond(
                HTTPStatus.UNAUTHORIZED, "token required: ?token=... or Authorization: Bearer\n"
            )
        access = self.tokens.lookup(token)
        if access is None:
            self.counts["refused"] += 1
            metrics.GATEWAY_REFUSED.labels("unknown").inc()
            return connection.respond(HTTPStatus.FORBIDDEN, "unknown token\n")
        return access

    def _page(self, connection: ServerConnection, request: Request, path: str) -> Response:
        if path in ("/", "/board", "/board.html"):
            return _typed(
                connection.respond(HTTPStatus.OK, self._board), "text/html; charset=utf-8"
            )
        if path == "/healthz":
            if self.ready.is_set():
                return connection.respond(HTTPStatus.OK, "ok\n")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "catching up with Kafka\n")
        if path == "/metrics":
            return _typed(
                connection.respond(HTTPStatus.OK, generate_latest(_METRICS).decode()),
                CONTENT_TYPE_LATEST,
            )
        if path == "/stats":
            refused = self._access(connection, request)
            if isinstance(refused, Response):
                return refused
            body = orjson.dumps(self.stats(), option=orjson.OPT_INDENT_2).decode()
            return _typed(connection.respond(HTTPStatus.OK, body), "application/json")
        return connection.respond(HTTPStatus.NOT_FOUND, "not found: try / (board) or /ws\n")


def _typed(response: Response, content_type: str) -> Response:
    headers: Headers = response.headers
    del headers["Content-Type"]
    headers["Content-Type"] = content_type
    headers["Cache-Control"] = "no-store"
    return response
