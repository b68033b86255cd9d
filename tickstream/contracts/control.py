"""Control messages: what travels beside the data on every topic.

A control message is a JSON object with a ``control`` member, which no tick or row has.
Two kinds exist, both written by the publisher to the ticks topic:

- an *end-of-input marker* (``{"control": "eof", "run_id", "partition", "partitions"}``),
  written to every partition of the ticks topic when a replay ends; the processor passes
  it on to each of its output topics once every input partition has delivered it, so the
  sink can say "drained" exactly once;
- a *clock heartbeat* (``{"control": "heartbeat", "symbol": "XAU", "ts_ms": T}``): "the
  source's clock for this symbol is at T: its next tick will be stamped at about T or
  later". It travels on the symbol's partition, after the symbol's ticks, so that a quiet
  market's watermark still advances and its last ticks are confirmed without waiting for
  its next tick; being in the stream, it is replayed from Kafka like the ticks and every
  result stays deterministic (processors/kernels/ordering.py says what it does to a clock).

Decoding is strict: a control message of an unknown kind, with a missing, extra or
ill-typed member, is refused with ``ValueError`` (its reader treats it as any other bad
message: dead letter with the reason, counted), never taken for data or half applied.
Readers that act on one kind must test the type (``isinstance(control, EndOfInput)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

EOF_CONTROL = "eof"
HEARTBEAT_CONTROL = "heartbeat"
_HEARTBEAT_KEYS = frozenset({"control", "symbol", "ts_ms"})


@dataclass(frozen=True, slots=True)
class EndOfInput:
    """Run ``run_id`` has ended on ``partition`` of a topic with ``partitions`` partitions."""

    run_id: str
    partition: int
    partitions: int

    def encode(self) -> bytes:
        return encode_end_of_input(self.run_id, self.partition, self.partitions)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The source's clock for ``symbol`` is at ``ts_ms`` (epoch ms): its next tick is
    stamped at about that or later."""

    symbol: str
    ts_ms: int

    def encode(self) -> bytes:
        return encode_heartbeat(self.symbol, self.ts_ms)


ControlMessage = EndOfInput | Heartbeat


def encode_end_of_input(run_id: str, partition: int, partitions: int) -> bytes:
    return orjson.dumps(
        {"control": EOF_CONTROL, "run_id": run_id, "partition": partition, "partitions": partitions}
    )


def encode_heartbeat(symbol: str, ts_ms: int) -> bytes:
    return orjson.dumps({"control": HEARTBEAT_CONTROL, "symbol": symbol, "ts_ms": ts_ms})


def decode_control(doc: Any) -> ControlMessage | None:
    """The control message a decoded JSON document is, or None when it is no control message.

    Raises ValueError for a control message that is malformed or of an unknown kind, so
    a bad marker or heartbeat is reported rather than taken for data.
    """
    if not isinstance(doc, dict) or "control" not in doc:
        return None
    kind = doc["control"]
    if kind == HEARTBEAT_CONTROL:
        return _heartbeat(doc)
    if kind != EOF_CONTROL:
        raise ValueError(f"unknown control message {str(kind)[:40]!r}")
    run_id, partition, partitions = doc.get("run_id"), doc.get("partition"), doc.get("partitions")
    if not isinstance(run_id, str) or not run_id or len(run_id) > 128:
        raise ValueError("end-of-input marker without a run_id")
    if type(partition) is not int or type(partitions) is not int or not 0 <= partition < partitions:
        raise ValueError("end-of-input marker with a bad partition/partitions")
    return EndOfInput(run_id, partition, partitions)


def _heartbeat(doc: dict[str, Any]) -> Heartbeat:
    """A heartbeat by the tick contract's rules for its two values (symbol, ts_ms)."""
    from tickstream.contracts.ticks import SYMBOL_RULE, TS_MS_MAX, valid_symbol  # no cycle

    unknown = doc.keys() - _HEARTBEAT_KEYS
    if unknown:
        names = sorted(str(k)[:40] for k in unknown)[:5]
        raise ValueError(f"heartbeat with unknown field(s) {names!r}")
    symbol, ts_ms = doc.get("symbol"), doc.get("ts_ms")
    if not valid_symbol(symbol):
        raise ValueError(f"heartbeat symbol must be {SYMBOL_RULE}")
    if type(ts_ms) is not int or not 0 <= ts_ms <= TS_MS_MAX:
        raise ValueError("heartbeat ts_ms must be an integer (epoch milliseconds) in 1970..2299")
    return Heartbeat(symbol, ts_ms)


def is_end_of_input(doc: Any) -> bool:
    """Whether a decoded document is an end-of-input marker (tools and tests)."""
    return isinstance(doc, dict) and doc.get("control") == EOF_CONTROL


def is_heartbeat(doc: Any) -> bool:
    """Whether a decoded document claims to be a heartbeat (tools and tests)."""
    return isinstance(doc, dict) and doc.get("control") == HEARTBEAT_CONTROL
