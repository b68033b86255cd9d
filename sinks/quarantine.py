"""Rows ClickHouse refuses for their data: told apart from outages, and kept, not dropped.

Conservative: an insert error is about the data only when that is certain, and only then
are rows quarantined; anything else (connection refused/reset, timeouts, TOO_MANY_PARTS,
MEMORY_LIMIT_EXCEEDED, an unknown table, an error never seen before) is retried with
backoff, as a row held back is recoverable and a row wrongly quarantined is not in its
table. Certain means one of:
- a TypeError, ValueError (UnicodeError), ArithmeticError (OverflowError) or AttributeError
  raised inside clickhouse-connect, which converts a block to ClickHouse's types in Python
  before sending it (the same exception types raised elsewhere, e.g. by a bug of the sink,
  are retried), or clickhouse-connect's own DataError without a server code ("Unable to
  create native array for column ...", "Invalid None value in non-Nullable column");
- a server error whose code is in _DATA_ERRORS: ClickHouse could not parse, type or fit a
  value of the block. Schema-level refusals (NUMBER_OF_COLUMNS_DOESNT_MATCH, UNKNOWN_TABLE)
  and truncated input (UNEXPECTED_END_OF_FILE, CANNOT_READ_ALL_DATA: a body cut by the
  network looks the same) are not in it.
The class of a quarantined row (the metric's reason_class) is "conversion" for the first
kind, else "parse", "type" or "range" by the code; a time outside DateTime64(3)'s range,
which ClickHouse would store and then fail to read, is refused before the insert ("range").

Each refused row goes to ``<ns>.quarantine`` with its reason and the message it came in;
the sink commits past it only once the broker has acknowledged that record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import clickhouse_connect
import orjson
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.exceptions import ClickHouseError, DataError

from sinks.rows import TABLES
from tickstream import metrics

log = logging.getLogger(__name__)

Source = tuple[str, int, int, int]
"""Where a row came from: topic, partition, offset, and its index in that message."""

REASON_CLASSES = ("conversion", "parse", "type", "range")
_DATA_ERRORS: dict[int, tuple[str, str]] = {
    6: ("CANNOT_PARSE_TEXT", "parse"),
    25: ("CANNOT_PARSE_ESCAPE_SEQUENCE", "parse"),
    26: ("CANNOT_PARSE_QUOTED_STRING", "parse"),
    27: ("CANNOT_PARSE_INPUT_ASSERTION_FAILED", "parse"),
    38: ("CANNOT_PARSE_DATE", "parse"),
    41: ("CANNOT_PARSE_DATETIME", "parse"),
    72: ("CANNOT_PARSE_NUMBER", "parse"),
    117: ("INCORRECT_DATA", "parse"),
    130: ("CANNOT_READ_ARRAY_FROM_TEXT", "parse"),
    376: ("CANNOT_PARSE_UUID", "parse"),
    441: ("CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "parse"),
    467: ("CANNOT_PARSE_BOOL", "parse"),
    563: ("CANNOT_READ_MAP_FROM_TEXT", "parse"),
    632: ("UNEXPECTED_DATA_AFTER_PARSED_VALUE", "parse"),
    675: ("CANNOT_PARSE_IPV4", "parse"),
    676: ("CANNOT_PARSE_IPV6", "parse"),
    691: ("UNKNOWN_ELEMENT_OF_ENUM", "parse"),
    43: ("ILLEGAL_TYPE_OF_ARGUMENT", "type"),
    53: ("TYPE_MISMATCH", "type"),
    70: ("CANNOT_CONVERT_TYPE", "type"),
    349: ("CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN", "type"),
    69: ("ARGUMENT_OUT_OF_BOUND", "range"),
    128: ("TOO_LARGE_ARRAY_SIZE", "range"),
    131: ("TOO_LARGE_STRING_SIZE", "range"),
    321: ("VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", "range"),
    407: ("DECIMAL_OVERFLOW", "range"),
    469: ("VIOLATED_CONSTRAINT", "range"),
}
_DATA_ERROR_NAMES = {name: reason_class for name, reason_class in _DATA_ERRORS.values()}
_CODE_RE = re.compile(r"\bCode:\s*(\d+)")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
_CONVERSION_ERRORS = (TypeError, ValueError, ArithmeticError, AttributeError)
_CLIENT_DIR = os.path.dirname(clickhouse_connect.__file__)
REASON_MAX_CHARS = 2_000
# DateTime64(3)'s range, epoch milliseconds: 1900-01-01 .. 2299-12-31T23:59:59.999 UTC
DATETIME64_MIN_MS = -2_208_988_800_000
DATETIME64_MAX_MS = 10_413_791_999_999
_ROW_MAX_BYTES = 256 << 10  # a quarantine record stays far below the broker's message limit


def _raised_by_client(exc: BaseException) -> bool:
    """Whether ``exc`` passed through clickhouse-connect (its conversion of the block)."""
    return any(
        frame.f_code.co_filename.startswith(_CLIENT_DIR)
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def data_error_class(exc: BaseException) -> str | None:
    """The reason class when ``exc`` is certainly about the rows of the insert (they are to
    be quarantined), None when it may be about the server, the network or the sink itself
    (the insert is retried). See the rules above."""
    if isinstance(exc, ClickHouseError):
        code = getattr(exc, "code", None)
        if code is None and (match := _CODE_RE.search(str(exc))):
            code = int(match[1])
        if code is not None:  # the server's answer
            known = _DATA_ERRORS.get(code)
            return known[1] if known else None
        if isinstance(exc, DataError) and _raised_by_client(exc):
            return "conversion"  # refused by the client's conversion, before sending
        names = _NAME_RE.findall(str(exc))
        name = getattr(exc, "name", None) or (names[-1] if names else None)
        return _DATA_ERROR_NAMES.get(name) if name else None
    if isinstance(exc, OSError):  # connection refused/reset, timeouts
        return None
    if isinstance(exc, _CONVERSION_ERRORS) and _raised_by_client(exc):
        return "conversion"
    return None


def reason_of(exc: BaseException) -> str:
    """The error as a quarantine record's reason, bounded."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= REASON_MAX_CHARS else text[:REASON_MAX_CHARS] + "…"


@dataclass(frozen=True, slots=True)
class Refused:
    """A row ClickHouse would not take for a data reason: the row, why, and its message."""

    table: str
    row: Any  # column -> value, as the message carried it
    source: Source
    reason: str
    reason_class: str

    def record(self, sink_ms: int) -> bytes:
        """The quarantine record (JSON), bounded: an oversized row is kept as an excerpt."""
        topic, partition, offset, index = self.source
        doc: dict[str, Any] = {
            "table": self.table,
            "row": self.row,
            "reason": self.reason,
            "reason_class": self.reason_class,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "index": index,
            "sink_ms": sink_ms,
        }
        try:
            row = orjson.dumps(self.row)
        except TypeError:  # an integer beyond 64 bits: orjson refuses, repr does not
            row = repr(self.row).encode()
            doc["row"] = row.decode()
        if len(row) > _ROW_MAX_BYTES:
            doc["row"] = row[:_ROW_MAX_BYTES].decode("utf-8", "replace") + "…"
            doc["row_bytes"] = len(row)
        return orjson.dumps(doc)


# ---------------------------------------------------------------- times DateTime64 cannot hold


def time_columns(client: Any, db: str) -> dict[str, tuple[int, ...]]:
    """Per table, the indices (in ``TABLES``' insert order) of its DateTime64 columns, read
    from the database itself so that a table added by a later migration is covered."""
    result = client.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String} "
        "AND type LIKE '%DateTime64%'",
        parameters={"db": db},
    )
    found: dict[str, set[str]] = defaultdict(set)
    for table, name in result.result_rows:
        found[str(table)].add(str(name))
    return {
        table: tuple(i for i, column in enumerate(spec.columns) if column in found[table])
        for table, spec in TABLES.items()
    }


def time_problem(table: str, row: list[Any], columns: tuple[int, ...]) -> str | None:
    """Why a row's time (at ``columns``) is one DateTime64(3) cannot hold, or None.
    ClickHouse stores such a value without complaint (as Int64 ticks) and then no client
    can read the table, so it is refused before the insert (a time that is not a number
    is left to the client's conversion)."""
    for index in columns:
        value = row[index]
        if (
            type(value) in (int, float)
            and not DATETIME64_MIN_MS <= value <= DATETIME64_MAX_MS  # NaN too
        ):
            column = TABLES[table].columns[index]
            return (
                f"{column} = {str(value)[:40]} (epoch ms) is outside DateTime64(3)'s range "
                f"(1900-01-01 .. 2299-12-31 UTC)"
            )
    return None


# ---------------------------------------------------------------- the quarantine topic


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    refused: list[Refused],
    backoff_s: Callable[[int], float],
) -> None:
    """Publish each refused row to the quarantine topic and wait until the broker has
    acknowledged every record, retrying with backoff while it cannot: the batch's
    offsets are committed only after that, so a refused row is never just dropped. A
    crash in between publishes it again on restart (the topic is at least once)."""
    sink_ms = int(time.time() * 1000)
    records = [(r.table.encode(), r.record(sink_ms)) for r in refused]

    async def send(key: bytes, value: bytes) -> None:
        await (await producer.send(topic, value, key=key))

    waiting = list(range(len(records)))
    attempt = 0
    while waiting:
        results = await asyncio.gather(
            *(send(*records[i]) for i in waiting), return_exceptions=True
        )
        failed = [(i, r) for i, r in zip(waiting, results, strict=True) if r is not None]
        if failed:
            attempt += 1
            log.warning(
                "%d quarantine records not acknowledged (%s); retrying with backoff",
                len(failed),
                failed[0][1],
            )
            await asyncio.sleep(backoff_s(attempt))
        waiting = [i for i, _ in failed]
    for row in refused:
        metrics.SINK_QUARANTINED.labels(row.table, row.reason_class).inc()
    log.warning("%d refused rows are on %s, with their reasons", len(refused), topic)
