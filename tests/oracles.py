"""Brute-force references for the analytics kernels, and the harness that feeds kernels.

Each oracle takes every symbol's full, time-ordered tick list and computes the rows
by the definition in the most direct way (scan everything, keep every level's state
explicitly, recompute statistics from scratch). They share no code with the kernels.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from hypothesis import strategies as st

from tickstream.contracts import Heartbeat
from tickstream.model import Tick

Streams = dict[str, list[Tick]]
Row = dict[str, Any]

# -- random streams ---------------------------------------------------------------------

DT_CHOICES = (0, 0, 1, 7, 250, 999, 1_000, 1_001, 2_500, 9_000, 31_000, 65_000)


@st.composite
def symbol_stream(
    draw: st.DrawFn,
    symbol: str,
    max_ticks: int = 40,
    price_cents: tuple[int, int] = (100, 10_000),
    dts: Sequence[int] = DT_CHOICES,
) -> list[Tick]:
    """One symbol's ticks in time order: equal timestamps, duplicates, small and big moves."""
    ts = draw(st.integers(0, 5_000))
    cents = draw(st.integers(*price_cents))
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(dts),
                st.one_of(
                    st.integers(-3, 3),  # noise
                    st.integers(-400, 400),  # a move
                    st.sampled_from([-50_000, 50_000]),  # a jump of +-50 %
                ),
                st.booleans(),  # repeat the previous tick exactly
            ),
            max_size=max_ticks,
        )
    )
    ticks = [Tick(symbol, ts, cents / 100)]
    for dt, move, dup in steps:
        if dup:
            ticks.append(ticks[-1])
            continue
        ts += dt
        if abs(move) >= 1000:
            cents = cents + cents * move // 100_000
        else:
            cents += move
        cents = max(cents, 1)
        ticks.append(Tick(symbol, ts, cents / 100))
    return ticks


def interleave(streams: Mapping[str, Sequence[Tick]], rnd: random.Random) -> list[Tick]:
    """A random merge that keeps each symbol's own order."""
    pos = {s: 0 for s, ticks in streams.items() if ticks}
    out: list[Tick] = []
    while pos:
        symbol = rnd.choice(sorted(pos))
        out.append(streams[symbol][pos[symbol]])
        pos[symbol] += 1
        if pos[symbol] == len(streams[symbol]):
            del pos[symbol]
    return out


def feed(
    make: Callable[[], Any],
    streams: Mapping[str, Sequence[Tick]],
    rnd: random.Random,
    *,
    snapshot: bool = True,
) -> list[Row]:
    """Run a kernel over a random interleaving, cut into random batches, with a
    snapshot -> orjson -> restore into a fresh kernel at a random point; then flush.
    Rows come back as they travel (the contract's JSON objects), to compare with oracles.

    Watermarks follow one of three valid policies drawn at random: the per-symbol max
    ts seen so far; the next undelivered tick's ts (the tightest valid bound); none.
    """
    order = interleave(streams, rnd)
    cuts = sorted(rnd.sample(range(1, len(order)), min(len(order) - 1, rnd.randint(0, 8))))
    if len(order) > 1 and rnd.random() < 0.3:
        cuts = list(range(1, len(order)))  # tick by tick
    bounds = [0, *cuts, len(order)]
    batches = [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    policy = rnd.choice(("seen", "next", "none"))
    snap_at = rnd.randint(0, len(batches)) if snapshot else -1
    remaining = {s: list(ticks) for s, ticks in streams.items()}
    seen: dict[str, int] = {}
    kernel = make()
    rows: list[Row] = []
    for i, batch in enumerate(batches):
        if i == snap_at:
            kernel = _reborn(make, kernel)
        for tick in batch:
            seen[tick.symbol] = max(seen.get(tick.symbol, tick.ts_ms), tick.ts_ms)
            remaining[tick.symbol].pop(0)
        watermarks: dict[str, int] = {}
        if policy == "seen":
            watermarks = dict(seen)
        elif policy == "next":
            for symbol, ts in seen.items():
                rest = remaining[symbol]
                watermarks[symbol] = rest[0].ts_ms if rest else ts + rnd.choice((0, 1, 10**7))
        rows.extend(r.to_doc() for r in kernel.update(batch, watermarks))
    if snap_at == len(batches):
        kernel = _reborn(make, kernel)
    rows.extend(r.to_doc() for r in kernel.flush())
    return rows


def _reborn(make: Callable[[], Any], kernel: Any) -> Any:
    state = orjson.loads(orjson.dumps(kernel.snapshot()))
    fresh = make()
    fresh.restore(state)
    return fresh


def by_key(rows: Sequence[Row], *keys: str) -> dict[tuple[Any, ...], list[Row]]:
    """Rows grouped by identity keys, each group in emission order."""
    out: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        out.setdefault(tuple(row[k] for k in keys), []).append(row)
    return out


def assert_same_rows(
    actual: Sequence[Row],
    expected: Sequence[Row],
    keys: Sequence[str],
    approx: Sequence[str] = (),
    rel: float = 1e-9,
) -> None:
    """Same rows per identity key, in the same order; ``approx`` columns within rel."""
    got, want = by_key(actual, *keys), by_key(expected, *keys)
    assert sorted(got, key=repr) == sorted(want, key=repr), "different keys"
    for key, rows in want.items():
        assert len(got[key]) == len(rows), (key, got[key], rows)
        for g, w in zip(got[key], rows, strict=True):
            assert g.keys() == w.keys(), (g, w)
            for col, value in w.items():
                if col in approx and value is not None and g[col] is not None:
                    assert math.isclose(g[col], value, rel_tol=rel, abs_tol=rel), (col, g, w)
                else:
                    assert g[col] == value, (col, g, w)


# -- rolling highs and lows --------------------------------------------------------------


def rolling_oracle(streams: Streams, windows_ms: Mapping[str, int], stamp_ms: int) -> list[Row]:
    rows: list[Row] = []
    for symbol, ticks in streams.items():
        last_of_period: dict[int, int] = {}
        for i, t in enumerate(ticks):
            last_of_period[t.ts_ms - t.ts_ms % stamp_ms] = i
        for period, j in last_of_period.items():
            now = ticks[j].ts_ms
            for label, window in windows_ms.items():
                inside = [t for t in ticks[: j + 1] if now - window < t.ts_ms <= now]
                high = max(t.price for t in inside)
                low = min(t.price for t in inside)
                rows.append(
                    {
                        "kind": "rolling_high",
                        "symbol": symbol,
                        "window": label,
                        "ts_ms": period,
                        "high": high,
                        "high_ts_ms": [t.ts_ms for t in inside if t.price == high][-1],
                        "low": low,
                        "low_ts_ms": [t.ts_ms for t in inside if t.price == low][-1],
                    }
                )
    return rows


# -- record breaks -----------------------------------------------------------------------


def _record_row(symbol, record, ts, price, level, step, prev, first, from_level=None) -> Row:  # noqa: ANN001
    return {
        "kind": "record_break",
        "symbol": symbol,
        "record": record,
        "ts_ms": ts,
        "price": price,
        "level": level,
        "step": step,
        "prev_ts_ms": prev,
        "since_prev_s": None if prev is None else (ts - prev) / 1000,
        "first_time": first,
        "from_level": from_level,
    }


def records_oracle(streams: Streams, config: Any) -> list[Row]:
    """Every level of a finite range keeps both latches explicitly; ticks replayed one by one.

    Warm-up: an unseeded symbol's ath/atl at a tick stamped before its earliest tick's
    stamp plus ``config.warmup_ms`` is no row and no ATH event (the record still moves)."""
    from processors.kernels import records as records_module

    h = config.hysteresis
    warmup = config.warmup_ms
    rows: list[Row] = []
    emitted: set[tuple[Any, ...]] = set()  # (symbol, record, step, level, ts_ms): the table key
    ath_events: list[tuple[int, str, int, float]] = []
    for symbol, ticks in streams.items():
        seed = config.seeds.get(symbol)
        steps = [float(s) for s in config.level_steps.get(symbol, config.default_steps)]
        ath = atl = ath_ts = atl_ts = None
        if seed is not None:
            ath, ath_ts, atl, atl_ts = seed.ath, seed.ath_ts_ms, seed.atl, seed.atl_ts_ms
        prices = [t.price for t in ticks]
        if seed is not None and seed.last_price is not None:
            prices.append(seed.last_price)
        grids = []
        for step in steps:
            levels = {}
            if prices:
                k0 = math.floor(min(prices) / (1 + h) / step) - 3
                k1 = math.ceil(max(prices) / (1 - h) / step) + 3
                levels = {k: round(k * step, 9) for k in range(k0, k1 + 1)}
            first_up: dict[int, int] = {}
            first_down: dict[int, int] = {}
            if seed is not None:
                for (s, level), ts in seed.first_crossings.items():
                    if float(s) == step:
                        first_up[round(level / s)] = ts
                for (s, level), ts in seed.first_crossings_down.items():
                    if float(s) == step:
                        first_down[round(level / s)] = ts
                for firsts, runs in (
                    (first_up, seed.first_runs),
                    (first_down, seed.first_runs_down),
                ):
                    for s, a, b, ts in runs:
                        if float(s) == step:
                            ka, kb = sorted((round(a / s), round(b / s)))
                            for k in range(ka, kb + 1):  # the earliest known time wins
                                firsts[k] = min(ts, firsts.get(k, ts))
            grids.append([step, levels, None, None, first_up, first_down])
        if seed is not None and seed.last_price is not None:
            for grid in grids:
                _, levels = grid[0], grid[1]
                grid[2] = {k: seed.last_price < lv for k, lv in levels.items()}
                grid[3] = {k: seed.last_price > lv for k, lv in levels.items()}
        n_ath = 0
        first_ts = min((t.ts_ms for t in ticks), default=0)
        for t in ticks:
            p = t.price
            warm = seed is not None or t.ts_ms >= first_ts + warmup
            if ath is None:
                ath = atl = p
                ath_ts = atl_ts = t.ts_ms
            elif p > ath:
                if warm:
                    rows.append(_record_row(symbol, "ath", t.ts_ms, p, ath, 0.0, ath_ts, 1))
                    ath_events.append((t.ts_ms, symbol, n_ath, p))
                    n_ath += 1
                ath, ath_ts = p, t.ts_ms
            elif p < atl:
                if warm:
                    rows.append(_record_row(symbol, "atl", t.ts_ms, p, atl, 0.0, atl_ts, 1))
                atl, atl_ts = p, t.ts_ms
            for grid in grids:
                step, levels, up, down, first_up, first_down = grid
                if p * (1 / (1 - h) - 1 / (1 + h)) > records_module.MAX_BAND_LEVELS * step:
                    continue  # levels too dense at this price: the grid does not see it
                if up is None:
                    grid[2] = {k: p < lv for k, lv in levels.items()}
                    grid[3] = {k: p > lv for k, lv in levels.items()}
                    continue
                ups, downs = [], []
                for k, lv in levels.items():
                    if p >= lv and up[k]:
                        ups.append(k)
                        up[k] = False
                    elif p < lv * (1 - h):
                        up[k] = True
                    if p <= lv and down[k]:
                        downs.append(k)
                        down[k] = False
                    elif p > lv * (1 + h):
                        down[k] = True
                # one row per tick, grid and direction: the furthest level fired; every
                # level fired counts as crossed; a key already emitted gives no second row
                for record, fired, firsts, top, below in (
                    ("level_up", ups, first_up, max, -1),
                    ("level_down", downs, first_down, min, 1),
                ):
                    if not fired:
                        continue
                    k = top(fired)
                    nearest = min(fired) if top is max else max(fired)
                    first = int(k not in firsts)
                    for j in fired:
                        firsts.setdefault(j, t.ts_ms)
                    key = (symbol, record, step, levels[k], t.ts_ms)
                    if key in emitted:
                        continue
                    emitted.add(key)
                    prev = firsts.get(k + below)
                    rows.append(
                        _record_row(
                            symbol,
                            record,
                            t.ts_ms,
                            p,
                            levels[k],
                            step,
                            prev,
                            first,
                            levels[nearest],
                        )
                    )
    for group in config.sync_groups:
        members = sorted(set(group))
        if len(members) < 2:
            continue
        events = sorted(e for e in ath_events if e[1] in members)
        last_sync = None
        for i, (ts, symbol, _, price) in enumerate(events):
            latest: dict[str, int] = {}
            for m in members:
                seed = config.seeds.get(m)
                if seed is not None:
                    latest[m] = seed.ath_ts_ms
            for ets, esym, _, _ in events[:i]:
                latest[esym] = ets
            others = {
                m: t
                for m, t in latest.items()
                if m != symbol and ts - config.sync_span_ms <= t <= ts
            }
            if not others or (last_sync is not None and ts - last_sync <= config.sync_span_ms):
                continue
            label = "+".join(sorted([symbol, *others]))
            rows.append(
                _record_row(label, "sync_ath", ts, price, 0.0, 0.0, min(others.values()), 0)
            )
            last_sync = ts
    return rows


# -- divergence windows ------------------------------------------------------------------


def _last_at(ticks: Sequence[Tick], t_ms: int) -> Tick | None:
    before = [t for t in ticks if t.ts_ms <= t_ms]
    return before[-1] if before else None


def divergence_oracle(streams: Streams, config: Any) -> list[Row]:
    clock, lookback, horizon = config.clock_ms, config.lookback_ms, config.return_horizon_ms
    rows: list[Row] = []
    for a, b in config.pairs:
        ta, tb = streams.get(a, []), streams.get(b, [])
        if not ta or not tb:
            continue

        def up(ts: int) -> int:
            return -(-ts // clock) * clock

        start = max(up(ta[0].ts_ms), up(tb[0].ts_ms))
        end = max(up(ta[-1].ts_ms), up(tb[-1].ts_ms))
        series: dict[str, list[tuple[int, float]]] = {"ratio": [], "return_spread": []}
        for t in range(start, end + 1, clock):
            la, lb = _last_at(ta, t), _last_at(tb, t)
            assert la is not None and lb is not None
            if max(la.ts_ms, lb.ts_ms) <= t - lookback:
                continue  # stale: neither symbol ticked within the lookback
            series["ratio"].append((t, la.price / lb.price))
            ba, bb = _last_at(ta, t - horizon), _last_at(tb, t - horizon)
            if ba is not None and bb is not None:
                spread = math.log(la.price / ba.price) - math.log(lb.price / bb.price)
                series["return_spread"].append((t, spread))
        for metric, values in series.items():
            window: list[Any] | None = None
            for t, v in values:
                earlier = [x for s, x in values if t - lookback < s < t]
                z = None
                if len(earlier) >= config.min_samples:
                    n = len(earlier)
                    mean = math.fsum(earlier) / n
                    std = math.sqrt(math.fsum((x - mean) ** 2 for x in earlier) / (n - 1))
                    if std > 1e-9 * max(1.0, abs(mean)):
                        z = (v - mean) / std
                if window is not None:
                    if z is not None and window[0] * z < config.z_close:
                        rows.append(_div_row(f"{a}/{b}", metric, window, t, v))
                        window = None
                    elif (v - window[4]) * window[0] > 0:
                        window[4:7] = [v, t, z]
                if window is None and z is not None and abs(z) >= config.z_open:
                    window = [1 if z > 0 else -1, t, v, z, v, t, z]
                    rows.append(_div_row(f"{a}/{b}", metric, window, None, None))
    return rows


def _div_row(pair, metric, w, closed, close) -> Row:  # noqa: ANN001
    return {
        "kind": "divergence_window",
        "pair": pair,
        "metric": metric,
        "direction": w[0],
        "opened_at_ms": w[1],
        "closed_at_ms": closed,
        "open_value": w[2],
        "peak_value": w[4],
        "peak_at_ms": w[5],
        "close_value": close,
        "z_open_value": w[3],
        "z_peak": w[6],
    }


# -- rolling breaks ----------------------------------------------------------------------


def rolling_break_rows(
    symbol: str, tick: Tick, earlier: Sequence[Tick], windows_ms: Mapping[str, int]
) -> list[Row]:
    """The rolling breaks of one tick against the ticks before it, straight from the
    definition: every earlier tick stamped in (t - W, t], compared one by one, in the
    windows that the history known (the earliest stamp of these ticks) covers."""
    rows: list[Row] = []
    first_ts = min([tick.ts_ms, *(e.ts_ms for e in earlier)])
    for record in ("new_high", "new_low"):
        for label, window in sorted(windows_ms.items(), key=lambda kv: kv[1]):
            if tick.ts_ms - first_ts < window:
                continue  # the history does not cover the window
            inside = [e for e in earlier if tick.ts_ms - window < e.ts_ms <= tick.ts_ms]
            if not inside:
                continue
            best = (
                max(e.price for e in inside)
                if record == "new_high"
                else min(e.price for e in inside)
            )
            beats = tick.price > best if record == "new_high" else tick.price < best
            if not beats:
                continue
            rows.append(
                {
                    "kind": "rolling_break",
                    "symbol": symbol,
                    "window": label,
                    "record": record,
                    "ts_ms": tick.ts_ms,
                    "price": tick.price,
                    "prev": best,
                    "prev_ts_ms": max(e.ts_ms for e in inside if e.price == best),
                }
            )
    return rows


def rolling_breaks_oracle(streams: Streams, windows_ms: Mapping[str, int]) -> list[Row]:
    """Each symbol's ticks in event order; every tick against all the ticks before it."""
    rows: list[Row] = []
    for symbol, ticks in streams.items():
        for i, tick in enumerate(ticks):
            rows.extend(rolling_break_rows(symbol, tick, ticks[:i], windows_ms))
    return rows


# -- arrivals out of order ----------------------------------------------------------------


def ordering_oracle(
    arrivals: Sequence[Tick],
    lateness: Callable[[str], int],
    max_jump: Callable[[str], int] | None = None,
    confirm: int | None = None,
) -> tuple[list[tuple[int, int, Tick]], list[int]]:
    """The ordering stage's acceptance rules by brute force (``ordering_reference``).
    Returns (accepted as (ts, arrival number, tick), arrival numbers of the late ones)."""
    kept, late, _ = ordering_reference(arrivals, lateness, max_jump, confirm)
    return kept, late


def ordering_reference(
    arrivals: Sequence[Tick | Heartbeat],
    lateness: Callable[[str], int],
    max_jump: Callable[[str], int] | None = None,
    confirm: int | None = None,
) -> tuple[list[tuple[int, int, Tick]], list[int], dict[str, int]]:
    """The ordering stage's acceptance rules by brute force (ordering.py's docstring).

    Per symbol: a tick is late when older than the symbol's clock minus the lateness. The
    clock follows every arrival stamped within ``max_jump`` of it (0: no limit) and then
    forgets the candidates; an arrival stamped further (or any, before the symbol has a
    clock) is a candidate instead. A live candidate's confirmations are the accepted
    arrivals of its symbol after it stamped no more than ``max_jump`` before it, counted
    afresh each time; at ``confirm`` of them the clock goes to the earliest such
    candidate, then takes in every candidate within reach until none is. At most
    ``MAX_CANDIDATES`` live at once: past that, the earliest arrival is forgotten. A
    heartbeat at T, with a clock and clock < T <= clock + ``max_jump`` (any T above the
    clock at 0), moves the clock to T and forgets the candidates; any other changes nothing.
    Returns (accepted as (ts, arrival number, tick), arrival numbers of the late ones,
    each symbol's final clock).
    """
    from processors.kernels.ordering import JUMP_CONFIRM_TICKS, MAX_CANDIDATES, MAX_JUMP_MS

    jump_of = max_jump or (lambda _s: MAX_JUMP_MS)
    need = JUMP_CONFIRM_TICKS if confirm is None else confirm
    clocks: dict[str, int] = {}
    live: dict[str, list[int]] = {}  # symbol -> arrival numbers of live candidates
    accepted_by: dict[str, list[int]] = {}  # symbol -> arrival numbers accepted so far
    kept: list[tuple[int, int, Tick]] = []
    late: list[int] = []
    for n, t in enumerate(arrivals):
        symbol = t.symbol
        clock = clocks.get(symbol)
        jump = jump_of(symbol)
        candidates = live.setdefault(symbol, [])
        if isinstance(t, Heartbeat):
            if clock is not None and clock < t.ts_ms and (jump == 0 or t.ts_ms <= clock + jump):
                clocks[symbol] = t.ts_ms
                candidates.clear()
            continue
        if clock is not None and t.ts_ms < clock - lateness(symbol):
            late.append(n)
            continue
        kept.append((t.ts_ms, n, t))
        accepted_by.setdefault(symbol, []).append(n)
        if jump == 0 or (clock is not None and t.ts_ms <= clock + jump):
            clocks[symbol] = t.ts_ms if clock is None else max(clock, t.ts_ms)
            candidates.clear()
            continue
        candidates.append(n)
        if len(candidates) > MAX_CANDIDATES:
            candidates.remove(min(candidates))

        def confirmations(c: int) -> int:
            return sum(
                1
                for m in accepted_by[symbol]  # noqa: B023
                if m > c and arrivals[m].ts_ms >= arrivals[c].ts_ms - jump  # noqa: B023
            )

        while True:
            firm = [c for c in candidates if confirmations(c) >= need]
            if not firm:
                break
            start = min(arrivals[c].ts_ms for c in firm)
            clock = start if clock is None else max(clock, start)
            while True:
                near = [c for c in candidates if arrivals[c].ts_ms <= clock + jump]
                if not near:
                    break
                for c in near:
                    clock = max(clock, arrivals[c].ts_ms)
                    candidates.remove(c)
            clocks[symbol] = clock
    return kept, late, clocks


def accepted_in_event_order(
    arrivals: Sequence[Tick],
    lateness: Callable[[str], int],
    max_jump: Callable[[str], int] | None = None,
    confirm: int | None = None,
) -> tuple[Streams, list[Tick]]:
    """The ordering stage's rules by brute force (``ordering_oracle``). Returns
    (accepted streams, each symbol's in (ts, arrival) order; late ticks)."""
    kept, late = ordering_oracle(arrivals, lateness, max_jump, confirm)
    by_symbol: dict[str, list[tuple[int, int, Tick]]] = {}
    for entry in kept:
        by_symbol.setdefault(entry[2].symbol, []).append(entry)
    streams = {
        s: [t for _, _, t in sorted(v, key=lambda e: (e[0], e[1]))] for s, v in by_symbol.items()
    }
    return streams, [arrivals[n] for n in late]


def jumble(ticks: Sequence[Tick], rnd: random.Random, share: float, reach: int) -> list[Tick]:
    """Arrival order with some ticks moved up to ``reach`` places later (earlier-stamped
    ticks arriving after later-stamped ones)."""
    out = list(ticks)
    for i in range(len(out)):
        if rnd.random() < share:
            j = min(len(out) - 1, i + rnd.randint(1, reach))
            out.insert(j, out.pop(i))
    return out
