"""The HTTP side: ClickHouse's HTTP interface read into a ``Request``, a ``Reply`` sent back.

Clients (clickhouse-connect, curl, Grafana's datasource) expect what a ClickHouse server
does: ``/ping``, the query in the URL or the body or both, settings and ``param_`` values
as URL parameters, the ``X-ClickHouse-*`` headers, errors as text with their code. A thread
per client connection with keep-alive, as clickhouse-connect pools its connections.

Not served: sessions (``session_id`` is accepted and ignored), ClickHouse's own body
compression (``compress=1``/``decompress=1``), multipart requests (external data), progress
headers. Results are buffered whole before they are sent, so a status can still say an
error.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tickstream.chdb_http.auth import authenticate
from tickstream.chdb_http.content import content_type, decompressed
from tickstream.chdb_http.engine import Engine
from tickstream.chdb_http.messages import IDENTIFIER, QueryError, Request

log = logging.getLogger(__package__)  # the interface's one logger, whichever module logs

MAX_BODY_BYTES = {False: 16 << 20, True: 1 << 30}  # by writable: queries are small, inserts not

# URL parameters that belong to the HTTP transport, not to the engine's settings
_TRANSPORT = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "quota_key",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "http_zlib_compression_level",
        "cancel_http_readonly_queries_on_client_close",
    }
)
# format names chDB's Python layer takes for itself (they are no ClickHouse output format)
_PYTHON_FORMATS = frozenset({"dataframe", "arrowtable", "datastore", "debug"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools its connections
    server_version = "tickstream-chdb"
    sys_version = ""  # no Python version in the Server header
    timeout = 300  # an idle keep-alive connection, or a client that stopped sending
    server: Listener

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("clickhouse http %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._handle(get=True)

    def do_POST(self) -> None:  # noqa: N802
        self._handle(get=False)

    def _handle(self, get: bool) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            body = self._body()
            if url.path == "/ping" or (url.path == "/" and "query" not in params and not body):
                self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
                return
            if url.path != "/":
                self._send(404, f"There is no handler {url.path}\n".encode(), {})
                return
            authenticate(self.headers, params, self.server.password)
            request = self._request(params, body, get)
            reply = self.server.engine.execute(request)
        except QueryError as exc:
            self._error(exc, query_id)
            return
        except Exception as exc:  # a bug of ours: still an answer, and a log line
            log.exception("clickhouse http: request failed")
            self._error(QueryError.of(1001, "STD_EXCEPTION", str(exc)), query_id)
            return
        headers = {
            "Content-Type": content_type(reply.fmt),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Summary": json.dumps(reply.summary, separators=(",", ":")),
        }
        if reply.fmt:
            headers["X-ClickHouse-Format"] = reply.fmt
        self._send(200, reply.body, headers)

    def _body(self) -> bytes:
        limit = MAX_BODY_BYTES[self.server.engine.writable]
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = self._chunked(limit)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > limit:
                self.close_connection = True  # the rest of the body is not read
                raise _too_large(limit)
            data = self.rfile.read(length) if length else b""
        return decompressed(data, self.headers.get("Content-Encoding", ""))

    def _chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise QueryError.of(36, "BAD_ARGUMENTS", "bad chunked body", 400) from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                raise _too_large(limit)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the chunk's CRLF

    def _request(self, params: dict[str, str], body: bytes, get: bool) -> Request:
        if "multipart/form-data" in self.headers.get("Content-Type", ""):
            raise QueryError.of(48, "NOT_IMPLEMENTED", "multipart requests (external data)", 400)
        for name in ("compress", "decompress"):
            if params.get(name, "0") not in ("", "0", "false"):
                raise QueryError.of(
                    48,
                    "NOT_IMPLEMENTED",
                    f"{name}=1 (ClickHouse's own body compression): send without it",
                    400,
                )
        fmt = params.get("default_format") or self.headers.get("X-ClickHouse-Format")
        fmt = fmt or "TabSeparated"
        if not IDENTIFIER.match(fmt) or fmt.lower() in _PYTHON_FORMATS:
            raise QueryError.of(73, "UNKNOWN_FORMAT", f"Unknown format {fmt}")
        if get and body:
            body = b""  # a GET's query is its URL's
        return Request(
            query_param=params.get("query"),
            body=body,
            get=get,
            database=params.get("database") or self.headers.get("X-ClickHouse-Database"),
            default_format=fmt,
            settings={
                k: v
                for k, v in params.items()
                if k not in _TRANSPORT and not k.startswith("param_")
            },
            params={k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")},
            client_protocol_version=params.get("client_protocol_version", "0"),
        )

    def _error(self, exc: QueryError, query_id: str) -> None:
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Exception-Code": str(exc.code),
        }
        if exc.code == 516:
            headers["WWW-Authenticate"] = 'Basic realm="tickstream chDB"'
        # a client's error is the client's to read, not the pipeline operator's
        log.debug("clickhouse http: %s", exc.text.splitlines()[0] if exc.text else exc.code)
        self._send(exc.status, (exc.text + "\n").encode(), headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("X-ClickHouse-Server-Display-Name", self.server.display_name)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left: nothing to tell it


def _too_large(limit: int) -> QueryError:
    return QueryError.of(36, "BAD_ARGUMENTS", f"request body over {limit} bytes", 413)


class Listener(ThreadingHTTPServer):
    daemon_threads = True  # a client's idle keep-alive connection must not hold up exit

    def __init__(self, address: tuple[str, int], engine: Engine, password: str) -> None:
        self.engine = engine
        self.password = password
        self.display_name = socket.gethostname()
        super().__init__(address, Handler)


class Listener6(Listener):
    address_family = socket.AF_INET6
