"""Rolling breaks: a tick above (below) every earlier tick of a trailing window.

Rows are of kind ``rolling_break`` (see ``RollingBreak`` in the contracts). Decisions,
per symbol, ticks in event order ((ts_ms, arrival), see ordering.py), for each window
``W`` of ``RollingConfig.windows_ms``:

- At a tick of time ``t`` and price ``p``: ``new_high`` when the window ``(t - W, t]``
  holds earlier ticks (ts < t, or equal ts and arrived before) and ``p`` is strictly
  above all of them. ``prev`` is that window's previous high and ``prev_ts_ms`` the
  latest earlier tick at it. A tick equal to the high is no break (it only moves the
  high's time forward). ``new_low`` likewise, strictly below.
- A window without earlier ticks (the first tick, or after a gap longer than ``W``)
  has no break: there is nothing to beat. A longer window may still have one.
- Coverage: a break of ``W`` also needs the symbol's history to cover the window:
  ``t - first_ts_ms >= W``, with ``first_ts_ms`` the stamp of the first tick the kernel
  saw of the symbol (the earliest: event order). Without it a fresh symbol's every new
  high of its few minutes would be called a "new 52-week high". ``first_ts_ms`` is kept
  in the state and its snapshot; a snapshot from before this rule has none and counts
  as covered (``COVERED_MS``, rolling.py). The rolling highs (``RollingHigh`` rows) do
  not depend on it.
- One tick may break several windows at once: one row per window, shortest first.
  A tick that breaks a window breaks every shorter non-empty one too (coverage aside:
  a longer window is covered later than a shorter one).

How: the same two staircases as the rolling highs (rolling.py): the ticks strictly
higher than every later tick, and strictly lower. A new tick pops the entries it beats;
the first entry it does not beat (the *guard*, at or above its price) is the latest
earlier tick at or above it. So the tick breaks window ``W`` iff the window holds an
earlier tick (the staircase top, the previous tick, is inside) and the guard is not
inside; the previous high is the first popped entry inside the window (a binary
search). Windows are tried shortest first; the first window holding the guard, or the
first one the symbol's history does not cover, ends it.

Speed, as the records' quiet band: the shortest window's low and high (the staircase
heads inside it) are kept per symbol with the time they leave it. A tick strictly
between them, before that time, breaks nothing in any window (each longer window holds
those ticks too): it costs the plain staircase push of the rolling highs and one
comparison. Only the others (about 2 % of a random walk's ticks) take the slow path,
where coverage costs one comparison per window tried.

Memory is the staircases, cut to the longest window: bounded by the ticks' prices,
never by their number. One pair of staircases serves the rolling highs as well:
``RollingBreakKernel(config, highs=True)`` also emits the ``RollingHigh`` rows of
``RollingKernel`` (the pipeline runs it so, in place of a second pair of staircases).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

from processors.kernels.rolling import RollingConfig, RollingKernel, _Symbol
from tickstream.contracts import OutputRow, RollingBreak
from tickstream.model import Tick

_ts = attrgetter("ts_ms")
_LOUD = (float("inf"), float("-inf"), -(2**62))  # no range known: every tick is careful


class RollingBreakKernel(RollingKernel):
    """New highs and lows of each trailing window (``RollingBreak`` rows).

    With ``highs=True`` it is also the ``RollingKernel`` (same staircases, same rows,
    same snapshot), so one pass over the ticks yields both row kinds.
    """

    def __init__(self, config: RollingConfig | None = None, *, highs: bool = False) -> None:
        super().__init__(config)
        self.highs = highs
        # shortest first: a break of a window implies one of every shorter non-empty window
        self.ascending: list[tuple[str, int]] = sorted(self._windows, key=lambda w: w[1])
        # per symbol, the shortest window's (low, high, until_ms): a tick strictly inside,
        # stamped before until_ms, breaks nothing (derived state: rebuilt after a restore)
        self._bands: dict[str, tuple[float, float, int]] = {}

    def update(  # type: ignore[override]
        self, ticks: Sequence[Tick], watermarks: Mapping[str, int]
    ) -> list[OutputRow]:
        return super().update(ticks, watermarks)  # type: ignore[return-value]

    def flush(self) -> list[OutputRow]:  # type: ignore[override]
        return super().flush()  # type: ignore[return-value]

    def first_ts_ms(self, symbol: str) -> int | None:
        """The stamp of the symbol's first released tick (``COVERED_MS`` if restored from
        before the coverage rule; None before any): the live stage's coverage."""
        state = self._symbols.get(symbol)
        return None if state is None else state.first_ts_ms

    def staircases(self, symbol: str) -> tuple[list[Tick], list[Tick]] | None:
        """The (highs, lows) staircases of a symbol's released ticks, oldest first.

        Read-only, for the live stage: the max over any window ending at or after the
        newest released tick is the first ``highs`` entry inside it (likewise lows).
        """
        state = self._symbols.get(symbol)
        return None if state is None else (state.hi, state.lo)

    def _emit(self, symbol: str, state: _Symbol, rows: list[Any]) -> None:
        super()._emit(symbol, state, rows if self.highs else [])

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self._bands = {}

    def _run(self, symbol: str, ticks: list[Tick], rows: list[Any]) -> None:
        state, end = self._start(symbol, ticks[0].ts_ms)
        hi, lo = state.hi, state.lo
        hi_pop, hi_push, lo_pop, lo_push = hi.pop, hi.append, lo.pop, lo.append
        low, high, until = self._bands.get(symbol, _LOUD)
        first = state.first_ts_ms
        for tick in ticks:
            ts = tick.ts_ms
            if ts >= end:
                end = self._roll(symbol, state, ts, rows)
            price = tick.price
            if low < price < high and ts < until:
                # strictly inside the shortest window's range: no break, and both
                # staircases hold an entry beyond the price (the loops stop there)
                while hi[-1].price <= price:
                    hi_pop()
                hi_push(tick)
                while lo[-1].price >= price:
                    lo_pop()
                lo_push(tick)
            else:
                low, high, until = self._careful(symbol, tick, hi, lo, first, rows)
        self._bands[symbol] = (low, high, until)

    def _careful(
        self,
        symbol: str,
        tick: Tick,
        hi: list[Tick],
        lo: list[Tick],
        first: int,
        rows: list[Any],
    ) -> tuple[float, float, int]:
        """A tick at or beyond the shortest window's range (or after it moved on): push it
        with its breaks (``first``: the symbol's first stamp); return the new range (low,
        high, until_ms)."""
        price = tick.price
        if hi and hi[-1].price < price:
            self._beat(symbol, tick, hi, 1, first, rows)
        elif hi and hi[-1].price == price:
            hi[-1] = tick  # the latest at the price moves on
        else:
            hi.append(tick)
        if lo and lo[-1].price > price:
            self._beat(symbol, tick, lo, -1, first, rows)
        elif lo and lo[-1].price == price:
            lo[-1] = tick
        else:
            lo.append(tick)
        w0 = self.ascending[0][1]
        cutoff = tick.ts_ms - w0
        h = hi[bisect_right(hi, cutoff, key=_ts)]  # the tick itself is inside: found
        low = lo[bisect_right(lo, cutoff, key=_ts)]
        return low.price, h.price, min(h.ts_ms, low.ts_ms) + w0

    def _beat(
        self, symbol: str, tick: Tick, stair: list[Tick], sign: int, first: int, rows: list[Any]
    ) -> None:
        """Push ``tick`` onto a staircase whose top it beats (sign 1: highs, -1: lows),
        with a row for every window it breaks that the history since ``first`` covers."""
        ts, price = tick.ts_ms, tick.price
        history = ts - first
        p = sign * price
        n = len(stair) - 1  # stair[n:] are beaten: strictly behind price
        while n and sign * stair[n - 1].price < p:
            n -= 1
        last_ts = stair[-1].ts_ms  # the previous tick: the latest earlier one
        guard_ts = stair[n - 1].ts_ms if n else None  # the latest at or beyond price
        record = "new_high" if sign == 1 else "new_low"
        for label, w in self.ascending:
            if w > history:
                break  # the history does not cover this window (nor the longer ones)
            cutoff = ts - w
            if last_ts <= cutoff:
                continue  # no earlier tick in this window
            if guard_ts is not None and guard_ts > cutoff:
                break  # a tick at or beyond this price is in the window (and longer ones)
            prev = stair[bisect_right(stair, cutoff, n, key=_ts)]
            rows.append(RollingBreak(symbol, label, record, ts, price, prev.price, prev.ts_ms))
        del stair[n:]
        if n and stair[-1].price == price:
            stair[-1] = tick  # an equal guard: the latest at the price moves on
        else:
            stair.append(tick)
