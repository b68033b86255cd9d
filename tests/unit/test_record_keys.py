"""One record_breaks key, one row: a level re-crossed within a millisecond gives no second row.

The table's key is (symbol, kind, step, level, ts) with no version column: two rows with
one key leave FINAL free to keep either, and the second one says ``first_time`` 0, so a
first-ever crossing could be lost.
"""

from __future__ import annotations

import random

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracles import assert_same_rows, feed, records_oracle

from processors.kernels.records import RecordConfig, RecordKernel
from tickstream.contracts import RecordBreak
from tickstream.model import Tick

KEY = RecordBreak.SPEC.identity  # symbol, record, step, level, ts_ms


def keys(rows: list) -> list[tuple]:
    return [tuple(r[f] for f in KEY) for r in rows]


def test_a_level_recrossed_within_one_millisecond_gives_one_row() -> None:
    kernel = RecordKernel(RecordConfig(level_steps={"XAU": (100.0,)}, hysteresis=0.0))
    ticks = [Tick("XAU", 1_000, p) for p in (4_990.0, 5_010.0, 4_990.0, 5_010.0)]
    rows = [r.to_doc() for r in kernel.update(ticks, {})]
    levels = [(r["record"], r["level"], r["first_time"]) for r in rows if r["step"] == 100.0]
    assert levels == [("level_up", 5_000.0, 1), ("level_down", 5_000.0, 1)]
    assert len(set(keys(rows))) == len(rows)


def test_the_next_millisecond_is_a_new_row() -> None:
    kernel = RecordKernel(RecordConfig(level_steps={"XAU": (100.0,)}, hysteresis=0.0))
    ticks = [Tick("XAU", 1_000, 4_990.0), Tick("XAU", 1_000, 5_010.0)]
    ticks += [Tick("XAU", 1_000, 4_990.0), Tick("XAU", 1_001, 5_010.0)]
    rows = kernel.update(ticks, {})
    ups = [(r.ts_ms, r.first_time) for r in rows if r.record == "level_up"]
    assert ups == [(1_000, 1), (1_001, 0)]


def test_the_instant_survives_a_restart() -> None:
    """A snapshot between two ticks of one millisecond remembers the rows of it."""
    config = RecordConfig(level_steps={"XAU": (100.0,)}, hysteresis=0.0)
    kernel = RecordKernel(config)
    rows = kernel.update([Tick("XAU", 1_000, 4_990.0), Tick("XAU", 1_000, 5_010.0)], {})
    reborn = RecordKernel(config)
    reborn.restore(orjson.loads(orjson.dumps(kernel.snapshot())))
    rows += reborn.update([Tick("XAU", 1_000, 4_990.0), Tick("XAU", 1_000, 5_010.0)], {})
    assert [r.record for r in rows if r.step] == ["level_up", "level_down"]


@st.composite
def busy_instants(draw: st.DrawFn, symbol: str) -> list[Tick]:
    """Prices hopping around the levels 3.0 and 3.5, many ticks per millisecond."""
    n = draw(st.integers(1, 60))
    dts = draw(st.lists(st.sampled_from([0, 0, 0, 1, 7]), min_size=n, max_size=n))
    prices = draw(
        st.lists(
            st.sampled_from([2.9, 2.99, 3.0, 3.01, 3.2, 3.49, 3.5, 3.6]), min_size=n, max_size=n
        )
    )
    ts, out = 0, []
    for dt, price in zip(dts, prices, strict=True):
        ts += dt
        out.append(Tick(symbol, ts, price))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=busy_instants("X"),
    y=busy_instants("Y"),
    hysteresis=st.sampled_from([0.0, 0.001, 0.01]),
    seed=st.integers(0, 2**32),
)
def test_busy_instants_match_the_oracle_and_keys_are_unique(  # type: ignore[no-untyped-def]
    x, y, hysteresis, seed
) -> None:
    config = RecordConfig(
        level_steps={"X": (0.5,), "Y": (0.5, 0.1)}, hysteresis=hysteresis, sync_groups=()
    )
    streams = {"X": x, "Y": y}
    rows = feed(lambda: RecordKernel(config), streams, random.Random(seed))
    assert_same_rows(rows, records_oracle(streams, config), ("symbol",))
    assert len(set(keys(rows))) == len(rows)
    by_ts = {(r["symbol"], r["step"], r["level"], r["ts_ms"]) for r in rows if r["step"]}
    if len(by_ts) < sum(1 for r in rows if r["step"]):
        event("a level both ways in one instant")
