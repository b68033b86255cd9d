"""Rolling breaks against the brute-force definition (every earlier tick in the window)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracles import (
    assert_same_rows,
    feed,
    rolling_breaks_oracle,
    rolling_oracle,
    symbol_stream,
)

from processors.kernels.rolling import RollingConfig, RollingKernel
from processors.kernels.rolling_breaks import RollingBreakKernel
from tickstream.model import Tick

WINDOWS = {"1s": 1_000, "10s": 10_000, "1m": 60_000, "1h": 3_600_000}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    xau=symbol_stream("XAU", max_ticks=60),
    xag=symbol_stream("XAG", max_ticks=30, price_cents=(100, 300)),
    windows=st.dictionaries(
        st.sampled_from(sorted(WINDOWS)), st.sampled_from(sorted(WINDOWS.values())), min_size=1
    ),
    seed=st.integers(0, 2**32),
)
def test_matches_oracle_for_any_batching_interleaving_and_restart(xau, xag, windows, seed):
    streams = {"XAU": xau, "XAG": xag}
    config = RollingConfig(windows_ms=windows, stamp_ms=1_000)
    rows = feed(lambda: RollingBreakKernel(config), streams, random.Random(seed))
    expected = rolling_breaks_oracle(streams, windows)
    assert_same_rows(rows, expected, ("symbol", "window", "record"))
    for row in rows:
        event(f"{row['window']} {row['record']}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    xau=symbol_stream("XAU", max_ticks=60),
    xag=symbol_stream("XAG", max_ticks=30),
    seed=st.integers(0, 2**32),
)
def test_with_highs_it_is_also_the_rolling_kernel(xau, xag, seed):
    streams = {"XAU": xau, "XAG": xag}
    config = RollingConfig(windows_ms={"10s": 10_000, "1m": 60_000}, stamp_ms=1_000)
    rows = feed(lambda: RollingBreakKernel(config, highs=True), streams, random.Random(seed))
    highs = [r for r in rows if r["kind"] == "rolling_high"]
    alone = feed(lambda: RollingKernel(config), streams, random.Random(seed))
    assert highs == alone
    assert_same_rows(highs, rolling_oracle(streams, config.windows_ms, 1_000), ("symbol", "window"))
    breaks = [r for r in rows if r["kind"] == "rolling_break"]
    assert_same_rows(
        breaks, rolling_breaks_oracle(streams, config.windows_ms), ("symbol", "window", "record")
    )


def test_a_break_names_the_previous_high_and_its_latest_tick():
    kernel = RollingBreakKernel(RollingConfig(windows_ms={"10s": 10_000, "1m": 60_000}))
    ticks = [
        Tick("X", -60_000, 9.0),  # a minute of history before: both windows are covered
        Tick("X", 0, 10.0),  # nothing earlier in either window: no break
        Tick("X", 1_000, 12.0),
        Tick("X", 2_000, 12.0),  # equal: no break, the high's time moves on
        Tick("X", 5_000, 11.0),
        Tick("X", 13_000, 11.5),  # 10s window holds 11.0 only: a 10s high, not a 1m one
        Tick("X", 14_000, 12.5),  # above everything: both windows
    ]
    rows = [r.to_doc() for r in kernel.update(ticks, {})]
    highs = [
        (r["ts_ms"], r["window"], r["prev"], r["prev_ts_ms"])
        for r in rows
        if r["record"] == "new_high"
    ]
    assert highs == [
        (1_000, "10s", 10.0, 0),
        (1_000, "1m", 10.0, 0),
        (13_000, "10s", 11.0, 5_000),
        (14_000, "10s", 11.5, 13_000),
        (14_000, "1m", 12.0, 2_000),
    ]
    assert kernel.flush() == []


def test_an_empty_short_window_does_not_hide_a_longer_break():
    kernel = RollingBreakKernel(RollingConfig(windows_ms={"10s": 10_000, "1m": 60_000}))
    ticks = [Tick("X", -60_000, 9.0), Tick("X", 0, 10.0), Tick("X", 30_000, 11.0)]
    # at 30 s the 10s window is empty; the 1m one holds 10.0 (and its history is covered)
    rows = [r.to_doc() for r in kernel.update(ticks, {})]
    assert [(r["window"], r["record"]) for r in rows] == [("1m", "new_high")]


def test_memory_stays_bounded_on_a_long_trend():
    config = RollingConfig(windows_ms={"10s": 10_000}, stamp_ms=1_000)
    kernel = RollingBreakKernel(config)
    ticks = [Tick("X", i * 100, 100.0 - i * 0.01) for i in range(50_000)]  # falling for ever
    for i in range(0, len(ticks), 1_000):
        kernel.update(ticks[i : i + 1_000], {"X": ticks[i + 999].ts_ms})
    hi, lo = kernel.staircases("X")  # type: ignore[misc]
    assert len(hi) <= 2 * 10_000 // 100 + 300
    assert len(lo) <= 300


def test_a_window_breaks_only_once_the_history_covers_it():
    """A fresh symbol's new high of its first minutes is no new high of the hour: a break
    of window W needs W of history since the symbol's first tick (t - first >= W)."""
    windows = {"10s": 10_000, "1m": 60_000}
    kernel = RollingBreakKernel(RollingConfig(windows_ms=windows, stamp_ms=1_000))
    ticks = [Tick("X", 5_000 + i * 1_000, 10.0 + i) for i in range(70)]  # rising by 1/s
    rows = [r.to_doc() for r in kernel.update(ticks, {}) + kernel.flush()]
    by_window: dict[str, list[int]] = {}
    for r in rows:
        assert r["record"] == "new_high"
        by_window.setdefault(r["window"], []).append(r["ts_ms"] - 5_000)
    assert by_window["10s"] == [i * 1_000 for i in range(10, 70)]  # from exactly 10 s on
    assert by_window["1m"] == [i * 1_000 for i in range(60, 70)]  # from exactly 1 min on


def test_coverage_survives_a_restore_and_an_old_snapshot_counts_as_covered():
    import orjson

    windows = {"10s": 10_000, "1m": 60_000}
    config = RollingConfig(windows_ms=windows, stamp_ms=1_000)
    ticks = [Tick("X", i * 1_000, 10.0 + i) for i in range(70)]
    whole = [r.to_doc() for r in RollingBreakKernel(config).update(ticks, {})]
    first = RollingBreakKernel(config)
    head = [r.to_doc() for r in first.update(ticks[:30], {})]
    state = orjson.loads(orjson.dumps(first.snapshot()))
    again = RollingBreakKernel(config)
    again.restore(state)
    assert head + [r.to_doc() for r in again.update(ticks[30:], {})] == whole
    for saved in state["symbols"].values():
        del saved["first_ts_ms"]  # as saved before the coverage rule
    old = RollingBreakKernel(config)
    old.restore(state)
    rows = [r.to_doc() for r in old.update(ticks[30:31], {})]
    assert [r["window"] for r in rows] == ["10s", "1m"]  # 1m covered, though 30 s old
