"""The tick and the rows derived from it, as plain frozen records."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tick:
    """One accepted price observation, in event time (UTC epoch milliseconds)."""

    symbol: str
    ts_ms: int
    price: float
    bid: float | None = None
    ask: float | None = None
    size: float | None = None
    venue: str | None = None
    seq: int | None = None
    recv_ms: int | None = None

    def identity(self) -> tuple[object, ...]:
        """What makes two ticks the same tick (used to drop exact duplicates)."""
        return (self.symbol, self.ts_ms, self.price, self.size, self.seq)


TICK_IDENTITY = ("symbol", "ts_ms", "price", "size", "seq")
"""The fields of ``Tick.identity``: the ticks table's ORDER BY is built from them."""


MINUTE_MS = 60_000
