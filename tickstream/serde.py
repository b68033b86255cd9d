"""The wire format: orjson objects on every topic.

A tick is a flat JSON object; a control message carries a ``control`` key
instead of a ``symbol`` and marks, for example, the end of a replay on one
partition so downstream stages know when everything has been seen.
"""

from __future__ import annotations

from typing import Any

import orjson

from tickstream.model import Tick

EOF_CONTROL = "eof"

_OPTIONAL = ("bid", "ask", "size", "venue", "seq", "recv_ms")


def encode_tick(tick: Tick) -> bytes:
    doc: dict[str, Any] = {"symbol": tick.symbol, "ts_ms": tick.ts_ms, "price": tick.price}
    for name in _OPTIONAL:
        value = getattr(tick, name)
        if value is not None:
            doc[name] = value
    return orjson.dumps(doc)


def tick_from_doc(doc: dict[str, Any]) -> Tick:
    """Build a Tick from a decoded wire object that the producer already validated."""
    return Tick(
        doc["symbol"],
        doc["ts_ms"],
        doc["price"],
        doc.get("bid"),
        doc.get("ask"),
        doc.get("size"),
        doc.get("venue"),
        doc.get("seq"),
        doc.get("recv_ms"),
    )


def decode(value: bytes) -> dict[str, Any]:
    doc = orjson.loads(value)
    if not isinstance(doc, dict):
        raise ValueError("message is not a JSON object")
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def eof_message(run_id: str, partition: int, partitions: int) -> bytes:
    return orjson.dumps(
        {"control": EOF_CONTROL, "run_id": run_id, "partition": partition, "partitions": partitions}
    )


def is_control(doc: dict[str, Any]) -> bool:
    return "control" in doc
