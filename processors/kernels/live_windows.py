"""New highs and lows of each rolling window, decided when a tick arrives.

The contract's definition is applied to every tick known at arrival (released or held)
stamped in ``(t - W, t]``: this is the exact kernel's answer unless an earlier-stamped
tick is still to come. Released ticks are read from the exact kernel's staircases
(rolling_breaks.py), held ones from the ordering stage's held list; neither is written.

Coverage likewise: a window ``W`` breaks only if ``t - first >= W``, ``first`` being the
earliest stamp known at arrival: the exact kernel's first tick (the earliest released;
``COVERED_MS`` after a snapshot from before the rule), the earliest held tick, the tick
itself. In order that is the exact kernel's ``first_ts_ms``; an earlier-stamped tick
still to come can only make the exact history longer, so coverage never retracts a
provisional break (it may leave one for the exact path to confirm unannounced).

Speed: per symbol the shortest window's known high and low are kept, with the time
until which both stay in that window. An in-order tick strictly between them breaks no
window (longer windows hold those ticks too), which lets the ordering stage skip it
(the quiet band, see ordering.py); a tick at or beyond them breaks the shortest window,
and longer ones are looked up only then. The held ticks' extremes, needed when the
known range is rebuilt, are cached per symbol and extended by the ticks held since, so
no held tick is scanned twice.
"""

from __future__ import annotations

from bisect import bisect_right
from operator import attrgetter, itemgetter
from typing import Any

from processors.kernels.ordering import LOUD, Band, Held
from processors.kernels.rolling_breaks import RollingBreakKernel
from tickstream.contracts import RollingBreak
from tickstream.model import Tick

_NEVER = -(2**63)
_FOREVER = 2**63
_ts = attrgetter("ts_ms")
_price = itemgetter(3)  # of a held entry

Entry = tuple[int, int, Tick, float]  # a held tick: (ts_ms, arrival, tick, price)
Stairs = tuple[list[Tick], list[Tick]] | None  # the exact kernel's (highs, lows)


class _Extremes:
    """Per symbol: the shortest window's known extremes, and the held ticks' extremes (a
    cache over ``held[:hn]``)."""

    __slots__ = ("hi", "lo", "until", "hn", "hmax", "hmin")

    def __init__(self) -> None:
        self.hi: Tick | None = None  # latest known tick at the shortest window's high
        self.lo: Tick | None = None
        self.until = _NEVER  # hi and lo stay in that window for ticks stamped before this
        self.hn = 0
        self.hmax: Entry | None = None
        self.hmin: Entry | None = None


class ArrivalWindows:
    """Rolling breaks of arriving ticks, against what is known of each window."""

    def __init__(self, rolling: RollingBreakKernel) -> None:
        self._rolling = rolling
        self._windows = rolling.ascending
        self._w0 = self._windows[0][1]
        self._symbols: dict[str, _Extremes] = {}

    def arrive(self, tick: Tick, arrival: int, held: Held, newest_ms: int, rows: list[Any]) -> None:
        """Append the breaks of an accepted arrival to ``rows`` (``held``: the symbol's held
        ticks before it; ``newest_ms``: the symbol's newest stamp, with it)."""
        symbol, ts = tick.symbol, tick.ts_ms
        ext = self._symbols.get(symbol)
        if ext is None:
            ext = self._symbols[symbol] = _Extremes()
        stairs = self._rolling.staircases(symbol)
        if ts >= newest_ms:  # in order
            if ext.hi is None or ts >= ext.until:  # the extremes left the window: again
                self._rebase(ext, held, stairs, ts, None)
            if ext.hi is None:  # nothing earlier in the shortest window
                self._evaluate(tick, ext, held, stairs, True, rows)
                self._rebase(ext, held, stairs, ts, tick)
            else:
                self._in_band(tick, ext, held, stairs, rows)
        else:
            self._evaluate(tick, ext, held, stairs, False, rows)
            self._rebase(ext, held, stairs, newest_ms, tick)
            self._held_insert(ext, held, (ts, arrival, tick, tick.price))

    def band(self, symbol: str, quiet: tuple[float, float] | None) -> Band:
        """The quiet band: inside the records' ``quiet`` range and the shortest window's."""
        ext = self._symbols.get(symbol)
        if quiet is None or ext is None or ext.hi is None or ext.lo is None:
            return LOUD
        return (max(quiet[0], ext.lo.price), min(quiet[1], ext.hi.price), ext.until)

    def released(self, symbol: str, held: Held, count: int) -> None:
        """``count`` ticks left the front of held: keep the cache if its ticks are still held."""
        ext = self._symbols.get(symbol)
        if ext is None:
            return
        ext.hn -= count
        mx, mn = ext.hmax, ext.hmin
        if ext.hn < 0 or not held or mx is None or mn is None or min(mx[:2], mn[:2]) < held[0][:2]:
            ext.hn, ext.hmax, ext.hmin = 0, None, None

    def history(self, symbol: str, held: Held, ts: int) -> int:
        """How far back the history known at an arrival stamped ``ts`` reaches (``held``:
        the symbol's held ticks before it): what covers a window."""
        first = ts
        exact = self._rolling.first_ts_ms(symbol)
        if exact is not None and exact < first:
            first = exact
        if held and held[0][0] < first:
            first = held[0][0]
        return ts - first

    def _in_band(
        self, tick: Tick, ext: _Extremes, held: Held, stairs: Stairs, rows: list[Any]
    ) -> None:
        """In order, the shortest window's extremes known: a tick beyond them breaks that
        window (if the history covers it); longer ones are looked up only then."""
        hi, lo = ext.hi, ext.lo
        assert hi is not None and lo is not None
        price = tick.price
        if price >= hi.price:
            if price > hi.price:
                self._breaks(tick, hi, 0, held, stairs, rows)
            ext.hi = hi = tick
        if price <= lo.price:
            if price < lo.price:
                self._breaks(tick, lo, 1, held, stairs, rows)
            ext.lo = lo = tick
        ext.until = min(hi.ts_ms, lo.ts_ms) + self._w0

    def _breaks(
        self, tick: Tick, best: Tick, side: int, held: Held, stairs: Stairs, rows: list[Any]
    ) -> None:
        """The rows of a tick strictly beyond ``best``, the shortest window's high (side 0)
        or low (1): that window's, then each longer one's while the history covers it and
        the tick is beyond its extreme too."""
        symbol, ts, price = tick.symbol, tick.ts_ms, tick.price
        history = self.history(symbol, held, ts)
        if history < self._w0:
            return
        record = ("new_high", "new_low")[side]
        sign = 1 - 2 * side  # beyond = further up for highs, down for lows
        first = self._windows[0][0]
        rows.append(RollingBreak(symbol, first, record, ts, price, best.price, best.ts_ms))
        for label, w in self._windows[1:]:
            if w > history:
                break
            prev = self._older(ts, w, best, held, stairs, side)
            if sign * prev.price >= sign * price:
                break
            rows.append(RollingBreak(symbol, label, record, ts, price, prev.price, prev.ts_ms))

    def _older(
        self, ts: int, window: int, best: Tick, held: Held, stairs: Stairs, side: int
    ) -> Tick:
        """The high (side 0) or low (1) of ``(ts - window, ts]`` given ``best``, that of the
        shortest window: released ticks from the staircase, and the held ticks older than
        the shortest window (normally none: the lateness is shorter than the window)."""
        cutoff = ts - window
        if stairs is not None:
            stair = stairs[side]
            j = bisect_right(stair, cutoff, key=_ts)
            if j < len(stair):
                best = _better(stair[j], best, side)
        inner = ts - self._w0
        if held and held[0][0] <= inner:
            for e_ts, _, t, _ in held[bisect_right(held, (cutoff, _FOREVER)) :]:
                if e_ts > inner:
                    break
                best = _better(t, best, side)
        return best

    def _evaluate(
        self,
        tick: Tick,
        ext: _Extremes,
        held: Held,
        stairs: Stairs,
        in_order: bool,
        rows: list[Any],
    ) -> None:
        """Every window from its definition over the known ticks (the slow path)."""
        symbol, ts, price = tick.symbol, tick.ts_ms, tick.price
        end = len(held) if in_order else bisect_right(held, (ts, _FOREVER))
        whole: tuple[Entry | None, Entry | None] | None = None  # held[:end]'s extremes
        highs: list[RollingBreak] = []
        lows: list[RollingBreak] = []
        history = self.history(symbol, held, ts)
        for label, w in self._windows:
            if w > history:
                break  # not covered, nor are the longer windows
            cutoff = ts - w
            mx, mn = _stair_extremes(stairs, cutoff)
            start = 0 if not held or held[0][0] > cutoff else bisect_right(held, (cutoff, _FOREVER))
            if start < end:
                if start == 0:
                    if whole is None:
                        whole = self._held_extremes(ext, held) if in_order else _scan(held, 0, end)
                    hmx, hmn = whole
                else:
                    hmx, hmn = _scan(held, start, end)
                mx, mn = _with(mx, mn, hmx, hmn)
            if mx is None or mn is None:
                continue  # no earlier tick in this window
            if price > mx.price:
                highs.append(RollingBreak(symbol, label, "new_high", ts, price, mx.price, mx.ts_ms))
            if price < mn.price:
                lows.append(RollingBreak(symbol, label, "new_low", ts, price, mn.price, mn.ts_ms))
        rows.extend(highs)
        rows.extend(lows)

    def _rebase(
        self, ext: _Extremes, held: Held, stairs: Stairs, at: int, tick: Tick | None
    ) -> None:
        """The shortest window's extremes over the known ticks stamped in (at - W, at]
        (all of them are at or before ``at``), with ``tick`` if given."""
        cutoff = at - self._w0
        mx, mn = _stair_extremes(stairs, cutoff)
        if held:
            if held[0][0] > cutoff:
                hmx, hmn = self._held_extremes(ext, held)
            else:
                hmx, hmn = _scan(held, bisect_right(held, (cutoff, _FOREVER)), len(held))
            mx, mn = _with(mx, mn, hmx, hmn)
        if tick is not None and tick.ts_ms > cutoff:  # out of order, it may not be the latest
            if (
                mx is None
                or tick.price > mx.price
                or (tick.price == mx.price and tick.ts_ms >= mx.ts_ms)
            ):
                mx = tick
            if (
                mn is None
                or tick.price < mn.price
                or (tick.price == mn.price and tick.ts_ms >= mn.ts_ms)
            ):
                mn = tick
        ext.hi, ext.lo = mx, mn
        ext.until = _NEVER if mx is None or mn is None else min(mx.ts_ms, mn.ts_ms) + self._w0

    @staticmethod
    def _held_extremes(ext: _Extremes, held: Held) -> tuple[Entry | None, Entry | None]:
        """Highest and lowest held ticks (the latest at each), extending the cache."""
        if ext.hn < len(held):
            mx, mn = _scan(held, ext.hn, len(held))  # later than the cached: wins ties
            if ext.hmax is not None and mx is not None and ext.hmax[3] > mx[3]:
                mx = ext.hmax
            if ext.hmin is not None and mn is not None and ext.hmin[3] < mn[3]:
                mn = ext.hmin
            ext.hn, ext.hmax, ext.hmin = len(held), mx, mn
        return ext.hmax, ext.hmin

    @staticmethod
    def _held_insert(ext: _Extremes, held: Held, entry: Entry) -> None:
        """An out-of-order tick goes into held at its place: keep the cache a prefix."""
        if bisect_right(held, (entry[0], _FOREVER)) >= ext.hn:
            return  # lands in the part not scanned yet
        ext.hn += 1
        mx, mn = ext.hmax, ext.hmin
        key = entry[:2]
        if mx is None or entry[3] > mx[3] or (entry[3] == mx[3] and key > mx[:2]):
            ext.hmax = entry
        if mn is None or entry[3] < mn[3] or (entry[3] == mn[3] and key > mn[:2]):
            ext.hmin = entry


def _stair_extremes(stairs: Stairs, cutoff: int) -> tuple[Tick | None, Tick | None]:
    """High and low of the released ticks stamped after ``cutoff`` (staircase heads)."""
    if stairs is None:
        return None, None
    hi, lo = stairs
    j = bisect_right(hi, cutoff, key=_ts)
    k = bisect_right(lo, cutoff, key=_ts)
    return (hi[j] if j < len(hi) else None), (lo[k] if k < len(lo) else None)


def _scan(held: Held, start: int, end: int) -> tuple[Entry | None, Entry | None]:
    """Highest and lowest of held[start:end] (the latest at each: scanned backwards)."""
    if start >= end:
        return None, None
    part = held[start:end]
    return max(reversed(part), key=_price), min(reversed(part), key=_price)


def _with(
    mx: Tick | None, mn: Tick | None, hmx: Entry | None, hmn: Entry | None
) -> tuple[Tick | None, Tick | None]:
    """Released extremes joined with held ones (held come later: they win ties)."""
    if hmx is not None and (mx is None or hmx[3] >= mx.price):
        mx = hmx[2]
    if hmn is not None and (mn is None or hmn[3] <= mn.price):
        mn = hmn[2]
    return mx, mn


def _better(t: Tick, best: Tick, side: int) -> Tick:
    """The higher (side 0) or lower (1) of two ticks; at equal prices the later stamp."""
    if side == 0:
        if t.price > best.price or (t.price == best.price and t.ts_ms > best.ts_ms):
            return t
    elif t.price < best.price or (t.price == best.price and t.ts_ms > best.ts_ms):
        return t
    return best
