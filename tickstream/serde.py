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


def encode_ticks(ticks: list[Tick]) -> bytes:
    """A batch of ticks as one message value (a JSON array of rows)."""
    return orjson.dumps(
        [
            (t.symbol, t.ts_ms, t.price, t.bid, t.ask, t.size, t.venue, t.seq, t.recv_ms)
            for t in ticks
        ]
    )


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
