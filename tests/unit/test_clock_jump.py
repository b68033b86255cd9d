"""One tick stamped far ahead must not make the good ticks after it late (ordering.py).

Validation lets through ticks stamped up to five minutes ahead of the wall clock while the
allowed lateness is seconds: a single such tick used to move its symbol's clock, and every
in-order tick after it came too late for bars, records, rolling windows and divergence.
A genuine jump (the whole feed moves on: a weekend, an outage) must still be followed.
"""

from __future__ import annotations

import random
from collections import defaultdict

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracles import ordering_oracle

from processors.kernels import ordering
from processors.kernels.analytics import Analytics, AnalyticsConfig
from processors.kernels.ordering import Reorderer
from tickstream.model import Tick

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000


def bar_ticks(rows: list) -> int:
    return sum(r["ticks"] for r in rows if r["kind"] == "bar_1m")


def test_one_tick_stamped_ahead_makes_no_good_tick_late() -> None:
    ticks = [Tick("XAU", T0 + i * 400, 5_000.0 + i % 5) for i in range(760)]
    outlier = Tick("XAU", T0 + 10 * 400 + 290_000, 5_001.0)
    arrivals = [*ticks[:10], outlier, *ticks[10:]]
    analytics = Analytics(AnalyticsConfig(allowed_lateness_ms=2_000))
    rows, late = [], []
    for i in range(0, len(arrivals), 50):
        step = analytics.update(arrivals[i : i + 50])
        rows += step.rows
        late += step.late
    assert late == []
    rows += analytics.flush().rows
    assert bar_ticks(rows) == 761  # the outlier too, in its own minute
    minute = outlier.ts_ms - outlier.ts_ms % 60_000
    (bar,) = [r for r in rows if r["kind"] == "bar_1m" and r["ts_ms"] == minute]
    assert bar["ticks"] == 1 + sum(1 for t in ticks if t.ts_ms - t.ts_ms % 60_000 == minute)


def test_a_first_tick_stamped_ahead_sets_no_clock() -> None:
    analytics = Analytics(AnalyticsConfig(allowed_lateness_ms=2_000))
    first = analytics.update([Tick("XAG", T0 + 290_000, 100.0)])
    assert analytics.ordering.newest("XAG") is None  # one tick alone is no clock
    steps = [analytics.update([Tick("XAG", T0 + i * 1_000, 99.0)]) for i in range(100)]
    assert first.late == [] and all(s.late == [] for s in steps)
    assert analytics.ordering.newest("XAG") == T0 + 99_000


def test_a_genuine_jump_is_followed() -> None:
    """After a weekend the whole feed is two days ahead: confirmed by the next tick, the
    clock follows, Friday's bars close, and a straggler from Friday is late again."""
    reorderer = Reorderer(2_000)
    friday = [Tick("XAU", T0 + i * 1_000, 5_000.0) for i in range(10)]
    assert reorderer.push(friday) == (friday[:8], [])
    monday = T0 + 2 * DAY_MS
    released, late = reorderer.push([Tick("XAU", monday, 5_050.0)])
    assert (released, late) == ([], [])  # a candidate: the clock stays on Friday
    assert reorderer.newest("XAU") == T0 + 9_000
    released, late = reorderer.push([Tick("XAU", monday + 500, 5_051.0)])
    assert [t.ts_ms for t in released] == [T0 + 8_000, T0 + 9_000]
    assert reorderer.newest("XAU") == monday + 500
    straggler = Tick("XAU", T0 + 9_500, 5_000.0)
    assert reorderer.push([straggler]) == ([], [straggler])


def test_ticks_in_reach_refute_a_candidate() -> None:
    """Two ticks ahead in a row confirm each other with jump_confirm_ticks=1, not with 2
    when a good tick comes between (it refutes them) or with 2 outliers only."""
    good = [Tick("XAU", T0 + i * 1_000, 5_000.0) for i in range(20)]
    outliers = [Tick("XAU", T0 + 290_000, 5_001.0), Tick("XAU", T0 + 291_000, 5_001.0)]
    for confirm, arrivals, late in (
        (2, [*good[:5], *outliers, *good[5:]], 0),
        (1, [*good[:5], outliers[0], good[5], outliers[1], *good[6:]], 0),
        (1, [*good[:5], *outliers, *good[5:]], 15),  # a burst of two is a jump at 1
    ):
        reorderer = Reorderer(2_000, jump_confirm_ticks=confirm)
        assert len(reorderer.push(arrivals)[1]) == late, (confirm, late)


def test_max_jump_0_is_the_plain_clock() -> None:
    reorderer = Reorderer(2_000, max_jump_ms=0)
    first = Tick("XAU", T0 + 290_000, 5_001.0)
    assert reorderer.push([first]) == ([], [])
    assert reorderer.newest("XAU") == T0 + 290_000
    good = Tick("XAU", T0, 5_000.0)
    assert reorderer.push([good]) == ([], [good])


# -- against the brute-force rules -------------------------------------------------------


@st.composite
def arrivals_with_jumps(draw: st.DrawFn) -> list[Tick]:
    """Per symbol a feed moving forward with jitter, stragglers, equal stamps and exact
    repeats, with lone ticks far ahead (outliers) and genuine jumps of the whole feed."""
    n = draw(st.integers(1, 120))
    moves = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["XAU", "XAG", "C"]),
                st.sampled_from(["step"] * 4 + ["back", "same", "outlier", "jump"]),
                st.integers(0, 3_000),
                st.sampled_from([1_500, 6_000, 61_000, 290_000, 2 * DAY_MS]),
            ),
            min_size=n,
            max_size=n,
        )
    )
    clock: dict[str, int] = defaultdict(lambda: T0)
    out: list[Tick] = []
    for i, (symbol, kind, small, big) in enumerate(moves):
        ts = clock[symbol]
        if kind == "step":
            ts = clock[symbol] = ts + small
        elif kind == "back":
            ts -= small
        elif kind == "outlier":
            ts += big
        elif kind == "jump":
            ts = clock[symbol] = ts + big
        out.append(Tick(symbol, ts, 100.0 + i % 7, seq=i))
        if kind == "same" and out:
            out.append(out[-1])
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arrivals=arrivals_with_jumps(),
    lateness=st.sampled_from([0, 1_000, 2_000, 30_000]),
    jump=st.sampled_from([0, 1_000, 5_000, 60_000]),
    jump_xag=st.none() | st.sampled_from([0, 2_000]),
    confirm=st.integers(1, 3),
    kept_candidates=st.sampled_from([ordering.MAX_CANDIDATES, 2]),
    seed=st.integers(0, 2**32),
)
def test_matches_the_rules_for_any_batching_and_restart(
    arrivals, lateness, jump, jump_xag, confirm, kept_candidates, seed
) -> None:  # type: ignore[no-untyped-def]
    saved = ordering.MAX_CANDIDATES
    ordering.MAX_CANDIDATES = kept_candidates  # read by the kernel and the oracle alike
    try:
        check_against_rules(arrivals, lateness, jump, jump_xag, confirm, seed)
    finally:
        ordering.MAX_CANDIDATES = saved


def check_against_rules(
    arrivals: list[Tick], lateness: int, jump: int, jump_xag: int | None, confirm: int, seed: int
) -> None:
    by_symbol = {} if jump_xag is None else {"XAG": jump_xag}

    def make() -> Reorderer:
        return Reorderer(lateness, {}, jump, by_symbol, confirm)

    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(len(arrivals) + 1), min(len(arrivals), rnd.randint(0, 8))))
    bounds = [0, *cuts, len(arrivals)]
    snap_at = rnd.randint(0, len(bounds))
    reorderer = make()
    released: list[Tick] = []
    late: list[Tick] = []
    marks: dict[str, int] = {}
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if i == snap_at:
            state = orjson.loads(orjson.dumps(reorderer.snapshot()))
            reorderer = make()
            reorderer.restore(state)
        out, too_late = reorderer.push(arrivals[a:b])
        for symbol, mark in reorderer.watermarks().items():
            assert mark >= marks.get(symbol, mark), "a watermark never goes back"
            marks[symbol] = mark
        for tick in out:
            assert tick.ts_ms <= marks[tick.symbol], "released only once the watermark is past"
        released += out
        late += too_late
    released += reorderer.flush()

    def jump_of(symbol: str) -> int:
        return by_symbol.get(symbol, jump)

    kept, expected_late = ordering_oracle(arrivals, lambda _s: lateness, jump_of, confirm)
    assert late == [arrivals[n] for n in expected_late]
    want: dict[str, list[Tick]] = defaultdict(list)
    for _, _, tick in sorted(kept, key=lambda e: (e[0], e[1])):
        want[tick.symbol].append(tick)
    got: dict[str, list[Tick]] = defaultdict(list)
    for tick in released:
        got[tick.symbol].append(tick)
    assert got == want
    event(f"late: {'some' if late else 'none'}")
    if any(t.ts_ms - T0 > 60_000 for t in arrivals):
        event("ticks far ahead")
