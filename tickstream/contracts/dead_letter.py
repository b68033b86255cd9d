"""The dead-letter record: an input refused by the publisher or the processor, with why.

It lands in the ``rejected_ticks`` table, so every input is in ``ticks`` or there.
``raw`` is a bounded excerpt (see ``ticks.excerpt``): a multi-megabyte line never
becomes a record larger than the broker accepts; ``detail`` says the original size.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

RAW_MAX_CHARS = 4_096  # the excerpt of an input a dead letter keeps

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

    def __post_init__(self) -> None:
        """Bound every text field, so no input can make a record the broker refuses."""
        size = len(self.raw)
        if size > RAW_MAX_CHARS:
            object.__setattr__(self, "raw", self.raw[:RAW_MAX_CHARS] + "…")
            object.__setattr__(self, "detail", f"{self.detail} (input of {size} characters)")
        for name, limit in (("detail", 2_000), ("position", 200), ("source", 200)):
            value = getattr(self, name)
            if len(value) > limit:
                object.__setattr__(self, name, value[:limit] + "…")
        if self.symbol is not None and len(self.symbol) > 64:
            object.__setattr__(self, "symbol", self.symbol[:64] + "…")

    def encode(self) -> bytes:
        return orjson.dumps(self)

    def describe(self) -> str:
        return f"{self.source} {self.position}: {self.reason}: {self.detail}"
