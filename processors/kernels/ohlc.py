"""OHLC bars per symbol over fixed event-time intervals.

Input is each symbol's ticks in time order (see ordering.py), so a bar is final
as soon as a tick of a later interval arrives, or when the watermark passes the
bar's end. On flush the open bars are emitted but kept: should ticks of the same
interval still arrive (a later replay), the bar is emitted again with more
ticks, and the sink keeps the version with the highest ``ticks``.

Bars are one minute long: the ``Bar`` contract, the ``bars_1m`` table and the desk
feed know no other length (longer bars are the ``ohlc_1h``/``ohlc_1d`` views).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tickstream.contracts import Bar
from tickstream.model import MINUTE_MS, Tick


@dataclass(frozen=True, slots=True)
class OhlcConfig:
    interval_ms: int = MINUTE_MS

    def __post_init__(self) -> None:
        if self.interval_ms != MINUTE_MS:
            raise ValueError("bars are one minute long (the Bar contract and bars_1m table)")


class OhlcKernel:
    """One-minute bars per symbol (``Bar`` rows)."""

    def __init__(self, config: OhlcConfig | None = None) -> None:
        self.config = config or OhlcConfig()
        # symbol -> [start_ms, open, high, low, close, ticks]
        self._open: dict[str, list[Any]] = {}

    def update(self, ticks: Sequence[Tick], watermarks: Mapping[str, int]) -> list[Bar]:
        rows: list[Bar] = []
        interval = self.config.interval_ms
        bars = self._open
        for tick in ticks:
            price = tick.price
            start = tick.ts_ms - tick.ts_ms % interval
            bar = bars.get(tick.symbol)
            if bar is None or bar[0] != start:
                if bar is not None:
                    rows.append(self._row(tick.symbol, bar))
                bars[tick.symbol] = [start, price, price, price, price, 1]
                continue
            if price > bar[2]:
                bar[2] = price
            elif price < bar[3]:
                bar[3] = price
            bar[4] = price
            bar[5] += 1
        for symbol, watermark in watermarks.items():
            bar = bars.get(symbol)
            if bar is not None and watermark >= bar[0] + interval:
                rows.append(self._row(symbol, bar))
                del bars[symbol]
        return rows

    def flush(self) -> list[Bar]:
        return [self._row(symbol, bar) for symbol, bar in self._open.items()]

    @staticmethod
    def _row(symbol: str, bar: list[Any]) -> Bar:
        start, open_, high, low, close, count = bar
        return Bar(symbol, start, open_, high, low, close, count)

    def snapshot(self) -> dict[str, Any]:
        return {"open": {symbol: list(bar) for symbol, bar in self._open.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self._open = {symbol: list(bar) for symbol, bar in state["open"].items()}
