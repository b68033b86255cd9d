"""Messages to table rows, apart from Kafka and ClickHouse.

Every mapping here is derived from the contracts (tickstream.contracts): the tick's
columns, each output row's spec, the dead-letter record's columns. ``TABLES`` fixes
each table's insert columns and the column whose month names its partition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from tickstream.contracts import (
    DEAD_LETTER_COLUMNS,
    ROW_SPECS,
    TICK_COLUMNS,
    TICK_FIELDS,
    EndOfInput,
    decode_control,
    spec_for_kind,
)
from tickstream.topics import Topics


@dataclass(frozen=True, slots=True)
class TableSpec:
    columns: tuple[str, ...]
    partition_ts: str | None  # column whose toYYYYMM is the partition, or None


_TICK_COLUMNS = tuple(TICK_COLUMNS[f] for f in TICK_FIELDS)

TABLES: dict[str, TableSpec] = {
    "ticks": TableSpec(_TICK_COLUMNS, "ts"),
    "late_ticks": TableSpec(_TICK_COLUMNS, "ts"),
    **{spec.table: TableSpec(spec.columns, spec.column(spec.partition_ts)) for spec in ROW_SPECS},
    "rejected_ticks": TableSpec(tuple(DEAD_LETTER_COLUMNS.values()), None),
}

_DEAD_LETTER_FIELDS = tuple(DEAD_LETTER_COLUMNS)
_OPTIONAL_DEAD_LETTER = {"detail": "", "symbol": None}


class Eof:
    """An end-of-input marker seen on one partition."""

    __slots__ = ("run_id", "partitions")

    def __init__(self, run_id: str, partitions: int) -> None:
        self.run_id = run_id
        self.partitions = partitions


def rows_of(topics: Topics, topic: str, value: bytes) -> Iterator[tuple[str, list[Any]] | Eof]:
    """Yield (table, row) pairs, or an Eof, for one message. Raises ValueError on garbage."""
    doc = orjson.loads(value)
    marker = decode_control(doc)
    if isinstance(marker, EndOfInput):
        yield Eof(marker.run_id, marker.partitions)
        return
    if marker is not None:  # a clock heartbeat (ticks topic): for the processor only
        return
    if topic in (topics.ticks, topics.late):
        table = "ticks" if topic == topics.ticks else "late_ticks"
        if not isinstance(doc, list):
            raise ValueError("expected a batch of ticks")
        for row in doc:
            if len(row) != 9:
                raise ValueError(f"a tick row has {len(TICK_FIELDS)} values")
            yield table, list(row)
        return
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    if topic == topics.dlq:
        yield (
            "rejected_ticks",
            [
                doc[f] if f not in _OPTIONAL_DEAD_LETTER else doc.get(f, _OPTIONAL_DEAD_LETTER[f])
                for f in _DEAD_LETTER_FIELDS
            ],
        )
        return
    spec = spec_for_kind(doc.get("kind"))
    yield spec.table, spec.values(doc)
