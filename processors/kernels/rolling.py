"""Rolling highs and lows per symbol over trailing event-time windows, stamped once a minute.

Definitions (per symbol; ticks arrive in non-decreasing ts_ms order, see ordering.py):

- At a tick with event time ``t``, window ``W`` covers every tick seen so far with
  ts_ms in ``(t - W, t]``; for equal timestamps that means the ticks arrived so far.
- ``high`` is the highest price in the window and ``high_ts_ms`` the ts_ms of the
  *latest* tick at that price (a tie moves the stamp forward: "last touched at").
  ``low`` / ``low_ts_ms`` likewise.
- Stamping: for every stamp period ``[m, m + stamp_ms)`` holding at least one tick of
  the symbol, one row per window, ``ts_ms = m``, with the values as of the *last* tick
  of that period (the window ends at that tick's ts_ms, not at the period end). A
  period without ticks has no row: the value did not change.
- A period's rows are emitted once its symbol moves past it: on the first tick of a
  later period, when the symbol's watermark reaches ``m + stamp_ms``, or on flush.
  After a flush the state is kept; should ticks of an already emitted period still
  arrive (a later replay), that period is emitted again, and the sink keeps the
  newest version of (symbol, window, ts_ms).

How: per symbol one "staircase" for highs, the ticks strictly higher than every
later tick (a monotonic stack), and one for lows. The high over any window that ends
at the newest tick is the first staircase entry inside the window (a binary search),
so all windows share the two stacks of the longest one. Entries older than the
longest window are cut off; memory is bounded by the staircases, never by the ticks.

The state also keeps each symbol's first tick stamp (``first_ts_ms``): the rolling
breaks (rolling_breaks.py) need to know how much history a window has. It does not
change these rows: a window's high is that of the ticks seen, however few.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from tickstream.contracts import RollingHigh
from tickstream.model import MINUTE_MS, Tick

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS

_ts = attrgetter("ts_ms")


def _default_windows() -> dict[str, int]:
    return {"1h": HOUR_MS, "1d": DAY_MS, "7d": WEEK_MS, "52w": 52 * WEEK_MS}


@dataclass(frozen=True, slots=True)
class RollingConfig:
    """Window labels to lengths (ms), and the stamp period of the emitted rows."""

    windows_ms: Mapping[str, int] = field(default_factory=_default_windows)
    stamp_ms: int = MINUTE_MS

    def __post_init__(self) -> None:
        if not self.windows_ms:
            raise ValueError("windows_ms must name at least one window")
        if any(w <= 0 for w in self.windows_ms.values()):
            raise ValueError("every window must be > 0 ms")
        if self.stamp_ms <= 0:
            raise ValueError("stamp_ms must be > 0")


COVERED_MS = -(2**62)
"""The ``first_ts_ms`` of a symbol whose history covers every window: that of a snapshot
from before the coverage rule (rolling_breaks.py), which already announced breaks."""


class _Symbol:
    __slots__ = ("hi", "lo", "period_end_ms", "pending", "first_ts_ms")

    def __init__(
        self,
        hi: list[Tick],
        lo: list[Tick],
        period_end_ms: int,
        pending: bool,
        first_ts_ms: int = COVERED_MS,
    ) -> None:
        self.hi = hi  # prices strictly decreasing, ts increasing
        self.lo = lo  # prices strictly increasing, ts increasing
        self.period_end_ms = period_end_ms
        self.pending = pending  # the current period has ticks not yet emitted
        self.first_ts_ms = first_ts_ms  # the first tick seen (the breaks' coverage)


class RollingKernel:
    """Rolling high/low rows of kind ``rolling_high``."""

    def __init__(self, config: RollingConfig | None = None) -> None:
        self.config = config or RollingConfig()
        self._windows = [(label, int(w)) for label, w in self.config.windows_ms.items()]
        self._longest_ms = max(w for _, w in self._windows)
        self._symbols: dict[str, _Symbol] = {}

    def update(self, ticks: Sequence[Tick], watermarks: Mapping[str, int]) -> list[RollingHigh]:
        rows: list[RollingHigh] = []
        for symbol, group in group_by_symbol(ticks).items():
            self._run(symbol, group, rows)
        for symbol, watermark in watermarks.items():
            state = self._symbols.get(symbol)
            if state is not None and state.pending and watermark >= state.period_end_ms:
                self._emit(symbol, state, rows)
        return rows

    def flush(self) -> list[RollingHigh]:
        rows: list[RollingHigh] = []
        for symbol, state in self._symbols.items():
            if state.pending:
                self._emit(symbol, state, rows)
        return rows

    def _run(self, symbol: str, ticks: list[Tick], rows: list[Any]) -> None:
        state, end = self._start(symbol, ticks[0].ts_ms)
        hi, lo = state.hi, state.lo
        hi_pop, hi_push, lo_pop, lo_push = hi.pop, hi.append, lo.pop, lo.append
        for tick in ticks:
            ts = tick.ts_ms
            if ts >= end:
                end = self._roll(symbol, state, ts, rows)
            price = tick.price
            while hi and hi[-1].price <= price:
                hi_pop()
            hi_push(tick)
            while lo and lo[-1].price >= price:
                lo_pop()
            lo_push(tick)

    def _start(self, symbol: str, first_ms: int) -> tuple[_Symbol, int]:
        """The symbol's state before a run of its ticks (the first stamped ``first_ms``),
        and the end of its current period. Shared with the rolling breaks, whose loop
        pushes ticks its own way: the periods are the same."""
        state = self._symbols.get(symbol)
        if state is None:
            stamp = self.config.stamp_ms
            end = first_ms - first_ms % stamp + stamp
            state = self._symbols[symbol] = _Symbol([], [], end, False, first_ms)
        if first_ms < state.period_end_ms:
            state.pending = True  # the first tick lands in the current period
        return state, state.period_end_ms

    def _roll(self, symbol: str, state: _Symbol, ts: int, rows: list[Any]) -> int:
        """A tick stamped past the current period: emit that period (if it has ticks) and
        start the tick's; returns its end."""
        if state.pending:
            self._emit(symbol, state, rows)
        stamp = self.config.stamp_ms
        state.pending = True  # the tick is pushed next
        end = state.period_end_ms = ts - ts % stamp + stamp
        return end

    def _emit(self, symbol: str, state: _Symbol, rows: list[RollingHigh]) -> None:
        """Rows of the current period, as of its last tick (the top of both staircases)."""
        hi, lo = state.hi, state.lo
        t = hi[-1].ts_ms
        stamp_ms = state.period_end_ms - self.config.stamp_ms
        for label, window in self._windows:
            cutoff = t - window
            h = hi[bisect_right(hi, cutoff, key=_ts)]
            low = lo[bisect_right(lo, cutoff, key=_ts)]
            rows.append(
                RollingHigh(symbol, label, stamp_ms, h.price, h.ts_ms, low.price, low.ts_ms)
            )
        state.pending = False
        cutoff = t - self._longest_ms
        for stack in (hi, lo):
            stale = bisect_right(stack, cutoff, key=_ts)
            # Cut in chunks so a long trending staircase is not copied every period.
            if stale and (stale >= 256 or 2 * stale >= len(stack)):
                del stack[:stale]

    def snapshot(self) -> dict[str, Any]:
        return {
            "symbols": {
                symbol: {
                    "hi": [[t.ts_ms, t.price] for t in s.hi],
                    "lo": [[t.ts_ms, t.price] for t in s.lo],
                    "period_end_ms": s.period_end_ms,
                    "pending": s.pending,
                    "first_ts_ms": s.first_ts_ms,
                }
                for symbol, s in self._symbols.items()
            }
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._symbols = {
            symbol: _Symbol(
                [Tick(symbol, ts, price) for ts, price in s["hi"]],
                [Tick(symbol, ts, price) for ts, price in s["lo"]],
                s["period_end_ms"],
                s["pending"],
                s.get("first_ts_ms", COVERED_MS),  # older snapshot: covered
            )
            for symbol, s in state["symbols"].items()
        }


def group_by_symbol(ticks: Sequence[Tick]) -> dict[str, list[Tick]]:
    """Split a batch per symbol, keeping each symbol's order: per-symbol loops stay tight."""
    split = getattr(ticks, "by_symbol", None)  # the ordering stage's Released: split already
    if split is not None:
        return split
    groups: dict[str, list[Tick]] = {}
    get = groups.get
    for tick in ticks:
        group = get(tick.symbol)
        if group is None:
            groups[tick.symbol] = [tick]
        else:
            group.append(tick)
    return groups
