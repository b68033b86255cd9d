"""Record breaks: all-time highs and lows, round-number level crossings, synchronized highs.

Rows are of kind ``record_break``; the column ``record`` says which break it is (the
dict key ``kind`` already names the table): ``ath``, ``atl``, ``level_up``,
``level_down`` or ``sync_ath``. Decisions, per symbol (ticks in ts_ms order):

- ath / atl: a tick strictly above the all-time high (below the low). ``level`` is the
  previous record, ``prev_ts_ms`` the tick that set it, ``since_prev_s`` the seconds
  between, ``first_time`` 1 (a new extreme is always a first), ``from_level`` None (no
  level crossed; likewise on sync_ath rows). A tick equal to the
  record is no record and does not move its time.
- Fresh symbol: without a seed its first tick sets both records and the side of every
  level silently (no row).
- Warm-up: a symbol without a seed has seen nothing of its past, so "all-time" would
  mean "since its first tick" and every new high of a fresh simulated market would be
  announced. With ``warmup_ms`` W > 0 and ``first_ts_ms`` the stamp of the first tick
  the kernel saw of the symbol (its ticks come in event order, so the earliest), a tick
  stamped before ``first_ts_ms + W`` emits no ``ath``/``atl`` row and gives the sync
  groups no ATH event. Its records are tracked all the same: the first row after the
  warm-up must beat the warm-up's extreme, and its ``level``/``prev_ts_ms`` are that
  record and the tick that set it. Level crossings are not affected. A seeded symbol has
  no warm-up (the seed is its past), nor has a symbol restored from a snapshot taken
  before the warm-up existed (it has no ``first_ts_ms``: that deployment already
  announced its records). ``first_ts_ms`` is state (records_state.py), W is not: a
  changed ``record_warmup_ms`` applies to a restored state at once. W = 0 is the rule
  without warm-up.
- Seeds: a ``RecordSeed`` gives the records (and optionally the
  first upward/downward crossing times and the last price) so that a restart or a new
  deployment does not call the first tick a record. With ``seed.last_price`` the level
  sides come from that price and the first tick can already cross; without it the
  first tick sets the sides silently. Seeded first crossings may be whole spans of levels
  (``first_runs``: a row's ``[from_level, level]``), each at the cost of one level.
- Levels: for each step ``s`` of the symbol's grid, the levels are ``round(k * s, 9)``
  for integer k (round keeps 0.1-steps exact decimals). Prices are assumed > 0.
  Each level has two latches. Up: a tick at or above L fires ``level_up`` if the up
  latch is armed, then disarms it; the latch re-arms once a tick is below
  ``L * (1 - hysteresis)``. Down: a tick at or below L fires ``level_down`` if armed,
  re-arming once a tick is above ``L * (1 + hysteresis)``. The first tick (or the seed's
  last price) arms up-latches of the levels strictly above it and down-latches of the
  levels strictly below it. A tick never fires both directions.
- One row per tick, grid and direction, however far the tick moved: a tick firing
  several levels of a grid (a gap, a fat finger that passed validation) gives the row of
  the furthest level it fired (the highest for up, the lowest for down); every level it
  fired is crossed all the same (latches, first crossings), it just has no row of its
  own; the row's ``from_level`` is the nearest level it fired (``level`` itself for a
  single crossing), so ``[from_level, level]`` is every level the tick crossed (a seed
  from ClickHouse learns them all from it). What one tick emits is bounded (one row per
  grid, plus ath/atl), and its cost does not grow with the levels it spans: a price of
  5e7 on a grid of 100 would otherwise mean half a million rows. A grid does not see a
  price with more than ``MAX_BAND_LEVELS`` of its levels within its hysteresis of it
  (absurd for the grid): the grid stays as it was.
- ``first_time`` is 1 on the first crossing of that level in that direction ever (seeds
  included). Milestone velocity: a ``level_up`` row's ``prev_ts_ms`` is the first upward
  crossing of ``L - step``, a ``level_down`` row's that of the first downward crossing
  of ``L + step`` (None if never), ``since_prev_s`` the seconds between; the levels a
  tick fired on its way count as crossed by it.
- One row per key: the table's key is (symbol, record, step, level, ts_ms) and carries
  no version, so a level fired again within the same millisecond (up, down and up again
  through it) gives no second row: FINAL could keep the second, with ``first_time`` 0,
  and lose the first crossing.
- sync_ath: ATH events (ath rows: none in a warm-up) of the members of a sync group are
  taken in (ts_ms, symbol,
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
Only levels whose hysteresis band holds the current price keep explicit latch states
(2 * h * price / step of them: a fraction of one on a sane grid); the levels a move
passes by entirely are handled as one range, and first crossings are kept as runs of
levels crossed by the same tick. That level arithmetic is in records_levels.py, the
state and its snapshot form in records_state.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.kernels.records_levels import NEVER, Crossing, Grid, level_price
from processors.kernels.records_state import (
    SymbolState,
    SyncGroup,
    restore_groups,
    restore_symbols,
    snapshot,
)
from tickstream.contracts import RecordBreak
from tickstream.contracts.rows import group_label
from tickstream.model import Tick

__all__ = [
    "DAY_MS",
    "MAX_BAND_LEVELS",
    "RecordConfig",
    "RecordKernel",
    "RecordSeed",
    "Run",
    "level_price",
]

DAY_MS = 86_400_000
_NEVER = NEVER
MAX_BAND_LEVELS = 2_048
"""A grid ignores a price whose hysteresis neighbourhood (price / (1 + h) to
price / (1 - h)) holds more levels than this: with levels that dense a crossing means
nothing, and each would need its latches looked at (the cost would grow with the price:
a hostile 1e300 must not stall the processor). For a grid of 100 with h 0.001 that is
above 1e8. Read at each tick from this module (tests lower it)."""

Run = tuple[float, float, float, int]
"""(step, from_level, level, ts_ms): every level of the grid from one to the other
(either order) first crossed at ts_ms."""


@dataclass(frozen=True, slots=True)
class RecordSeed:
    """Known history of a symbol; crossing maps are keyed (step, level) -> first ts_ms.

    ``first_runs``/``first_runs_down`` are spans of levels crossed by one tick (a
    record_break row's ``[from_level, level]``): kept as spans, a jump across a million
    levels costs a seed what one level costs. Where a level is known more than once the
    earliest time wins."""

    ath: float
    ath_ts_ms: int
    atl: float
    atl_ts_ms: int
    first_crossings: Mapping[tuple[float, float], int] = field(default_factory=dict)
    first_crossings_down: Mapping[tuple[float, float], int] = field(default_factory=dict)
    last_price: float | None = None
    first_runs: Sequence[Run] = ()
    first_runs_down: Sequence[Run] = ()


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
    warmup_ms: int = 0
    """An unseeded symbol's records warm-up (event time from its first tick; 0: none)."""

    def __post_init__(self) -> None:
        if not 0 <= self.hysteresis < 1:
            raise ValueError("hysteresis must be in [0, 1)")
        if self.warmup_ms < 0:
            raise ValueError("warmup_ms must be >= 0")
        for steps in [*self.level_steps.values(), self.default_steps]:
            if any(not s > 0 for s in steps):
                raise ValueError("every level step must be > 0")
        if self.sync_span_ms < 0:
            raise ValueError("sync_span_ms must be >= 0")

    def steps_for(self, symbol: str) -> tuple[float, ...]:
        return tuple(float(s) for s in self.level_steps.get(symbol, self.default_steps))


def _seeded_spans(
    step: float, crossings: Mapping[tuple[float, float], int], runs: Sequence[Run]
) -> list[tuple[int, int, int]]:
    """(ts, first k, last k) of a grid's seeded first crossings, earliest first: filled in
    that order, the earliest time of a level known twice wins."""
    spans = [
        (ts, k, k)
        for (s, level), ts in crossings.items()
        if float(s) == step
        for k in (round(level / s),)
    ]
    for s, a, b, ts in runs:
        if float(s) == step:
            ka, kb = round(a / s), round(b / s)
            spans.append((ts, min(ka, kb), max(ka, kb)))
    return sorted(spans)


class RecordKernel:
    """ATH/ATL, level crossings and sync ATHs; rows of kind ``record_break``."""

    def __init__(self, config: RecordConfig | None = None) -> None:
        self.config = config or RecordConfig()
        h = self.config.hysteresis
        self._lo_f = 1.0 - h
        self._hi_f = 1.0 + h
        self._band_width = 1 / self._lo_f - 1 / self._hi_f  # levels near a price, per step
        self._symbols: dict[str, SymbolState] = {}
        self._quiet: dict[str, tuple[float, float]] = {}
        self._groups = [
            SyncGroup(tuple(sorted(set(g)))) for g in self.config.sync_groups if len(set(g)) >= 2
        ]
        self._groups_of: dict[str, list[SyncGroup]] = {}
        for group in self._groups:
            for member in group.members:
                self._groups_of.setdefault(member, []).append(group)
                seed = self.config.seeds.get(member)
                if seed is not None:
                    group.last_ath[member] = seed.ath_ts_ms
        for symbol in self.config.seeds:
            self._symbol(symbol)

    # -- state ------------------------------------------------------------------------

    def _symbol(self, symbol: str) -> SymbolState:
        state = self._symbols.get(symbol)
        if state is not None:
            return state
        grids = [Grid(s) for s in self.config.steps_for(symbol)]
        state = self._symbols[symbol] = SymbolState(grids)
        seed = self.config.seeds.get(symbol)
        if seed is not None:
            state.ath, state.ath_ts_ms = float(seed.ath), seed.ath_ts_ms
            state.atl, state.atl_ts_ms = float(seed.atl), seed.atl_ts_ms
            for grid in state.grids:
                for target, crossings, runs in (
                    (grid.first_up, seed.first_crossings, seed.first_runs),
                    (grid.first_down, seed.first_crossings_down, seed.first_runs_down),
                ):
                    for ts, a, b in _seeded_spans(grid.step, crossings, runs):
                        target.fill(a, b, ts)
                if seed.last_price is not None:
                    grid.arm(float(seed.last_price))
                    grid.refresh(self._lo_f, self._hi_f)
            self._refresh_quiet(symbol, state)
        return state

    def _refresh_quiet(self, symbol: str, state: SymbolState) -> None:
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

    def sync_groups(self) -> list[SyncGroup]:
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
        state = self._symbols[symbol] = source.copy()
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
            state.first_ts_ms = ts  # unseeded: its warm-up starts here
        elif price > state.ath:
            if self._warm(state, ts):
                rows.append(_row(symbol, "ath", ts, price, state.ath, 0.0, state.ath_ts_ms, 1))
                for group in self._groups_of.get(symbol, ()):
                    group.pending[symbol].append((ts, price))
            state.ath, state.ath_ts_ms = price, ts
        elif price < state.atl:
            if self._warm(state, ts):
                rows.append(_row(symbol, "atl", ts, price, state.atl, 0.0, state.atl_ts_ms, 1))
            state.atl, state.atl_ts_ms = price, ts
        dense = price * self._band_width
        lo_f, hi_f = self._lo_f, self._hi_f
        for grid in state.grids:
            if dense > MAX_BAND_LEVELS * grid.step:
                continue  # beyond the grid's range: it does not see this price
            if grid.price is None:
                grid.arm(price)
            elif not grid.below < price < grid.above:
                crossing = grid.cross(ts, price, lo_f, hi_f)
                if crossing is not None:
                    rows.append(_level_row(symbol, ts, price, grid.step, crossing))
            else:
                continue  # same side of every threshold: the latches stay as they are
            grid.refresh(lo_f, hi_f)
        self._refresh_quiet(symbol, state)

    def _warm(self, state: SymbolState, ts: int) -> bool:
        """Whether a record at ``ts`` is announced: past the symbol's warm-up, if it has
        one (W = 0 asks nothing of the stamp: a shadow fed out of order stays as it was)."""
        warmup = self.config.warmup_ms
        first = state.first_ts_ms
        return not warmup or first is None or ts - first >= warmup

    def first_ts_ms(self, symbol: str) -> int | None:
        """The stamp of the first tick seen of an unseeded symbol (None: seeded, restored
        from before the warm-up, or not seen)."""
        state = self._symbols.get(symbol)
        return None if state is None else state.first_ts_ms

    def _sync(self, group: SyncGroup, limit: int, rows: list[RecordBreak]) -> None:
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
        return snapshot(self._symbols, self._groups)

    def restore(self, state: dict[str, Any]) -> None:
        self._symbols = restore_symbols(state, self._lo_f, self._hi_f)
        self._quiet = {}
        for symbol, sym in self._symbols.items():
            self._refresh_quiet(symbol, sym)
        restore_groups(self._groups, state)


def _level_row(symbol: str, ts_ms: int, price: float, step: float, c: Crossing) -> RecordBreak:
    record = "level_up" if c.rising else "level_down"
    return _row(
        symbol, record, ts_ms, price, c.level, step, c.prev_ts_ms, c.first_time, c.from_level
    )


def _row(
    symbol: str,
    record: str,
    ts_ms: int,
    price: float,
    level: float,
    step: float,
    prev_ts_ms: int | None,
    first_time: int,
    from_level: float | None = None,
) -> RecordBreak:
    since_prev_s = None if prev_ts_ms is None else (ts_ms - prev_ts_ms) / 1000.0
    return RecordBreak(
        symbol, record, ts_ms, price, level, step, prev_ts_ms, since_prev_s, first_time, from_level
    )
