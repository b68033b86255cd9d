"""The gateway's plain HTTP, on the websocket port: the handshake's token check and the pages.

``/`` (the live board), ``/healthz`` (503 until caught up with Kafka), ``/metrics``
(Prometheus) and ``/stats`` (JSON counters). A websocket upgrade is let through only to
``/ws`` (or ``/``) with a known token, in the query string or an ``Authorization: Bearer``
header; its access then rides on the connection to the session handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from sinks.gateway.protocol import TokenTable
from tickstream import metrics

STATIC = Path(__file__).with_name("static")


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
            return self._page(connection, parts.path)
        if parts.path not in ("/", "/ws"):
            return connection.respond(HTTPStatus.NOT_FOUND, "websocket endpoint is /ws\n")
        token = parse_qs(parts.query).get("token", [None])[0]
        if token is None:
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                token = auth[len("Bearer ") :].strip()
        if not token:
            self.counts["refused"] += 1
            metrics.GATEWAY_REFUSED.labels("missing").inc()
            return connection.respond(
                HTTPStatus.UNAUTHORIZED, "token required: /ws?token=... or Authorization: Bearer\n"
            )
        access = self.tokens.lookup(token)
        if access is None:
            self.counts["refused"] += 1
            metrics.GATEWAY_REFUSED.labels("unknown").inc()
            return connection.respond(HTTPStatus.FORBIDDEN, "unknown token\n")
        connection.tickstream_access = access  # type: ignore[attr-defined]
        return None

    def _page(self, connection: ServerConnection, path: str) -> Response:
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
                connection.respond(HTTPStatus.OK, generate_latest().decode()), CONTENT_TYPE_LATEST
            )
        if path == "/stats":
            body = orjson.dumps(self.stats(), option=orjson.OPT_INDENT_2).decode()
            return _typed(connection.respond(HTTPStatus.OK, body), "application/json")
        return connection.respond(HTTPStatus.NOT_FOUND, "not found: try / (board) or /ws\n")


def _typed(response: Response, content_type: str) -> Response:
    headers: Headers = response.headers
    del headers["Content-Type"]
    headers["Content-Type"] = content_type
    headers["Cache-Control"] = "no-store"
    return response
