"""The server's life: start-up checks named by their setting, a thread, a clean stop.

The interface is a convenience beside the pipeline, so what can be found wrong (no chDB
URL, no password, a taken port) is found before a long start-up and reported by the
setting to change; a default port that turns out taken costs a warning, not the run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import suppress
from pathlib import Path

from tickstream.chdb_http.endpoint import ENDPOINT_FILE, chdb_directory, write_endpoint
from tickstream.chdb_http.engine import Engine
from tickstream.chdb_http.handler import Listener, Listener6
from tickstream.settings import ConfigError, Settings, flag

log = logging.getLogger(__package__)  # the interface's one logger, whichever module logs

RUN_PORT = 8124  # `tickstream run`'s default: beside a real ClickHouse's 8123, not on it


class ChdbHttpServer:
    """ClickHouse's HTTP interface over this process's chDB engine, on a thread of its own.

    ``start`` binds (an ``OSError`` when the port is taken, for the caller to name its
    setting), serves, and writes the endpoint file into the chDB directory so that
    `tickstream query` can find the server; ``close`` undoes both.
    """

    def __init__(
        self,
        chdb_path: str | Path,
        password: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        writable: bool = False,
    ) -> None:
        if not password:
            raise ValueError("the HTTP interface never runs without a password")
        self.chdb_path = Path(os.path.realpath(chdb_path))
        self.password = password
        self.host = host
        self.requested_port = port
        self.writable = writable
        self._server: Listener | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Where a client on this machine reaches it (no credentials)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> int:
        engine = Engine(self.chdb_path, self.writable)
        kind = Listener6 if ":" in self.host else Listener
        self._server = kind((self.host, self.requested_port), engine, self.password)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="clickhouse-http", daemon=True
        )
        self._thread.start()
        write_endpoint(self.chdb_path, url=self.url, password=self.password, writable=self.writable)
        log.info(
            "ClickHouse HTTP interface (%s) of %s on %s",
            "read-write" if self.writable else "read-only",
            self.chdb_path,
            self.url,
        )
        return self.port

    def close(self) -> None:
        if self._server is None:
            return
        with suppress(OSError):
            (self.chdb_path / ENDPOINT_FILE).unlink()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None


def check_settings(settings: Settings, password: str, *, required: bool) -> None:
    """What can be found wrong before a long start-up, named by its setting.

    ``required``: the port was given, so a taken one is an error; otherwise (`tickstream
    run`'s default port) ``serve`` only warns.
    """
    port = settings.clickhouse_http_port
    if not port:
        return
    if not settings.is_chdb:
        raise ConfigError(
            "clickhouse_http_port",
            "serves an embedded chDB directory only; with an http(s):// --clickhouse-url, "
            "query that server itself (or give 0)",
        )
    if not password:
        raise ConfigError(
            "clickhouse_http_password",
            f"{flag('clickhouse_http_port')} {port} needs a password: the ClickHouse HTTP "
            "interface never runs without one",
        )
    if required:
        family = socket.AF_INET6 if ":" in settings.clickhouse_http_host else socket.AF_INET
        try:  # bound and released at once: fails while something else listens there
            socket.create_server((settings.clickhouse_http_host, port), family=family).close()
        except OSError as exc:
            raise _busy(settings, exc) from None


def serve(settings: Settings, password: str, *, required: bool) -> ChdbHttpServer | None:
    """Start the interface ``settings`` ask for over the chDB directory this process holds.

    None when the port is 0, or when a default port is taken (a warning: the pipeline
    matters more than its query port).
    """
    check_settings(settings, password, required=False)
    if not settings.clickhouse_http_port:
        return None
    server = ChdbHttpServer(
        chdb_directory(settings.clickhouse_url),
        password,
        host=settings.clickhouse_http_host,
        port=settings.clickhouse_http_port,
        writable=settings.clickhouse_http_writable,
    )
    try:
        server.start()
    except OSError as exc:
        error = _busy(settings, exc)
        if required:
            raise error from None
        log.warning("no ClickHouse HTTP interface: %s", error)
        return None
    return server


def _busy(settings: Settings, exc: OSError) -> ConfigError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    where = f"{settings.clickhouse_http_host}:{settings.clickhouse_http_port}"
    return ConfigError(
        "clickhouse_http_port",
        f"cannot listen on {where} ({reason}); pick another port, or 0 for none",
    )
