"""Divergence windows of a pair of symbols, on a common event-time clock.

Rows are of kind ``divergence_window``. Decisions:

- Clock: boundaries are the multiples ``T`` of ``clock_ms``. A symbol's sample at ``T``
  is the price of its last tick with ``ts_ms <= T``. The pair's samples start at the
  first boundary where both symbols have a price. A boundary is processed only once
  both symbols' watermarks (or their newest ticks) are past it, so how the two
  streams interleave never matters; and never past the newest tick of either symbol
  (rounded up to a boundary): samples are driven by data, not by watermarks alone.
- Gaps: a boundary is *stale*, and skipped, when neither symbol had a tick in
  ``(T - lookback_ms, T]``. So a gap costs at most ``lookback_ms / clock_ms``
  boundaries, then sampling resumes at the next tick's boundary; samples older than
  the lookback fall out of the statistics, so the pair starts over after a long gap.
- Metrics: ``ratio`` = price_a / price_b; ``return_spread`` = ln(a_T / a_{T-h}) -
  ln(b_T / b_{T-h}) with h = ``return_horizon_ms`` (prices at T - h as defined above;
  no value before the pair has prices at T - h).
- z-score of a value at T: against the *earlier* samples of the same metric with
  boundary in ``(T - lookback_ms, T)`` (the current one excluded, so an outlier cannot
  damp its own score); sample standard deviation (n - 1). No z while fewer than
  ``min_samples`` samples, or when the standard deviation is <= 1e-9 * max(1, |mean|)
  (a flat series has no meaningful z).
- Windows, per (pair, metric): one opens when |z| >= z_open, ``direction`` = sign of z
  (+1: the value above its norm; for ratio, the first symbol outperforming). It closes
  at the first sample with ``direction * z < z_close``: back inside the band, or
  flipped to the other side (which may open the opposite window at the same sample).
  ``peak_value`` is the most extreme value in the window's direction from the opening
  sample up to, not including, the closing one (earliest on ties); ``z_peak`` its z.
  A row is emitted on open (closed_at_ms/close_value None) and again on close, with the
  same (pair, metric, opened_at_ms) identity: the sink keeps the newest version.
- Flush processes every boundary up to the newest tick's boundary and does NOT close
  open windows: an open window stays open (and resumes if more data comes later).
- Bounded state: while one side of a pair has never ticked, the other side's periods
  are kept only ``silent_side_keep_ms`` back from its newest tick. A first tick of the
  silent side stamped earlier than that starts the pair at the oldest period kept (the
  price of a side at a boundary is still exact: the last kept period is never cut).

Statistics: running sums over a deque of the lookback's samples, kept *exactly*: a
float is a dyadic rational, so each value is added as an integer scaled by 2**1074;
sums never drift, no periodic recomputation is needed, and mean and variance are
correctly rounded. The oracle (two-pass floats) agrees to a relative 1e-9.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from processors.kernels.rolling import group_by_symbol
from tickstream.contracts import DivergenceWindow
from tickstream.contracts.rows import pair_key
from tickstream.model import MINUTE_MS, Tick

DAY_MS = 86_400_000
METRICS = ("ratio", "return_spread")
_NEVER = -(2**63)
_SCALE = 1074  # 2**-1074 is the smallest float step: every float is an integer multiple of it


@dataclass(frozen=True, slots=True)
class DivergenceConfig:
    pairs: Sequence[tuple[str, str]] = (("XAU", "XAG"),)
    clock_ms: int = MINUTE_MS
    lookback_ms: int = 20 * DAY_MS
    z_open: float = 2.0
    z_close: float = 1.0
    min_samples: int = 30
    return_horizon_ms: int = DAY_MS
    # while one side of a pair has never ticked, the other side's periods are kept this far
    # back from its newest tick (state stays bounded when a side never ticks at all)
    silent_side_keep_ms: int = DAY_MS

    def __post_init__(self) -> None:
        if self.clock_ms <= 0:
            raise ValueError("clock_ms must be > 0")
        for name in ("lookback_ms", "return_horizon_ms"):
            value = getattr(self, name)
            if value < self.clock_ms or value % self.clock_ms:
                raise ValueError(f"{name} must be a positive multiple of clock_ms")
        if not 0 <= self.z_close <= self.z_open:
            raise ValueError("need 0 <= z_close <= z_open")
        if self.silent_side_keep_ms < self.clock_ms:
            raise ValueError("silent_side_keep_ms must be >= clock_ms")
        if self.min_samples < 2:
            raise ValueError("min_samples must be >= 2")
        for a, b in self.pairs:
            if a == b:
                raise ValueError(f"pair ({a}, {b}) needs two different symbols")


def _fixed(value: float) -> int:
    """The float as an exact integer multiple of 2**-1074."""
    num, den = value.as_integer_ratio()
    return num << (_SCALE + 1 - den.bit_length())


class _Series:
    """One symbol's price per clock period: closed periods in lists, the newest apart."""

    __slots__ = ("bounds", "prices", "base", "cur_bound", "cur_price", "last_ts")

    def __init__(self) -> None:
        self.bounds: list[int] = []  # boundary closing each period that had ticks
        self.prices: list[float] = []  # last price of that period
        self.base = 0  # absolute index of bounds[0] (consumed entries are cut)
        self.cur_bound: int | None = None
        self.cur_price = 0.0
        self.last_ts = _NEVER

    def first_bound(self, index: int) -> int | None:
        off = index - self.base
        return self.bounds[off] if off < len(self.bounds) else self.cur_bound


class _Stats:
    """Samples of one metric within the lookback, with exact running sums."""

    __slots__ = ("samples", "s1", "s2")

    def __init__(self) -> None:
        self.samples: deque[tuple[int, float, int]] = deque()
        self.s1 = 0
        self.s2 = 0

    def add(self, t_ms: int, value: float) -> None:
        x = _fixed(value)
        self.samples.append((t_ms, value, x))
        self.s1 += x
        self.s2 += x * x

    def evict(self, cutoff_ms: int) -> None:
        samples = self.samples
        while samples and samples[0][0] <= cutoff_ms:
            x = samples.popleft()[2]
            self.s1 -= x
            self.s2 -= x * x

    def z(self, value: float, min_samples: int) -> float | None:
        n = len(self.samples)
        if n < min_samples:
            return None
        spread = n * self.s2 - self.s1 * self.s1  # n**2 * population variance, exact
        if spread <= 0:
            return None
        std = math.sqrt(spread / ((n * (n - 1)) << (2 * _SCALE)))
        mean = self.s1 / (n << _SCALE)
        if std <= 1e-9 * max(1.0, abs(mean)):
            return None
        return (n * _fixed(value) - self.s1) / (n << _SCALE) / std


class _Pair:
    __slots__ = (
        "a",
        "b",
        "label",
        "index",
        "price",
        "bound",
        "next_ms",
        "history",
        "stats",
        "open",
    )

    def __init__(self, a: str, b: str) -> None:
        self.a, self.b = a, b
        self.label = pair_key(a, b)
        self.index = [0, 0]  # absolute index of the next unread closed period, per side
        self.price = [0.0, 0.0]  # price at the last processed boundary, per side
        self.bound = [_NEVER, _NEVER]  # boundary of the newest period read, per side
        self.next_ms: int | None = None  # next boundary to process
        self.history: deque[tuple[int, float, float]] = deque()  # (T, price_a, price_b)
        self.stats = {m: _Stats() for m in METRICS}
        # metric -> [direction, opened_at, open_value, z_open, peak, peak_at, z_peak]
        self.open: dict[str, list[Any] | None] = {m: None for m in METRICS}


class DivergenceKernel:
    """Ratio and return-spread divergence windows; rows of kind ``divergence_window``."""

    def __init__(self, config: DivergenceConfig | None = None) -> None:
        self.config = config or DivergenceConfig()
        self._pairs = [_Pair(a, b) for a, b in self.config.pairs]
        self._series: dict[str, _Series] = {}
        for pair in self._pairs:
            for symbol in (pair.a, pair.b):
                self._series.setdefault(symbol, _Series())

    def open_windows(self) -> dict[tuple[str, str], int]:
        """(pair, metric) -> direction of its open window, 0 when none is open."""
        return {
            (pair.label, metric): 0 if window is None else window[0]
            for pair in self._pairs
            for metric, window in pair.open.items()
        }

    def update(
        self, ticks: Sequence[Tick], watermarks: Mapping[str, int]
    ) -> list[DivergenceWindow]:
        clock = self.config.clock_ms
        all_series = self._series
        for symbol, group in group_by_symbol(ticks).items():
            series = all_series.get(symbol)
            if series is None:
                continue
            bounds, prices = series.bounds, series.prices
            bound = series.cur_bound
            if bound is None:
                bound = -(-group[0].ts_ms // clock) * clock
            price = series.cur_price
            for tick in group:
                ts = tick.ts_ms
                if ts > bound:
                    bounds.append(bound)
                    prices.append(price)
                    bound = -(-ts // clock) * clock
                price = tick.price
            series.cur_bound, series.cur_price = bound, price
            series.last_ts = group[-1].ts_ms
        rows: list[DivergenceWindow] = []
        for pair in self._pairs:
            sa, sb = all_series[pair.a], all_series[pair.b]
            if sa.cur_bound is None or sb.cur_bound is None:
                continue
            passed = min(
                max(watermarks.get(pair.a, _NEVER), sa.last_ts),
                max(watermarks.get(pair.b, _NEVER), sb.last_ts),
            )
            limit = min((passed - 1) // clock * clock, max(sa.cur_bound, sb.cur_bound))
            self._advance(pair, limit, rows)
        self._trim()
        return rows

    def flush(self) -> list[DivergenceWindow]:
        rows: list[DivergenceWindow] = []
        for pair in self._pairs:
            sa, sb = self._series[pair.a], self._series[pair.b]
            if sa.cur_bound is not None and sb.cur_bound is not None:
                self._advance(pair, max(sa.cur_bound, sb.cur_bound), rows)
        return rows

    def _advance(self, pair: _Pair, limit_ms: int, rows: list[DivergenceWindow]) -> None:
        """Sample every non-stale boundary up to limit_ms (all data up to there is final)."""
        sides = (self._series[pair.a], self._series[pair.b])
        t = pair.next_ms
        if t is None:
            firsts = [s.first_bound(i) for s, i in zip(sides, pair.index, strict=True)]
            t = max(firsts)  # type: ignore[type-var]
        clock = self.config.clock_ms
        lookback = self.config.lookback_ms
        index, price, bound = pair.index, pair.price, pair.bound
        while t <= limit_ms:
            upcoming: list[int] = []
            for i, series in enumerate(sides):
                off = index[i] - series.base
                bounds = series.bounds
                while off < len(bounds) and bounds[off] <= t:
                    bound[i] = bounds[off]
                    price[i] = series.prices[off]
                    off += 1
                index[i] = off + series.base
                if off < len(bounds):
                    upcoming.append(bounds[off])
                elif series.cur_bound is not None and series.cur_bound <= t:
                    bound[i] = series.cur_bound
                    price[i] = series.cur_price
                elif series.cur_bound is not None:
                    upcoming.append(series.cur_bound)
            if max(bound) <= t - lookback:
                # Every boundary before the next known period is stale too; data past the
                # limit is not final yet (a side's next tick is unknown), so stop there.
                t = min(upcoming) if upcoming and min(upcoming) <= limit_ms else limit_ms + clock
                continue
            self._sample(pair, t, price[0], price[1], rows)
            t += clock
        pair.next_ms = t

    def _sample(
        self, pair: _Pair, t_ms: int, price_a: float, price_b: float, rows: list[DivergenceWindow]
    ) -> None:
        self._observe(pair, "ratio", t_ms, price_a / price_b, rows)
        history = pair.history
        base_ms = t_ms - self.config.return_horizon_ms
        while len(history) >= 2 and history[1][0] <= base_ms:
            history.popleft()
        if history and history[0][0] <= base_ms:
            _, a0, b0 = history[0]
            spread = math.log(price_a / a0) - math.log(price_b / b0)
            self._observe(pair, "return_spread", t_ms, spread, rows)
        history.append((t_ms, price_a, price_b))

    def _observe(
        self, pair: _Pair, metric: str, t_ms: int, value: float, rows: list[DivergenceWindow]
    ) -> None:
        config = self.config
        stats = pair.stats[metric]
        stats.evict(t_ms - config.lookback_ms)
        z = stats.z(value, config.min_samples)
        stats.add(t_ms, value)
        window = pair.open[metric]
        if window is not None:
            direction = window[0]
            if z is not None and direction * z < config.z_close:
                rows.append(_row(pair.label, metric, window, t_ms, value))
                window = pair.open[metric] = None
            elif (value - window[4]) * direction > 0:
                window[4], window[5], window[6] = value, t_ms, z
        if window is None and z is not None and abs(z) >= config.z_open:
            window = [1 if z > 0 else -1, t_ms, value, z, value, t_ms, z]
            pair.open[metric] = window
            rows.append(_row(pair.label, metric, window, None, None))

    def _trim(self) -> None:
        """Cut periods every pair has read past, or that a silent partner can no longer use."""
        keep_ms = self.config.silent_side_keep_ms
        for symbol, series in self._series.items():
            read: int | None = None
            for p in self._pairs:
                if symbol not in (p.a, p.b):
                    continue
                side = 0 if p.a == symbol else 1
                partner = self._series[p.b if side == 0 else p.a]
                if p.next_ms is None and partner.cur_bound is None and series.bounds:
                    # the partner never ticked: keep the periods within keep_ms of the newest
                    # tick, and the one before them (the price at the first kept boundary)
                    oldest = bisect_right(series.bounds, series.last_ts - keep_ms) - 1
                    p.index[side] = max(p.index[side], series.base + max(oldest, 0))
                index = p.index[side]
                read = index if read is None else min(read, index)
            if read is None:
                continue
            cut = read - series.base
            if cut and (cut >= 1024 or 2 * cut >= len(series.bounds)):
                del series.bounds[:cut]
                del series.prices[:cut]
                series.base = read

    def snapshot(self) -> dict[str, Any]:
        return {
            "series": {
                symbol: {
                    "bounds": list(s.bounds),
                    "prices": list(s.prices),
                    "base": s.base,
                    "cur_bound": s.cur_bound,
                    "cur_price": s.cur_price,
                    "last_ts": s.last_ts,
                }
                for symbol, s in self._series.items()
            },
            "pairs": [
                {
                    "pair": p.label,
                    "index": list(p.index),
                    "price": list(p.price),
                    "bound": list(p.bound),
                    "next_ms": p.next_ms,
                    "history": [list(h) for h in p.history],
                    "stats": {m: [[t, v] for t, v, _ in st.samples] for m, st in p.stats.items()},
                    "open": {m: (None if w is None else list(w)) for m, w in p.open.items()},
                }
                for p in self._pairs
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        for symbol, saved in state["series"].items():
            series = self._series.get(symbol)
            if series is None:
                continue
            series.bounds = list(saved["bounds"])
            series.prices = list(saved["prices"])
            series.base = saved["base"]
            series.cur_bound = saved["cur_bound"]
            series.cur_price = saved["cur_price"]
            series.last_ts = saved["last_ts"]
        by_label = {p["pair"]: p for p in state["pairs"]}
        for pair in self._pairs:
            saved = by_label.get(pair.label)
            if saved is None:
                continue
            pair.index = list(saved["index"])
            pair.price = list(saved["price"])
            pair.bound = list(saved["bound"])
            pair.next_ms = saved["next_ms"]
            pair.history = deque((t, a, b) for t, a, b in saved["history"])
            for metric in METRICS:
                stats = pair.stats[metric] = _Stats()
                for t, v in saved["stats"][metric]:
                    stats.add(t, v)
                w = saved["open"][metric]
                pair.open[metric] = None if w is None else list(w)


def _row(
    label: str, metric: str, window: list[Any], closed_ms: int | None, close: float | None
) -> DivergenceWindow:
    direction, opened_ms, open_value, z_open, peak, peak_ms, z_peak = window
    return DivergenceWindow(
        label,
        metric,
        direction,
        opened_ms,
        closed_ms,
        open_value,
        peak,
        peak_ms,
        close,
        z_open,
        z_peak,
    )
