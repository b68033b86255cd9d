"""Runs requests on the process's chDB engine, out of ingest's way.

Every request gets a chDB connection of its own: chDB runs the queries of different
connections in parallel and releases the GIL while it works, so a slow analyst query
neither waits for the sink's inserts nor holds them up (measured: inserts kept landing in
12-44 ms during a 7 s scan). At most ``MAX_CONCURRENT`` requests run at once: they share the
sink's cores and memory. A connection starts afresh, so SET and temporary tables never
outlive their request (there are no sessions).

Statements are judged on the engine's own print of them (``formatQuerySingleLine``), never
on the text as sent: that parse also refuses several statements in one request, as a
ClickHouse server does (chDB would run them all). The read-only policy is readonly.py's.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tickstream.chdb_http.messages import IDENTIFIER, QueryError, Reply, Request
from tickstream.chdb_http.readonly import check_read_only, refuse_outfile, settings_to_apply

MAX_CONCURRENT = 4

# on the engine's canonical one-line print of the statement (formatQuerySingleLine)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)(?:\s+SETTINGS\b.*)?$", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\b", re.IGNORECASE)
# the end of an INSERT statement whose data follows it (checked on the text as sent: the
# engine's print of ``INSERT ... VALUES (1)`` leaves the inline row out)
_DATA_FOLLOWS = re.compile(r"\b(?:FORMAT\s+\w+|VALUES)\s*$", re.IGNORECASE)
_RESULT_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK")


class Engine:
    """Runs requests on the process's chDB engine, each on a connection of its own."""

    def __init__(self, chdb_path: str | Path, writable: bool) -> None:
        # chDB compares engine paths literally; clickhouse-connect opens the realpath
        self.path = os.path.realpath(chdb_path)
        self.writable = writable
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        with self._connection() as conn:
            version, tz = conn.query("SELECT version(), timezone()", "TSV").bytes().split(b"\t")
        self.version = version.decode()
        self.timezone = tz.decode().strip()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        import chdb

        conn = chdb.connect(self.path)
        try:
            yield conn
        finally:
            conn.close()

    def execute(self, request: Request) -> Reply:
        with self._slots, self._connection() as conn:
            statement, data, canonical = self._split(conn, request)
            refuse_outfile(canonical)
            if not self.writable:
                check_read_only(canonical)
            if data is None:
                self._check_native_revision(canonical, request)
            if request.database:
                self._run(conn, f"USE `{_backquoted(request.database)}`")
            self._apply_settings(conn, request)
            started = time.perf_counter()
            if data is not None:
                return self._insert(conn, canonical, data, started)
            try:
                result = conn.query(statement, request.default_format, params=request.params)
            except Exception as exc:
                raise QueryError.from_engine(exc) from None
            body = bytes(result.bytes() or b"")
            fmt = _result_format(canonical, request.default_format, bool(body))
            return Reply(body, fmt, _summary(result, started))

    def _split(self, conn: Any, request: Request) -> tuple[str, bytes | None, str]:
        """The statement, the data of an INSERT (or None), and the engine's print of it.

        As on a ClickHouse server, the ``query`` parameter and the body are one text: an
        INSERT's data follows its statement, on the first line of the body when the
        statement is not in the parameter (clickhouse-connect's way).
        """
        body = request.body
        if request.query_param is not None and body:
            if _DATA_FOLLOWS.search(request.query_param):
                canonical = self._canonical(conn, request.query_param)
                if _insert_format(canonical):
                    return request.query_param, body, canonical
            text = request.query_param + "\n" + _text(body)
        elif body:
            head, newline, rest = body.partition(b"\n")
            if newline and _INSERT.match(_text(head)) and _DATA_FOLLOWS.search(_text(head)):
                try:
                    canonical = self._canonical(conn, _text(head))
                except QueryError:
                    canonical = ""  # not a whole statement: the whole body is
                if _insert_format(canonical):
                    return _text(head), rest, canonical
            text = _text(body)
        else:
            text = request.query_param or ""
        if not text.strip():
            raise QueryError.of(62, "SYNTAX_ERROR", "Empty query", 400)
        return text, None, self._canonical(conn, text)

    def _canonical(self, conn: Any, text: str) -> str:
        """The statement as ClickHouse's parser prints it; refuses several in one text."""
        escaped = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        escaped = escaped.replace("\r", "\\r")  # a query parameter is TSV-escaped
        try:
            result = conn.query(
                "SELECT formatQuerySingleLine({q:String})", "TSVRaw", params={"q": escaped}
            )
        except Exception as exc:
            raise QueryError.from_engine(exc) from None
        return bytes(result.bytes()).decode().strip()

    def _check_native_revision(self, canonical: str, request: Request) -> None:
        """A client that names its protocol revision decodes Native at that revision (block
        info, per-column serialization flags); chDB writes only revision 0 and takes no
        setting for it, so such a client would misread every block: better an error.
        clickhouse-connect's probe falls back to revision 0 on it; clickhouse-go (Grafana's
        datasource in HTTP mode, recent versions) fails at its first query, saying why."""
        match = _TRAILING_FORMAT.search(canonical)
        fmt = match[1] if match else request.default_format
        if fmt.lower() == "native" and request.client_protocol_version not in ("", "0"):
            raise QueryError.of(
                48,
                "NOT_IMPLEMENTED",
                f"Native for client_protocol_version={request.client_protocol_version}: "
                "the embedded engine writes Native for protocol 0 only (omit the parameter, "
                "or use RowBinaryWithNamesAndTypes, JSON...)",
                400,
            )

    def _apply_settings(self, conn: Any, request: Request) -> None:
        """The request's settings, then (read-only) the lock; see readonly.py."""
        for name, value in settings_to_apply(request, self.writable):
            self._set(conn, name, value)

    def _set(self, conn: Any, name: str, value: str) -> None:
        if not IDENTIFIER.match(name):
            raise QueryError.of(115, "UNKNOWN_SETTING", f"Unknown setting {name!r}")
        literal = value.replace("\\", "\\\\").replace("'", "\\'")
        self._run(conn, f"SET {name} = '{literal}'")

    def _run(self, conn: Any, sql: str) -> None:
        try:
            conn.query(sql, "TSV")
        except Exception as exc:
            raise QueryError.from_engine(exc) from None

    def _insert(self, conn: Any, canonical: str, data: bytes, started: float) -> Reply:
        fmt = _insert_format(canonical)
        assert fmt is not None
        statement = _TRAILING_FORMAT.sub("", canonical).rstrip()  # send_insert takes no FORMAT
        try:
            with conn.send_insert(statement, fmt) as inserter:
                if data:
                    inserter.append(data)
                result = inserter.finish()
        except Exception as exc:
            raise QueryError.from_engine(exc) from None
        summary = {
            "read_rows": "0",
            "read_bytes": "0",
            "written_rows": str(result.rows_written),
            "written_bytes": str(result.bytes_written),
            "total_rows_to_read": "0",
            "elapsed_ns": str(int((time.perf_counter() - started) * 1e9)),
        }
        return Reply(b"", None, summary)


def _text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise QueryError.of(
            36, "BAD_ARGUMENTS", "the query is not UTF-8 (binary data goes after an INSERT)"
        ) from None


def _backquoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace("`", "\\`")


def _insert_format(canonical: str) -> str | None:
    """The data format of an INSERT that takes data (``INSERT ... FORMAT x``), else None."""
    if not _INSERT.match(canonical):
        return None
    match = _TRAILING_FORMAT.search(canonical)
    return match[1] if match else None


def _result_format(canonical: str, default: str, has_body: bool) -> str | None:
    match = _TRAILING_FORMAT.search(canonical)
    fmt = match[1] if match else default
    first = canonical.lstrip("(").split(" ", 1)[0].upper()
    return fmt if has_body or first in _RESULT_STATEMENTS else None


def _summary(result: Any, started: float) -> dict[str, str]:
    rows, size = result.rows_read(), result.bytes_read()
    return {
        "read_rows": str(rows),
        "read_bytes": str(size),
        "written_rows": str(getattr(result, "rows_written", lambda: 0)()),
        "written_bytes": str(getattr(result, "bytes_written", lambda: 0)()),
        "total_rows_to_read": str(rows),
        "result_bytes": str(len(result.bytes() or b"")),
        "elapsed_ns": str(int((time.perf_counter() - started) * 1e9)),
    }
