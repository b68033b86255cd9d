"""Rolling highs/lows against a brute-force scan of every earlier tick in the window."""

from __future__ import annotations

import random

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import assert_same_rows, feed, rolling_oracle, symbol_stream

from processors.kernels.rolling import RollingConfig, RollingKernel
from tickstream.model import Tick

WINDOWS = {"2s": 2_000, "7s": 7_000, "1m": 60_000}
KEYS = ("symbol", "window", "ts_ms")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=symbol_stream("A"),
    b=symbol_stream("B"),
    c=symbol_stream("C", max_ticks=5),
    stamp_ms=st.sampled_from([1_000, 5_000, 60_000]),
    seed=st.integers(0, 2**32),
)
def test_matches_oracle_for_any_batching_interleaving_and_restart(a, b, c, stamp_ms, seed):
    streams = {"A": a, "B": b, "C": c}
    config = RollingConfig(windows_ms=WINDOWS, stamp_ms=stamp_ms)
    rows = feed(lambda: RollingKernel(config), streams, random.Random(seed))
    assert_same_rows(rows, rolling_oracle(streams, WINDOWS, stamp_ms), KEYS)


def test_ties_keep_the_latest_tick_and_rows_come_once_per_minute():
    kernel = RollingKernel(RollingConfig(windows_ms={"1h": 3_600_000}))
    ticks = [Tick("X", 0, 5.0), Tick("X", 10_000, 5.0), Tick("X", 20_000, 4.0)]
    assert kernel.update(ticks, {"X": 20_000}) == []
    rows = [r.to_doc() for r in kernel.update([Tick("X", 60_000, 4.5)], {"X": 60_000})]
    assert rows == [
        {
            "kind": "rolling_high",
            "symbol": "X",
            "window": "1h",
            "ts_ms": 0,
            "high": 5.0,
            "high_ts_ms": 10_000,
            "low": 4.0,
            "low_ts_ms": 20_000,
        }
    ]
    # the watermark alone closes the minute (a quiet market still gets its row)
    assert [r["ts_ms"] for r in kernel.update([], {"X": 120_000})] == [60_000]
    assert kernel.flush() == []


def test_window_excludes_its_left_edge():
    kernel = RollingKernel(RollingConfig(windows_ms={"1s": 1_000}, stamp_ms=1_000))
    rows = kernel.update([Tick("X", 0, 9.0), Tick("X", 1_000, 1.0)], {})
    rows += kernel.flush()
    assert [(r["ts_ms"], r["high"], r["low"]) for r in rows] == [(0, 9.0, 9.0), (1_000, 1.0, 1.0)]


def test_memory_is_bounded_by_the_longest_window_not_by_the_ticks():
    kernel = RollingKernel(RollingConfig(windows_ms={"10s": 10_000}, stamp_ms=1_000))
    falling = [Tick("X", i * 100, 1_000_000.0 - i) for i in range(50_000)]  # every tick a low
    kernel.update(falling, {})
    state = kernel.snapshot()["symbols"]["X"]
    assert len(state["hi"]) <= 2 * 100 + 256  # ~10 s of ticks plus the unswept remainder
    assert len(state["lo"]) == 1
    orjson.dumps(kernel.snapshot())


def test_default_windows():
    assert list(RollingConfig().windows_ms) == ["1h", "1d", "7d", "52w"]


def test_after_a_flush_a_period_that_gets_more_ticks_is_emitted_again():
    kernel = RollingKernel(RollingConfig(windows_ms={"1h": 3_600_000}))
    kernel.update([Tick("X", 1_000, 5.0)], {})
    assert [r["high"] for r in kernel.flush()] == [5.0]
    kernel.update([Tick("X", 2_000, 6.0)], {})  # same minute, a later replay
    assert [(r["ts_ms"], r["high"], r["high_ts_ms"]) for r in kernel.flush()] == [(0, 6.0, 2_000)]
