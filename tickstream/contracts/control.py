"""Control messages: what travels beside the data on every topic.

An end-of-input marker is written by the publisher to every partition of the ticks
topic when a replay ends; the processor passes it on to each of its output topics once
every input partition has delivered it, so the sink can say "drained" exactly once.
A control message is a JSON object with a ``control`` member, which no tick or row has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

EOF_CONTROL = "eof"


@dataclass(frozen=True, slots=True)
class EndOfInput:
    """Run ``run_id`` has ended on ``partition`` of a topic with ``partitions`` partitions."""

    run_id: str
    partition: int
    partitions: int

    def encode(self) -> bytes:
        return encode_end_of_input(self.run_id, self.partition, self.partitions)


def encode_end_of_input(run_id: str, partition: int, partitions: int) -> bytes:
    return orjson.dumps(
        {"control": EOF_CONTROL, "run_id": run_id, "partition": partition, "partitions": partitions}
    )


def decode_control(doc: Any) -> EndOfInput | None:
    """The marker a decoded JSON document is, or None when it is no control message.

    Raises ValueError for a control message that is malformed or of an unknown kind, so
    a bad marker is reported rather than taken for data.
    """
    if not isinstance(doc, dict) or "control" not in doc:
        return None
    if doc["control"] != EOF_CONTROL:
        raise ValueError(f"unknown control message {str(doc['control'])[:40]!r}")
    run_id, partition, partitions = doc.get("run_id"), doc.get("partition"), doc.get("partitions")
    if not isinstance(run_id, str) or not run_id or len(run_id) > 128:
        raise ValueError("end-of-input marker without a run_id")
    if type(partition) is not int or type(partitions) is not int or not 0 <= partition < partitions:
        raise ValueError("end-of-input marker with a bad partition/partitions")
    return EndOfInput(run_id, partition, partitions)


def is_end_of_input(doc: Any) -> bool:
    """Whether a decoded document is an end-of-input marker (tools and tests)."""
    return isinstance(doc, dict) and doc.get("control") == EOF_CONTROL
