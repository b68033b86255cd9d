"""Messages to table rows, apart from Kafka and ClickHouse.

Each topic's messages map to one or more tables; ``TABLES`` fixes each table's
insert columns and the column whose month names its partition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tickstream import serde
from tickstream.topics import Topics


@dataclass(frozen=True, slots=True)
class TableSpec:
    columns: tuple[str, ...]
    partition_ts: str | None  # column whose toYYYYMM is the partition, or None


_TICK_COLUMNS = ("symbol", "ts", "price", "bid", "ask", "size", "venue", "seq", "recv_ts")

TABLES: dict[str, TableSpec] = {
    "ticks": TableSpec(_TICK_COLUMNS, "ts"),
    "late_ticks": TableSpec(_TICK_COLUMNS, "ts"),
    "bars_1m": TableSpec(("symbol", "ts", "open", "high", "low", "close", "ticks"), "ts"),
    "rolling_highs": TableSpec(
        ("symbol", "window", "ts", "high", "high_ts", "low", "low_ts"), "ts"
    ),
    "record_breaks": TableSpec(
        ("symbol", "kind", "ts", "price", "level", "step", "prev_ts", "since_prev_s", "first_time"),
        "ts",
    ),
    "divergence_windows": TableSpec(
        (
            "pair",
            "metric",
            "direction",
            "opened_at",
            "closed_at",
            "open_value",
            "peak_value",
            "peak_at",
            "close_value",
            "version",
        ),
        "opened_at",
    ),
    "rejected_ticks": TableSpec(
        ("received_at", "source", "position", "raw", "reason", "detail", "symbol"), None
    ),
}

# row kind on the aggregates/signals topics -> table
KIND_TABLE = {
    "bar_1m": "bars_1m",
    "rolling_high": "rolling_highs",
    "record_break": "record_breaks",
    "divergence_window": "divergence_windows",
}


class Eof:
    """An end-of-input marker seen on one partition."""

    __slots__ = ("run_id", "partitions")

    def __init__(self, run_id: str, partitions: int) -> None:
        self.run_id = run_id
        self.partitions = partitions


def rows_of(topics: Topics, topic: str, value: bytes) -> Iterator[tuple[str, list[Any]] | Eof]:
    """Yield (table, row) pairs, or an Eof, for one message. Raises ValueError on garbage."""
    doc = serde.decode(value)
    if serde.is_eof(doc):
        yield Eof(doc["run_id"], int(doc["partitions"]))
        return
    if topic in (topics.ticks, topics.late):
        table = "ticks" if topic == topics.ticks else "late_ticks"
        if not isinstance(doc, list):
            raise ValueError("expected a batch of ticks")
        for symbol, ts_ms, price, bid, ask, size, venue, seq, recv_ms in doc:
            yield table, [symbol, ts_ms, price, bid, ask, size, venue, seq, recv_ms]
        return
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    if topic == topics.dlq:
        yield (
            "rejected_ticks",
            [
                doc["recv_ms"],
                doc["source"],
                doc["position"],
                doc["raw"],
                doc["reason"],
                doc.get("detail", ""),
                doc.get("symbol"),
            ],
        )
        return
    kind = doc.get("kind")
    table = KIND_TABLE.get(kind)  # type: ignore[arg-type]
    if table is None:
        raise ValueError(f"unknown row kind {kind!r}")
    yield table, _row_for(table, doc)


def _row_for(table: str, doc: dict[str, Any]) -> list[Any]:
    if table == "bars_1m":
        return [
            doc["symbol"],
            doc["ts_ms"],
            doc["open"],
            doc["high"],
            doc["low"],
            doc["close"],
            doc["ticks"],
        ]
    if table == "rolling_highs":
        return [
            doc["symbol"],
            doc["window"],
            doc["ts_ms"],
            doc["high"],
            doc["high_ts_ms"],
            doc["low"],
            doc["low_ts_ms"],
        ]
    if table == "record_breaks":
        return [
            doc["symbol"],
            doc["record"],
            doc["ts_ms"],
            doc["price"],
            doc["level"],
            doc.get("step") or 0.0,
            doc.get("prev_ts_ms"),
            doc.get("since_prev_s"),
            int(doc.get("first_time", 0)),
        ]
    # divergence_windows: the closed version of a window outranks its open version
    closed = doc.get("closed_at_ms")
    return [
        doc["pair"],
        doc["metric"],
        doc["direction"],
        doc["opened_at_ms"],
        closed,
        doc["open_value"],
        doc["peak_value"],
        doc["peak_at_ms"],
        doc.get("close_value"),
        closed if closed is not None else doc["peak_at_ms"],
    ]
