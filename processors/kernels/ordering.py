"""Event-time ordering with an allowed lateness, per symbol.

Every kernel downstream sees each symbol's ticks in (ts_ms, arrival) order, so
its result does not depend on how ticks were batched or partitioned. The price
is latency: a tick is released only once a tick at least ``allowed_lateness_ms``
newer has been seen for its symbol (or on flush).

Rules, per symbol, with ``max_ts`` the newest ts_ms seen so far:
- a tick is *late* iff ``ts_ms < max_ts - allowed_lateness_ms`` or ``ts_ms <= floor``,
  where ``floor`` is the newest ts_ms released by a flush (a flushed instant is final: a
  second copy of its last tick, as in a second replay of a file, must not count twice);
  late ticks are returned apart;
- other ticks are held and released once ``ts_ms < max_ts - allowed_lateness_ms``.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tickstream.model import Tick

END_OF_TIME_MS = 2**62


class Released(list[Tick]):
    """Released ticks, symbol after symbol, with the per-symbol split kept for the kernels.

    Every kernel loops per symbol; ``by_symbol`` spares each of them splitting the batch
    again (see ``rolling.group_by_symbol``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_symbol: dict[str, list[Tick]] = {}

    def add(self, symbol: str, ticks: list[Tick]) -> None:
        self.by_symbol[symbol] = ticks
        self.extend(ticks)


@dataclass(slots=True)
class _SymbolClock:
    max_ts_ms: int
    floor_ms: int = -END_OF_TIME_MS
    held: list[tuple[int, int, Tick]] = field(default_factory=list)


class Reorderer:
    """Holds ticks until their symbol's watermark passes them; sets late ones apart."""

    def __init__(self, allowed_lateness_ms: int) -> None:
        if allowed_lateness_ms < 0:
            raise ValueError("allowed_lateness_ms must be >= 0")
        self.allowed_lateness_ms = allowed_lateness_ms
        self._clocks: dict[str, _SymbolClock] = {}
        self._arrivals = 0

    def watermarks(self) -> dict[str, int]:
        lateness = self.allowed_lateness_ms
        return {s: max(c.max_ts_ms - lateness, c.floor_ms) for s, c in self._clocks.items()}

    def push(self, ticks: Iterable[Tick]) -> tuple[list[Tick], list[Tick]]:
        """Take ticks in arrival order; return (released in order, late)."""
        late: list[Tick] = []
        touched: dict[str, _SymbolClock] = {}
        clocks = self._clocks
        lateness = self.allowed_lateness_ms
        arrivals = self._arrivals
        for tick in ticks:
            ts = tick.ts_ms
            symbol = tick.symbol
            clock = clocks.get(symbol)
            if clock is None:
                clock = clocks[symbol] = _SymbolClock(ts)
            elif ts > clock.max_ts_ms:
                clock.max_ts_ms = ts
            elif ts < clock.max_ts_ms - lateness or ts <= clock.floor_ms:
                late.append(tick)
                continue
            arrivals += 1
            held = clock.held
            if not held or ts >= held[-1][0]:
                held.append((ts, arrivals, tick))  # in order: the common case, O(1)
            else:
                insort(held, (ts, arrivals, tick))  # (ts, arrival) is unique: ticks never compared
            touched[symbol] = clock
        self._arrivals = arrivals
        released = Released()
        for symbol, clock in touched.items():
            held = clock.held
            cut = bisect_left(held, (clock.max_ts_ms - lateness,))
            if cut:
                released.add(symbol, [entry[2] for entry in held[:cut]])
                del held[:cut]
        return released, late

    def flush(self) -> list[Tick]:
        """Release everything held (end of input); later ticks at or before these are late."""
        released = Released()
        for symbol, clock in self._clocks.items():
            if clock.held:
                released.add(symbol, [entry[2] for entry in clock.held])
            clock.held = []
            clock.floor_ms = max(clock.floor_ms, clock.max_ts_ms)
        return released

    def snapshot(self) -> dict[str, Any]:
        return {
            "arrivals": self._arrivals,
            "clocks": {
                symbol: {
                    "max_ts_ms": c.max_ts_ms,
                    "floor_ms": c.floor_ms,
                    "held": [[ts, n, _tick_state(t)] for ts, n, t in c.held],
                }
                for symbol, c in self._clocks.items()
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._arrivals = state["arrivals"]
        self._clocks = {}
        for symbol, c in state["clocks"].items():
            clock = _SymbolClock(c["max_ts_ms"], c["floor_ms"])
            clock.held = [(ts, n, Tick(*t)) for ts, n, t in c["held"]]
            self._clocks[symbol] = clock


def _tick_state(tick: Tick) -> list[Any]:
    return [getattr(tick, name) for name in Tick.__slots__]
