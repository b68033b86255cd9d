"""The wire format: orjson on every topic.

On the ticks topic one Kafka message carries a *batch* of ticks of one symbol:
a JSON array of rows, each row the Tick's fields in declaration order
``[symbol, ts_ms, price, bid, ask, size, venue, seq, recv_ms]``. Batching is
what lets a Faust agent keep up with a market (per-message overhead is paid once
per batch, not once per tick). A JSON *object* on any topic is a control
message (``{"control": "eof", ...}``) or, on the other topics, a row.
"""

from __future__ import annotations

from typing import Any

import orjson

from tickstream.model import Tick

EOF_CONTROL = "eof"
TICK_FIELDS = Tick.__slots__


def tick_row(tick: Tick) -> bytes:
    """One tick's row, to be joined into a batch by ``join_rows``."""
    return orjson.dumps(
        [
            tick.symbol,
            tick.ts_ms,
            tick.price,
            tick.bid,
            tick.ask,
            tick.size,
            tick.venue,
            tick.seq,
            tick.recv_ms,
        ]
    )


def join_rows(rows: list[bytes]) -> bytes:
    return b"[" + b",".join(rows) + b"]"


def encode_ticks(ticks: list[Tick]) -> bytes:
    return join_rows([tick_row(t) for t in ticks])


def decode(value: bytes) -> Any:
    """A batch of ticks (list) or an object (control message or row)."""
    return orjson.loads(value)


def ticks_from_batch(batch: list[list[Any]]) -> list[Tick]:
    return [Tick(*row) for row in batch]


def encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def eof_message(run_id: str, partition: int, partitions: int) -> bytes:
    return orjson.dumps(
        {"control": EOF_CONTROL, "run_id": run_id, "partition": partition, "partitions": partitions}
    )


def is_eof(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("control") == EOF_CONTROL
