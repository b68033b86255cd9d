"""The ordering stage and OHLC bars against brute-force references on random streams."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import ordering_oracle

from processors.core import SnapshotEncoder, decode_state
from processors.kernels.analytics import Analytics, AnalyticsConfig
from processors.kernels.ohlc import OhlcKernel
from tickstream.model import Tick

LATENESS_MS = 2_000


def reference_accept(
    ticks: list[Tick], lateness_ms: int, **jumps: Any
) -> tuple[list[Tick], list[Tick]]:
    """The ordering stage's rules by brute force (``oracles.ordering_oracle``: late =
    older than the symbol's clock - lateness); the rest, stably sorted."""
    kept, late = ordering_oracle(ticks, lambda _s: lateness_ms, **jumps)
    return [t for _, _, t in sorted(kept, key=lambda x: (x[0], x[1]))], [ticks[n] for n in late]


def reference_bars(ticks: list[Tick], interval_ms: int = 60_000) -> set[tuple]:
    """Every bar straight from its definition: group by (symbol, interval start)."""
    groups: dict[tuple[str, int], list[Tick]] = defaultdict(list)
    for t in ticks:  # already in (ts, arrival) order
        groups[(t.symbol, t.ts_ms - t.ts_ms % interval_ms)].append(t)
    return {
        (
            s,
            start,
            g[0].price,
            max(x.price for x in g),
            min(x.price for x in g),
            g[-1].price,
            len(g),
        )
        for (s, start), g in groups.items()
    }


@st.composite
def streams(draw: st.DrawFn) -> list[Tick]:
    """Several symbols, mostly forward in time with jitter (some late), duplicates, equal ts,
    now and then a gap (the feed jumps ahead) or a lone tick stamped minutes ahead."""
    n = draw(st.integers(1, 250))
    symbols = draw(st.lists(st.sampled_from(["XAU", "XAG", "EUR"]), min_size=n, max_size=n))
    step = st.integers(-3_500, 40_000)
    steps = draw(st.lists(step | st.sampled_from([61_000, 3_600_000]), min_size=n, max_size=n))
    prices = draw(st.lists(st.integers(90, 110), min_size=n, max_size=n))
    clock: dict[str, int] = defaultdict(lambda: 1_767_225_600_000)
    out: list[Tick] = []
    for sym, step_ms, price in zip(symbols, steps, prices, strict=True):
        if draw(st.integers(0, 30)) == 0:
            out.append(Tick(sym, clock[sym] + 290_000, float(price)))  # stamped ahead
            continue
        clock[sym] += step_ms
        out.append(Tick(sym, clock[sym], float(price)))
        if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
            out.append(out[-1])  # exact duplicate
    return out


def run_in_batches(
    ticks: list[Tick], cuts: list[int], snapshot_at: int | None, captured: bool = False
):
    """``captured``: the snapshot as the processor writes it, through its encoder."""
    analytics = Analytics(AnalyticsConfig(allowed_lateness_ms=LATENESS_MS))
    rows, late = [], []
    bounds = sorted({0, len(ticks), *[c % (len(ticks) + 1) for c in cuts]})
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if snapshot_at is not None and i == snapshot_at:
            if captured:
                state = decode_state(SnapshotEncoder().encode(analytics.snapshot(True)))
            else:
                state = analytics.snapshot()
            analytics = Analytics(AnalyticsConfig(allowed_lateness_ms=LATENESS_MS))
            analytics.restore(state)
        step = analytics.update(ticks[a:b])
        rows += step.rows
        late += step.late
    rows += analytics.flush().rows
    return [r for r in rows if r["kind"] == "bar_1m"], late


@settings(max_examples=100, deadline=None)
@given(
    streams(),
    st.lists(st.integers(0, 400), max_size=8),
    st.none() | st.integers(0, 8),
    st.booleans(),
)
def test_bars_and_late_ticks_match_reference(ticks, cuts, snapshot_at, captured) -> None:  # type: ignore[no-untyped-def]
    rows, late = run_in_batches(ticks, cuts, snapshot_at, captured)
    accepted, expected_late = reference_accept(ticks, LATENESS_MS)
    assert late == expected_late
    got = {
        (r["symbol"], r["ts_ms"], r["open"], r["high"], r["low"], r["close"], r["ticks"])
        for r in rows
    }
    assert got == reference_bars(accepted)
    # each bar is emitted once (flush re-emits nothing already closed)
    assert len(rows) == len(got)


def bars(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] == "bar_1m"]


def test_bar_closes_only_when_watermark_passes() -> None:
    k = Analytics(AnalyticsConfig(allowed_lateness_ms=2_000))
    base = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    first = [Tick("XAU", base + 1_000, 5000.0), Tick("XAU", base + 59_000, 5010.0)]
    assert bars(k.update(first).rows) == []
    # 61 s: watermark 59 s, the 59 s tick is released but the minute is not yet over
    assert bars(k.update([Tick("XAU", base + 61_000, 4990.0)]).rows) == []
    rows = bars(k.update([Tick("XAU", base + 62_500, 4995.0)]).rows)
    assert [(r["ts_ms"], r["open"], r["high"], r["low"], r["close"], r["ticks"]) for r in rows] == [
        (base, 5000.0, 5010.0, 5000.0, 5010.0, 2)
    ]
    tail = bars(k.flush().rows)
    assert [(r["ts_ms"], r["ticks"]) for r in tail] == [(base + 60_000, 2)]


def test_ohlc_kernel_alone_on_sorted_ticks() -> None:
    k = OhlcKernel()
    t0 = 1_767_225_600_000
    rows = k.update([Tick("XAG", t0 + i * 20_000, 100.0 + i) for i in range(7)], {})
    assert [r["ticks"] for r in rows] == [3, 3]
    assert [r["ticks"] for r in k.flush()] == [1]
