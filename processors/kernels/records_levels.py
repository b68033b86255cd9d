"""Round-number levels of one grid: latches, first crossings, and a tick's crossing.

The level rules themselves (latches, hysteresis, one row per tick, grid and direction,
milestone velocity) are stated in records.py; this module is how one grid keeps them at
a cost that does not grow with the price or with the levels a tick passes:

- only levels whose hysteresis band holds the grid's price keep explicit latches
  (``Grid.armed``); every other level's latches follow from which side of it the price
  is, so nothing needs storing for them;
- the open interval between the nearest thresholds around the price is cached
  (``Grid.below``/``Grid.above``): a tick inside it changes nothing;
- first crossings are kept as runs of levels crossed by the same tick (``Firsts``), so a
  tick passing a thousand levels adds one run.

What the grid does *not* see (a price with too many levels within its hysteresis,
``MAX_BAND_LEVELS``) is decided by the kernel in records.py, before a grid is moved.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from typing import NamedTuple

NEVER = -(2**63)
UP, DOWN = 1, -1

_THRESHOLDS: dict[tuple[float, float, float, float], tuple[float, float]] = {}
_THRESHOLDS_KEPT = 8_192  # (price, step, 1 - h, 1 + h) -> (below, above) of Grid.refresh


def level_price(k: int, step: float) -> float:
    """The k-th level of a grid; rounding keeps decimal steps (0.1) on exact decimals."""
    return round(k * step, 9)


class Firsts:
    """The first crossing time of each level crossed in one direction, as disjoint runs
    of levels (``lo[i]..hi[i]`` first crossed at ``ts[i]``), sorted: a tick that fires a
    thousand levels adds one run, not a thousand entries."""

    __slots__ = ("lo", "hi", "ts")

    def __init__(self) -> None:
        self.lo: list[int] = []
        self.hi: list[int] = []
        self.ts: list[int] = []

    def get(self, k: int) -> int | None:
        i = bisect_right(self.lo, k) - 1
        if i >= 0 and k <= self.hi[i]:
            return self.ts[i]
        return None

    def fill(self, a: int, b: int, ts: int) -> None:
        """Levels a..b not crossed before are first crossed at ``ts``."""
        lo, hi = self.lo, self.hi
        i = bisect_right(lo, a) - 1
        k = a
        if i >= 0 and hi[i] >= a:
            k = hi[i] + 1
        j = i + 1
        gaps: list[tuple[int, int]] = []
        while k <= b:
            if j < len(lo) and lo[j] <= b:
                if lo[j] > k:
                    gaps.append((k, lo[j] - 1))
                k = hi[j] + 1
                j += 1
            else:
                gaps.append((k, b))
                break
        for g_lo, g_hi in gaps:
            at = bisect_right(lo, g_lo)
            lo.insert(at, g_lo)
            hi.insert(at, g_hi)
            self.ts.insert(at, ts)

    def copy(self) -> Firsts:
        other = Firsts()
        other.lo, other.hi, other.ts = list(self.lo), list(self.hi), list(self.ts)
        return other

    def state(self) -> list[list[int]]:
        return [[a, b, t] for a, b, t in zip(self.lo, self.hi, self.ts, strict=True)]

    @classmethod
    def restored(cls, saved: list[list[int]]) -> Firsts:
        """From ``state()``, or from the ``[k, ts]`` entries of older snapshots."""
        firsts = cls()
        for entry in sorted(saved):
            if len(entry) == 2:
                k, t = entry
                firsts.fill(k, k, t)
            else:
                a, b, t = entry
                firsts.fill(a, b, t)
        return firsts


class Crossing(NamedTuple):
    """What one tick did to one grid, when it gives a row: the furthest level it fired
    (``level``), the nearest (``from_level``; the same level for a single crossing), the
    first crossing of the level a step behind (``prev_ts_ms``) and ``first_time``."""

    rising: bool
    level: float
    from_level: float
    prev_ts_ms: int | None
    first_time: int


class Grid:
    """The latches and first crossings of one grid (one step) of one symbol."""

    __slots__ = (
        "step", "price", "armed", "first_up", "first_down", "below", "above", "instant",
        "fired",
    )  # fmt: skip

    def __init__(self, step: float) -> None:
        self.step = step
        self.price: float | None = None  # the price the latches are as of
        # open interval around price without thresholds: a tick inside changes nothing
        self.below = self.above = 0.0
        self.armed: dict[int, list[bool]] = {}  # k -> [up, down], levels whose band holds price
        self.first_up = Firsts()
        self.first_down = Firsts()
        self.instant = NEVER  # the ts_ms of the last row...
        self.fired: set[tuple[int, int]] = set()  # ...and the (direction, k) of rows at it

    def copy(self) -> Grid:
        grid = Grid(self.step)
        grid.price, grid.below, grid.above = self.price, self.below, self.above
        grid.armed = {k: list(latch) for k, latch in self.armed.items()}
        grid.first_up = self.first_up.copy()
        grid.first_down = self.first_down.copy()
        grid.instant, grid.fired = self.instant, set(self.fired)
        return grid

    def arm(self, price: float) -> None:
        """Initial latches: up armed strictly below a level, down armed strictly above.

        That is also what ``cross`` assumes of a level without an explicit latch, so
        nothing needs storing."""
        self.price = price
        self.armed = {}

    def refresh(self, lo_f: float, hi_f: float) -> None:
        """The nearest thresholds (L(1-h), L, L(1+h) of any level) around the grid's price.

        A pure function of (price, step, hysteresis), memoised across kernels: the live
        stage's shadow evaluates each price first, the exact kernel the same price later,
        and a market revisits its prices. Each of the three families of thresholds is
        searched near the price only, so the cost does not grow with the price."""
        price, step = self.price, self.step
        assert price is not None
        key = (price, step, lo_f, hi_f)
        known = _THRESHOLDS.get(key)
        if known is not None:
            self.below, self.above = known
            return
        below, above = -math.inf, math.inf
        for factor in (lo_f, 1.0, hi_f):
            k0 = math.floor(price / factor / step)
            for k in range(k0 - 2, k0 + 4):
                threshold = level_price(k, step) * factor
                if threshold > price:
                    if threshold < above:
                        above = threshold
                elif threshold < price:
                    if threshold > below:
                        below = threshold
                else:
                    below = above = price
        self.below, self.above = below, above
        if len(_THRESHOLDS) >= _THRESHOLDS_KEPT:
            _THRESHOLDS.clear()  # bounded: a fresh start costs one computation per price
        _THRESHOLDS[key] = (below, above)

    def cross(self, ts: int, price: float, lo_f: float, hi_f: float) -> Crossing | None:
        """Move the latches from self.price to price; the crossing to report, if any.

        Only levels whose hysteresis band is near the old or the new price need their
        latches looked at. Every level strictly between those two neighbourhoods is
        passed by entirely: its latch in the move's direction was armed (the old price
        was beyond its band) and fires, the other one ends re-armed (the new price is
        beyond its band on the other side), which is what a level without an explicit
        latch means; so that range costs one comparison and one run of first crossings.
        """
        before = self.price
        assert before is not None
        if price == before:
            return None
        step, armed = self.step, self.armed
        rising = price > before
        near_before = range(
            math.floor(before / hi_f / step) - 1, math.ceil(before / lo_f / step) + 2
        )
        near_price = range(math.floor(price / hi_f / step) - 1, math.ceil(price / lo_f / step) + 2)
        if rising:
            middle = range(near_before.stop, near_price.start)
        else:
            middle = range(near_price.stop, near_before.start)
        low_end, high_end = (near_before, near_price) if rising else (near_price, near_before)
        if middle:
            explicit: Iterable[int] = (*low_end, *high_end)
        else:
            explicit = range(low_end.start, high_end.stop)  # they overlap or touch
        fired: list[int] = []  # explicit levels fired
        for k in explicit:
            level = level_price(k, step)
            level_lo, level_hi = level * lo_f, level * hi_f
            latch = armed.pop(k, None)
            if before >= level:
                up = False
            elif before < level_lo:
                up = True
            else:
                up = latch[0] if latch is not None else before < level
            if before <= level:
                down = False
            elif before > level_hi:
                down = True
            else:
                down = latch[1] if latch is not None else before > level
            if price >= level:
                if up:
                    fired.append(k)
                    up = False
            elif price < level_lo:
                up = True
            if price <= level:
                if down:
                    fired.append(k)
                    down = False
            elif price > level_hi:
                down = True
            if level_lo <= price < level or level < price <= level_hi:
                armed[k] = [up, down]
        self.price = price
        if not fired and not middle:
            return None
        first = self.first_up if rising else self.first_down
        ends = [*fired, middle[0], middle[-1]] if middle else fired
        furthest, nearest = (max(ends), min(ends)) if rising else (min(ends), max(ends))
        is_first = first.get(furthest) is None
        for k in fired:
            first.fill(k, k, ts)
        if middle:
            first.fill(middle[0], middle[-1], ts)
        if self.instant != ts:
            self.instant, self.fired = ts, set()
        direction = UP if rising else DOWN
        if (direction, furthest) in self.fired:
            return None  # the same row again within one instant: one key, one row
        self.fired.add((direction, furthest))
        prev = first.get(furthest - 1 if rising else furthest + 1)
        return Crossing(
            rising, level_price(furthest, step), level_price(nearest, step), prev, int(is_first)
        )
