"""Record breaks: all-time highs and lows, round-number level crossings, synchronized highs.

Rows are of kind ``record_break``; the column ``record`` says which break it is (the
dict key ``kind`` already names the table): ``ath``, ``atl``, ``level_up``,
``level_down`` or ``sync_ath``. Decisions, per symbol (ticks in ts_ms order):

- ath / atl: a tick strictly above the all-time high (below the low). ``level`` is the
  previous record, ``prev_ts_ms`` the tick that set it, ``since_prev_s`` the seconds
  between, ``first_time`` 1 (a new extreme is always a first). A tick equal to the
  record is no record and does not move its time.
- Fresh symbol: without a seed its first tick sets both records and the side of every
  level silently (no row). A ``RecordSeed`` gives the records (and optionally the
  first upward/downward crossing times and the last price) so that a restart or a new
  deployment does not call the first tick a record. With ``seed.last_price`` the level
  sides come from that price and the first tick can already cross; without it the
  first tick sets the sides silently.
- Levels: for each step ``s`` of the symbol's grid, the levels are ``round(k * s, 9)``
  for integer k (round keeps 0.1-steps exact decimals). Prices are assumed > 0.
  Each level has two latches. Up: a tick at or above L fires ``level_up`` if the up
  latch is armed, then disarms it; the latch re-arms once a tick is below
  ``L * (1 - hysteresis)``. Down: a tick at or below L fires ``level_down`` if armed,
  re-arming once a tick is above ``L * (1 + hysteresis)``. The first tick (or the seed's
  last price) arms up-latches of the levels strictly above it and down-latches of the
  levels strictly below it. One tick fires one row per level crossed: ascending for up,
  descending for down (a tick never fires both directions).
- ``first_time`` is 1 on the first crossing of that level in that direction ever (seeds
  included). Milestone velocity: a ``level_up`` row's ``prev_ts_ms`` is the first upward
  crossing of ``L - step``, a ``level_down`` row's that of the first downward crossing
  of ``L + step`` (None if never), ``since_prev_s`` the seconds between.
- sync_ath: ATH events of the members of a sync group are taken in (ts_ms, symbol,
  per-symbol order) once every member's watermark has passed them (all on flush), so
  the rows do not depend on how symbols interleave. An event at ``t`` fires when another
  member's latest ATH (seeded ATH times count) lies in ``[t - sync_span_ms, t]`` and the
  group's previous sync row is more than ``sync_span_ms`` before ``t`` (or there is
  none): ``symbol`` is the participating members, sorted, joined by '+', ``price`` the
  later tick's price, ``prev_ts_ms`` the earliest participating ATH, ``level``/``step``
  0.0, ``first_time`` 0. A member that never gets a watermark holds the group's events
  until flush.

Speed: the state of a level only changes when a price crosses one of L*(1-h), L or
L*(1+h), or a record. After each such change the open interval between the nearest
thresholds around the price is cached; a tick inside it is a no-op (one comparison).
Only levels whose hysteresis band holds the current price keep explicit latch states.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tickstream.contracts import RecordBreak
from tickstream.contracts.rows import group_label
from tickstream.model import Tick

DAY_MS = 86_400_000
_NEVER = -(2**63)
_THRESHOLDS: dict[tuple[float, float, float, float], tuple[float, float]] = {}
_THRESHOLDS_KEPT = 8_192  # (price, step, 1 - h, 1 + h) -> (below, above) of _refresh_grid


@dataclass(frozen=True, slots=True)
class RecordSeed:
    """Known history of a symbol; crossing maps are keyed (step, level) -> first ts_ms."""

    ath: float
    ath_ts_ms: int
    atl: float
    atl_ts_ms: int
    first_crossings: Mapping[tuple[float, float], int] = field(default_factory=dict)
    first_crossings_down: Mapping[tuple[float, float], int] = field(default_factory=dict)
    last_price: float | None = None


def _default_steps() -> dict[str, tuple[float, ...]]:
    return {"XAU": (100.0, 1000.0), "XAG": (1.0, 10.0)}


@dataclass(frozen=True, slots=True)
class RecordConfig:
    level_steps: Mapping[str, Sequence[float]] = field(default_factory=_default_steps)
    default_steps: Sequence[float] = ()
    hysteresis: float = 0.001
    sync_groups: Sequence[Sequence[str]] = (("XAU", "XAG"),)
    sync_span_ms: int = DAY_MS
    seeds: Mapping[str, RecordSeed] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.hysteresis < 1:
            raise ValueError("hysteresis must be in [0, 1)")
        for steps in [*self.level_steps.values(), self.default_steps]:
            if any(not s > 0 for s in steps):
                raise ValueError("every level step must be > 0")
        if self.sync_span_ms < 0:
            raise ValueError("sync_span_ms must be >= 0")

    def steps_for(self, symbol: str) -> tuple[float, ...]:
        return tuple(float(s) for s in self.level_steps.get(symbol, self.default_steps))


def level_price(k: int, step: float) -> float:
    """The k-th level of a grid; rounding keeps decimal steps (0.1) on exact decimals."""
    return round(k * step, 9)


class _Grid:
    __slots__ = ("step", "price", "armed", "first_up", "first_down", "below", "above")

    def __init__(self, step: float) -> None:
        self.step = step
        self.price: float | None = None  # the price the latches are as of
        # open interval around price without thresholds: a tick inside changes nothing
        self.below = self.above = 0.0
        self.armed: dict[int, list[bool]] = {}  # k -> [up, down], levels whose band holds price
        self.first_up: dict[int, int] = {}
        self.first_down: dict[int, int] = {}


class _Symbol:
    __slots__ = ("ath", "ath_ts_ms", "atl", "atl_ts_ms", "grids")

    def __init__(self, grids: list[_Grid]) -> None:
        self.ath: float | None = None
        self.ath_ts_ms = 0
        self.atl = 0.0
        self.atl_ts_ms = 0
        self.grids = grids


class _Group:
    __slots__ = ("members", "pending", "last_ath", "last_sync_ms")

    def __init__(self, members: tuple[str, ...]) -> None:
        self.members = members
        # member -> its ATH events (ts, price), in its own (time) order
        self.pending: dict[str, deque[tuple[int, float]]] = {m: deque() for m in members}
        self.last_ath: dict[str, int] = {}
        self.last_sync_ms: int | None = None


class RecordKernel:
    """ATH/ATL, level crossings and sync ATHs; rows of kind ``record_break``."""

    def __init__(self, config: RecordConfig | None = None) -> None:
        self.config = config or RecordConfig()
        h = self.config.hysteresis
        self._lo_f = 1.0 - h
        self._hi_f = 1.0 + h
        self._symbols: dict[str, _Symbol] = {}
        self._quiet: dict[str, tuple[float, float]] = {}
        self._groups = [
            _Group(tuple(sorted(set(g)))) for g in self.config.sync_groups if len(set(g)) >= 2
        ]
        self._groups_of: dict[str, list[_Group]] = {}
        for group in self._groups:
            for member in group.members:
                self._groups_of.setdefault(member, []).append(group)
                seed = self.config.seeds.get(member)
                if seed is not None:
                    group.last_ath[member] = seed.ath_ts_ms
        for symbol in self.config.seeds:
            self._symbol(symbol)

    # -- state ------------------------------------------------------------------------

    def _symbol(self, symbol: str) -> _Symbol:
        state = self._symbols.get(symbol)
        if state is not None:
            return state
        state = self._symbols[symbol] = _Symbol([_Grid(s) for s in self.config.steps_for(symbol)])
        seed = self.config.seeds.get(symbol)
        if seed is not None:
            state.ath, state.ath_ts_ms = float(seed.ath), seed.ath_ts_ms
            state.atl, state.atl_ts_ms = float(seed.atl), seed.atl_ts_ms
            for grid in state.grids:
                for target, crossings in (
                    (grid.first_up, seed.first_crossings),
                    (grid.first_down, seed.first_crossings_down),
                ):
                    for (step, level), ts in crossings.items():
                        if float(step) == grid.step:
                            target[round(level / step)] = ts
                if seed.last_price is not None:
                    self._arm(grid, float(seed.last_price))
                    self._refresh_grid(grid)
            self._refresh_quiet(symbol, state)
        return state

    def _arm(self, grid: _Grid, price: float) -> None:
        """Initial latches: up armed strictly below a level, down armed strictly above."""
        grid.price = price
        step, lo_f, hi_f = grid.step, self._lo_f, self._hi_f
        for k in range(math.floor(price / hi_f / step) - 1, math.ceil(price / lo_f / step) + 2):
            level = level_price(k, step)
            if level * lo_f <= price < level or level < price <= level * hi_f:
                grid.armed[k] = [price < level, price > level]

    def _refresh_grid(self, grid: _Grid) -> None:
        """The nearest thresholds (L(1-h), L, L(1+h) of any level) around the grid's price.

        A pure function of (price, step, hysteresis), memoised across kernels: the live
        stage's shadow evaluates each price first, the exact kernel the same price later,
        and a market revisits its prices."""
        price, step, lo_f, hi_f = grid.price, grid.step, self._lo_f, self._hi_f
        assert price is not None
        key = (price, step, lo_f, hi_f)
        known = _THRESHOLDS.get(key)
        if known is not None:
            grid.below, grid.above = known
            return
        below, above = -math.inf, math.inf
        for k in range(math.floor(price / hi_f / step) - 2, math.ceil(price / lo_f / step) + 3):
            level = level_price(k, step)
            for threshold in (level * lo_f, level, level * hi_f):
                if threshold > price:
                    if threshold < above:
                        above = threshold
                elif threshold < price:
                    if threshold > below:
                        below = threshold
                else:
                    below = above = price
        grid.below, grid.above = below, above
        if len(_THRESHOLDS) >= _THRESHOLDS_KEPT:
            _THRESHOLDS.clear()  # bounded: a fresh start costs one computation per price
        _THRESHOLDS[key] = (below, above)

    def _refresh_quiet(self, symbol: str, state: _Symbol) -> None:
        """Cache the open price interval in which a tick changes nothing for this symbol."""
        if state.ath is None or any(g.price is None for g in state.grids):
            self._quiet.pop(symbol, None)
            return
        below, above = state.atl, state.ath
        for grid in state.grids:
            below = max(below, grid.below)
            above = min(above, grid.above)
        self._quiet[symbol] = (below, above)

    # -- the live stage's view (live.py) ----------------------------------------------

    def quiet_band(self, symbol: str) -> tuple[float, float] | None:
        """The open price interval in which a tick of ``symbol`` changes nothing (None
        before the symbol has state): the live stage lets such ticks pass unexamined."""
        return self._quiet.get(symbol)

    def sync_groups(self) -> list[_Group]:
        """The sync groups (read-only): members, ATH events waiting for the watermarks,
        each member's latest ATH and the last sync row; the live stage starts its
        provisional evaluation from them."""
        return self._groups

    def adopt(self, other: RecordKernel, symbol: str) -> None:
        """Take over (a copy of) ``other``'s state of one symbol, sync groups aside.

        The live stage rebuilds its shadow so (the exact kernel's state, then the held
        ticks) when a tick arrives out of order."""
        source = other._symbols.get(symbol)
        if source is None:
            self._symbols.pop(symbol, None)
            self._quiet.pop(symbol, None)
            return
        grids = []
        for g in source.grids:
            grid = _Grid(g.step)
            grid.price, grid.below, grid.above = g.price, g.below, g.above
            grid.armed = {k: list(latch) for k, latch in g.armed.items()}
            grid.first_up = dict(g.first_up)
            grid.first_down = dict(g.first_down)
            grids.append(grid)
        state = self._symbols[symbol] = _Symbol(grids)
        state.ath, state.ath_ts_ms = source.ath, source.ath_ts_ms
        state.atl, state.atl_ts_ms = source.atl, source.atl_ts_ms
        self._refresh_quiet(symbol, state)

    # -- the kernel protocol ----------------------------------------------------------

    def update(self, ticks: Sequence[Tick], watermarks: Mapping[str, int]) -> list[RecordBreak]:
        rows: list[RecordBreak] = []
        quiet = self._quiet
        get = quiet.get
        slow = self._tick
        for tick in ticks:
            band = get(tick.symbol)
            if band is None or not band[0] < tick.price < band[1]:
                slow(tick, rows)
        for group in self._groups:
            if any(group.pending.values()):
                limit = min(watermarks.get(m, _NEVER) for m in group.members)
                self._sync(group, limit, rows)
        return rows

    def flush(self) -> list[RecordBreak]:
        rows: list[RecordBreak] = []
        for group in self._groups:
            self._sync(group, 2**63, rows)
        return rows

    # -- the slow path ----------------------------------------------------------------

    def _tick(self, tick: Tick, rows: list[RecordBreak]) -> None:
        symbol, ts, price = tick.symbol, tick.ts_ms, tick.price
        state = self._symbol(symbol)
        if state.ath is None:
            state.ath = state.atl = price
            state.ath_ts_ms = state.atl_ts_ms = ts
        elif price > state.ath:
            rows.append(_row(symbol, "ath", ts, price, state.ath, 0.0, state.ath_ts_ms, 1))
            state.ath, state.ath_ts_ms = price, ts
            for group in self._groups_of.get(symbol, ()):
                group.pending[symbol].append((ts, price))
        elif price < state.atl:
            rows.append(_row(symbol, "atl", ts, price, state.atl, 0.0, state.atl_ts_ms, 1))
            state.atl, state.atl_ts_ms = price, ts
        for grid in state.grids:
            if grid.price is None:
                self._arm(grid, price)
            elif not grid.below < price < grid.above:
                self._cross(symbol, grid, ts, price, rows)
            else:
                continue  # same side of every threshold: the latches stay as they are
            self._refresh_grid(grid)
        self._refresh_quiet(symbol, state)

    def _cross(
        self, symbol: str, grid: _Grid, ts: int, price: float, rows: list[RecordBreak]
    ) -> None:
        """Move one grid's latches from grid.price to price, emitting the crossings."""
        before = grid.price
        assert before is not None
        if price == before:
            return
        step, lo_f, hi_f, armed = grid.step, self._lo_f, self._hi_f, grid.armed
        low, high = (before, price) if before < price else (price, before)
        ks = range(math.floor(low / hi_f / step) - 1, math.ceil(high / lo_f / step) + 2)
        for k in ks if price > before else reversed(ks):
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
                    first = grid.first_up
                    prev = first.get(k - 1)
                    rows.append(
                        _row(symbol, "level_up", ts, price, level, step, prev, int(k not in first))
                    )
                    first.setdefault(k, ts)
                    up = False
            elif price < level_lo:
                up = True
            if price <= level:
                if down:
                    first = grid.first_down
                    prev = first.get(k + 1)
                    rows.append(
                        _row(
                            symbol, "level_down", ts, price, level, step, prev, int(k not in first)
                        )
                    )
                    first.setdefault(k, ts)
                    down = False
            elif price > level_hi:
                down = True
            if level_lo <= price < level or level < price <= level_hi:
                armed[k] = [up, down]
        grid.price = price

    def _sync(self, group: _Group, limit: int, rows: list[RecordBreak]) -> None:
        """Take the group's ATH events older than every member's watermark, in ts order."""
        queues = [(m, group.pending[m]) for m in group.members]  # members are sorted
        span = self.config.sync_span_ms
        last_ath = group.last_ath
        while True:
            symbol, head = "", limit
            for member, queue in queues:
                if queue and queue[0][0] < head:
                    symbol, head = member, queue[0][0]
            if not symbol:
                break
            ts, price = group.pending[symbol].popleft()
            others = [(m, t) for m, t in last_ath.items() if m != symbol and ts - span <= t <= ts]
            last_ath[symbol] = ts
            if not others:
                continue
            if group.last_sync_ms is not None and ts - group.last_sync_ms <= span:
                continue
            prev = min(t for _, t in others)
            label = group_label([symbol, *(m for m, _ in others)])
            rows.append(_row(label, "sync_ath", ts, price, 0.0, 0.0, prev, 0))
            group.last_sync_ms = ts

    # -- snapshot ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "symbols": {
                symbol: {
                    "ath": s.ath,
                    "ath_ts_ms": s.ath_ts_ms,
                    "atl": s.atl,
                    "atl_ts_ms": s.atl_ts_ms,
                    "grids": [
                        {
                            "step": g.step,
                            "price": g.price,
                            "armed": [[k, up, down] for k, (up, down) in g.armed.items()],
                            "first_up": [[k, t] for k, t in g.first_up.items()],
                            "first_down": [[k, t] for k, t in g.first_down.items()],
                        }
                        for g in s.grids
                    ],
                }
                for symbol, s in self._symbols.items()
            },
            "groups": [
                {
                    "members": list(g.members),
                    "pending": {m: [list(e) for e in q] for m, q in g.pending.items()},
                    "last_ath": dict(g.last_ath),
                    "last_sync_ms": g.last_sync_ms,
                }
                for g in self._groups
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self._symbols = {}
        self._quiet = {}
        for symbol, s in state["symbols"].items():
            grids = []
            for g in s["grids"]:
                grid = _Grid(g["step"])
                grid.price = g["price"]
                grid.armed = {k: [up, down] for k, up, down in g["armed"]}
                grid.first_up = {k: t for k, t in g["first_up"]}
                grid.first_down = {k: t for k, t in g["first_down"]}
                if grid.price is not None:
                    self._refresh_grid(grid)
                grids.append(grid)
            sym = self._symbols[symbol] = _Symbol(grids)
            sym.ath, sym.ath_ts_ms = s["ath"], s["ath_ts_ms"]
            sym.atl, sym.atl_ts_ms = s["atl"], s["atl_ts_ms"]
            self._refresh_quiet(symbol, sym)
        by_members = {tuple(g["members"]): g for g in state["groups"]}
        for group in self._groups:
            saved = by_members.get(group.members)
            if saved is None:
                continue
            for member, events in saved["pending"].items():
                group.pending[member] = deque((ts, price) for ts, price in events)
            group.last_ath = dict(saved["last_ath"])
            group.last_sync_ms = saved["last_sync_ms"]


def _row(
    symbol: str,
    record: str,
    ts_ms: int,
    price: float,
    level: float,
    step: float,
    prev_ts_ms: int | None,
    first_time: int,
) -> RecordBreak:
    since_prev_s = None if prev_ts_ms is None else (ts_ms - prev_ts_ms) / 1000.0
    return RecordBreak(
        symbol, record, ts_ms, price, level, step, prev_ts_ms, since_prev_s, first_time
    )
