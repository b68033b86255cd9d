"""The dead-letter record: an input refused by the publisher or the processor, with why.

It lands in the ``rejected_ticks`` table, so every input is in ``ticks`` or there.
``raw`` is a bounded excerpt (see ``ticks.excerpt``): a multi-megabyte line never
becomes a record larger than the broker accepts; ``detail`` says the original size.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

DEAD_LETTER_COLUMNS: dict[str, str] = {
    "recv_ms": "received_at",
    "source": "source",
    "position": "position",
    "raw": "raw",
    "reason": "reason",
    "detail": "detail",
    "symbol": "symbol",
}
"""The column of each field in ``rejected_ticks`` (insert order)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    raw: str
    source: str
    position: str
    reason: str
    detail: str
    recv_ms: int
    symbol: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps(self)

    def describe(self) -> str:
        return f"{self.source} {self.position}: {self.reason}: {self.detail}"
