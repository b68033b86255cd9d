"""ClickHouse's HTTP interface, served by the process that owns an embedded chDB directory.

chDB locks its directory: while `tickstream run` (or `tickstream sink`) holds it, nothing
else can open it, not `tickstream query`, not Grafana, not an analyst's client. So the
owner serves the engine it already has, over the protocol those clients already speak
(clickhouse-connect, curl, clickhouse-go in HTTP mode as far as chDB allows: see
``Engine._check_native_revision``): the live tables of the real engine, not a copy that
lags behind. It must stay out of ingest's way and never become a way around the
analysts' role, hence one module per concern:

* ``server``: start-up checks named by their setting, the serving thread, the stop;
* ``endpoint``: the file in the chDB directory through which `tickstream query` finds it;
* ``handler``: the HTTP side (ClickHouse's URL parameters and headers; not served:
  sessions, ClickHouse's own body compression, multipart, progress headers);
* ``auth``: one user, ``default``, and a password, without which nothing starts;
* ``engine``: each request on a chDB connection of its own, at most ``MAX_CONCURRENT``;
* ``readonly``: the analyst profile (``readonly=1`` and the rest), and what chDB allows
  at ``readonly=1`` that a server would not;
* ``content``: request Content-Encoding, result Content-Type;
* ``messages``: ``Request``, ``Reply`` and ``QueryError`` (ClickHouse's codes).

No TLS: it binds 127.0.0.1 by default.
"""

from tickstream.chdb_http.auth import USER
from tickstream.chdb_http.endpoint import ENDPOINT_FILE, chdb_directory, running_endpoint
from tickstream.chdb_http.engine import MAX_CONCURRENT, Engine
from tickstream.chdb_http.handler import MAX_BODY_BYTES
from tickstream.chdb_http.messages import QueryError, Reply, Request
from tickstream.chdb_http.readonly import MAX_EXECUTION_TIME_S, READ_ONLY_PROFILE
from tickstream.chdb_http.server import RUN_PORT, ChdbHttpServer, check_settings, serve

__all__ = [
    "ENDPOINT_FILE",
    "MAX_BODY_BYTES",
    "MAX_CONCURRENT",
    "MAX_EXECUTION_TIME_S",
    "READ_ONLY_PROFILE",
    "RUN_PORT",
    "USER",
    "ChdbHttpServer",
    "Engine",
    "QueryError",
    "Reply",
    "Request",
    "check_settings",
    "chdb_directory",
    "running_endpoint",
    "serve",
]
