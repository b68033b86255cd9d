"""Record breaks against a replay that keeps every level's latches explicitly."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracles import assert_same_rows, feed, records_oracle, symbol_stream

from processors.kernels import records as records_module
from processors.kernels.records import RecordConfig, RecordKernel, RecordSeed
from tickstream.model import Tick

STEPS = {"XAU": (1.0, 5.0), "XAG": (0.25, 2.0), "C": (0.1,)}


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _config(
    hysteresis: float, span_ms: int, seeds: dict[str, RecordSeed], warmup_ms: int = 0
) -> RecordConfig:
    return RecordConfig(
        level_steps=STEPS,
        default_steps=(3.0,),
        hysteresis=hysteresis,
        sync_groups=(("XAU", "XAG"), ("XAG", "C", "D")),
        sync_span_ms=span_ms,
        seeds=seeds,
        warmup_ms=warmup_ms,
    )


# 0: no warm-up; 1 ms: only the first instant; the others end within most streams
WARMUPS = st.sampled_from([0, 0, 1, 2_000, 60_000, 200_000])

seeds_strategy = st.dictionaries(
    st.sampled_from(["XAU", "D"]),
    st.builds(
        RecordSeed,
        ath=st.sampled_from([20.0, 50.0, 80.0]),
        ath_ts_ms=st.integers(-5_000, 5_000),
        atl=st.sampled_from([5.0, 15.0]),
        atl_ts_ms=st.integers(-5_000, 5_000),
        first_crossings=st.just({(5.0, 20.0): -9_000, (1.0, 30.0): -8_000}),
        first_crossings_down=st.just({(5.0, 15.0): -7_000}),
        last_price=st.one_of(st.none(), st.sampled_from([14.0, 20.0, 33.3])),
    ),
    max_size=2,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    xau=symbol_stream("XAU", price_cents=(1_000, 5_000)),
    xag=symbol_stream("XAG", price_cents=(100, 2_000)),
    c=symbol_stream("C", max_ticks=15, price_cents=(50, 300)),
    d=symbol_stream("D", max_ticks=15),
    hysteresis=st.sampled_from([0.0, 0.001, 0.01, 0.2]),
    span_ms=st.sampled_from([0, 1_000, 20_000]),
    seeds=seeds_strategy,
    seed=st.integers(0, 2**32),
    band_levels=st.sampled_from([records_module.MAX_BAND_LEVELS, 4]),
    e=symbol_stream("E", max_ticks=25, price_cents=(290, 310), dts=(0, 0, 0, 1)),
    warmup_ms=WARMUPS,
)
def test_matches_oracle_for_any_batching_interleaving_and_restart(
    xau, xag, c, d, hysteresis, span_ms, seeds, seed, band_levels, e, warmup_ms
):
    streams = {"XAU": xau, "XAG": xag, "C": c, "D": d, "E": e}  # E: around 3.0, same ms
    config = _config(hysteresis, span_ms, seeds, warmup_ms)
    saved = records_module.MAX_BAND_LEVELS
    records_module.MAX_BAND_LEVELS = band_levels  # 4: some prices are beyond some grids
    try:
        rows = feed(lambda: RecordKernel(config), streams, random.Random(seed))
        expected = records_oracle(streams, config)
    finally:
        records_module.MAX_BAND_LEVELS = saved
    assert_same_rows(rows, expected, ("symbol",))
    for record in sorted({r["record"] for r in rows}):
        event(record)
    if any(r["record"] == "level_up" and r["first_time"] == 0 for r in rows):
        event("level re-crossed")
    if any(r["record"].startswith("level") and r["prev_ts_ms"] == r["ts_ms"] for r in rows):
        event("several levels in one tick")
    if warmup_ms:
        unwarmed = records_oracle(streams, _config(hysteresis, span_ms, seeds))

        def extremes(rows: list) -> int:
            return sum(r["record"] in ("ath", "atl") for r in rows)

        if extremes(unwarmed) != extremes(expected):
            event("the warm-up silenced records")


def test_gold_milestone_velocity_from_4000_to_5000():
    kernel = RecordKernel(RecordConfig(sync_groups=()))
    first_4000 = _ms("2025-10-08T09:00:00")
    first_5000 = _ms("2026-01-26T03:00:00")
    ticks = [
        Tick("XAU", _ms("2025-10-01T00:00:00"), 3_870.0),
        Tick("XAU", first_4000, 4_003.5),
        Tick("XAU", _ms("2025-10-20T00:00:00"), 4_380.0),
        Tick("XAU", _ms("2025-10-28T00:00:00"), 3_950.0),  # dips below 4,000 and back
        Tick("XAU", _ms("2025-12-01T00:00:00"), 4_230.0),
        Tick("XAU", first_5000, 5_012.0),
    ]
    rows = kernel.update(ticks, {"XAU": ticks[-1].ts_ms}) + kernel.flush()
    (milestone,) = [
        r for r in rows if r["record"] == "level_up" and r["level"] == 5_000.0 and r["step"] == 1e3
    ]
    assert milestone["ts_ms"] == first_5000
    assert milestone["prev_ts_ms"] == first_4000  # the *first* time above 4,000
    assert milestone["since_prev_s"] == (first_5000 - first_4000) / 1000
    assert round(milestone["since_prev_s"] / 86_400) == 110
    assert milestone["first_time"] == 1
    ups_4000 = [r for r in rows if r["record"] == "level_up" and r["level"] == 4_000.0]
    assert [r["first_time"] for r in ups_4000 if r["step"] == 1_000.0] == [1, 0]
    # 4,300 .. 5,000 in steps of 100, all fired by the last tick in one go: one row, the
    # furthest level, whose previous level was first crossed on the way (by that tick)
    (jump,) = [r for r in rows if r["ts_ms"] == first_5000 and r["step"] == 100.0]
    assert (jump["level"], jump["prev_ts_ms"], jump["first_time"]) == (5_000.0, first_5000, 1)


def test_hysteresis_ignores_noise_around_a_level():
    kernel = RecordKernel(RecordConfig(level_steps={"X": (100.0,)}, sync_groups=()))
    prices = [3_950.0, 4_001.0, 3_999.0, 4_001.0, 3_997.0, 4_000.0, 3_990.0, 4_000.0]
    rows = kernel.update([Tick("X", i, p) for i, p in enumerate(prices)], {})
    levels = [(r["ts_ms"], r["record"]) for r in rows if r["record"].startswith("level")]
    # up at 4,001; 3,999/3,997 stay within 0.1 % so no re-arm; 3,990 re-arms; up again at 4,000
    assert levels == [(1, "level_up"), (7, "level_up")]


def test_first_tick_is_silent_without_a_seed_and_a_seed_makes_it_count():
    fresh = RecordKernel(RecordConfig(sync_groups=()))
    assert fresh.update([Tick("XAU", 0, 4_200.0)], {}) == []
    seeded = RecordKernel(
        RecordConfig(
            sync_groups=(),
            seeds={
                "XAU": RecordSeed(
                    ath=4_150.0,
                    ath_ts_ms=-1_000,
                    atl=1_000.0,
                    atl_ts_ms=-9_000,
                    first_crossings={(100.0, 4_100.0): -2_000},
                    last_price=4_120.0,
                )
            },
        )
    )
    rows = seeded.update([Tick("XAU", 0, 4_200.0)], {})
    assert [(r["record"], r["level"], r["prev_ts_ms"]) for r in rows] == [
        ("ath", 4_150.0, -1_000),
        ("level_up", 4_200.0, -2_000),
    ]


def test_sync_ath_waits_for_both_watermarks_and_fires_once_per_span():
    kernel = RecordKernel(RecordConfig(level_steps={}, sync_span_ms=10_000))
    day = [Tick("XAU", 0, 10.0), Tick("XAG", 0, 1.0)]
    assert kernel.update(day, {"XAU": 0, "XAG": 0}) == []
    rows = kernel.update([Tick("XAU", 5_000, 11.0), Tick("XAU", 6_000, 12.0)], {"XAU": 6_000})
    assert [r["record"] for r in rows] == ["ath", "ath"]
    rows = kernel.update([Tick("XAG", 8_000, 1.1)], {"XAU": 6_000, "XAG": 8_000})
    assert [r["record"] for r in rows] == ["ath"]  # XAU's watermark has not passed 8,000
    rows = kernel.update([Tick("XAU", 9_000, 11.5)], {"XAU": 9_000, "XAG": 8_000})
    assert rows == []
    rows = kernel.update([Tick("XAG", 12_000, 1.2)], {"XAU": 9_000, "XAG": 12_000})
    (sync,) = [r for r in rows if r["record"] == "sync_ath"]
    assert (sync["symbol"], sync["ts_ms"], sync["prev_ts_ms"], sync["price"]) == (
        "XAG+XAU",
        8_000,
        6_000,
        1.1,
    )
    assert [r for r in kernel.flush() if r["record"] == "sync_ath"] == []  # 12,000 is in span


def test_sync_rows_need_more_than_a_span_between_them():
    kernel = RecordKernel(RecordConfig(level_steps={}, sync_span_ms=1_000))
    ticks = [Tick("XAU", 0, 10.0), Tick("XAG", 0, 1.0)]
    ticks += [Tick("XAU", 100, 11.0), Tick("XAG", 100, 1.1)]  # sync at 100
    ticks += [Tick("XAU", 1_100, 12.0), Tick("XAG", 1_100, 1.2)]  # exactly one span later
    ticks += [Tick("XAU", 2_101, 13.0), Tick("XAG", 2_101, 1.3)]  # more than a span later
    rows = kernel.update(ticks, {}) + kernel.flush()
    assert [r["ts_ms"] for r in rows if r["record"] == "sync_ath"] == [100, 2_101]


# -- the records warm-up ------------------------------------------------------------------

HOUR = 3_600_000


def _records(rows: list, *kinds: str) -> list[tuple[str, int, float, float, int | None]]:
    return [
        (r["record"], r["ts_ms"], r["price"], r["level"], r["prev_ts_ms"])
        for r in rows
        if r["record"] in kinds
    ]


def _warmup_config(warmup_ms: int, **changes: object) -> RecordConfig:
    base: dict = {"level_steps": {"X": (10.0,)}, "sync_groups": (), "warmup_ms": warmup_ms}
    return RecordConfig(**{**base, **changes})


WARMUP_TICKS = [
    Tick("X", 0, 100.0),
    Tick("X", HOUR, 105.0),  # a new high, a level crossed: in the warm-up
    Tick("X", 2 * HOUR, 95.0),  # a new low, in the warm-up
    Tick("X", 5 * HOUR - 1, 107.0),  # the last instant of it
    Tick("X", 5 * HOUR, 106.0),  # warm now, but below the warm-up's high: no record
    Tick("X", 6 * HOUR, 108.0),  # the first all-time high announced
    Tick("X", 7 * HOUR, 94.0),  # and low
]


def test_an_unseeded_symbol_announces_no_record_in_its_warm_up_and_then_does():
    rows = RecordKernel(_warmup_config(5 * HOUR)).update(WARMUP_TICKS, {})
    assert _records(rows, "ath", "atl") == [
        ("ath", 6 * HOUR, 108.0, 107.0, 5 * HOUR - 1),  # beats what the warm-up tracked
        ("atl", 7 * HOUR, 94.0, 95.0, 2 * HOUR),
    ]
    # level crossings are not affected
    no_warmup = RecordKernel(_warmup_config(0)).update(WARMUP_TICKS, {})
    assert [r for r in rows if r["record"].startswith("level")] == [
        r for r in no_warmup if r["record"].startswith("level")
    ]
    assert len(_records(no_warmup, "ath", "atl")) == 5  # what a fresh market flooded with


def test_a_seeded_symbol_has_no_warm_up():
    seed = RecordSeed(ath=101.0, ath_ts_ms=-HOUR, atl=99.0, atl_ts_ms=-2 * HOUR)
    kernel = RecordKernel(_warmup_config(5 * HOUR, seeds={"X": seed}))
    rows = kernel.update(WARMUP_TICKS[:3], {})
    assert _records(rows, "ath", "atl") == [
        ("ath", HOUR, 105.0, 101.0, -HOUR),
        ("atl", 2 * HOUR, 95.0, 99.0, -2 * HOUR),
    ]


def test_no_ath_event_of_a_warm_up_feeds_a_sync_high():
    config = RecordConfig(level_steps={}, sync_span_ms=HOUR, warmup_ms=HOUR)
    kernel = RecordKernel(config)
    ticks = [Tick("XAU", 0, 10.0), Tick("XAG", 0, 1.0)]
    ticks += [Tick("XAU", HOUR - 2, 11.0), Tick("XAG", HOUR - 1, 1.1)]  # warm-up: silent
    ticks += [Tick("XAU", HOUR, 12.0)]  # an ath; XAG's last ATH event is none
    rows = kernel.update(ticks, {}) + kernel.flush()
    assert [(r["record"], r["ts_ms"]) for r in rows] == [("ath", HOUR)]
    rows = kernel.update([Tick("XAG", HOUR + 5, 1.2)], {}) + kernel.flush()
    assert [(r["record"], r["symbol"], r["prev_ts_ms"]) for r in rows] == [
        ("ath", "XAG", HOUR - 1),
        ("sync_ath", "XAG+XAU", HOUR),
    ]


def test_a_restore_in_the_warm_up_gives_the_rows_of_an_uninterrupted_run():
    import orjson

    config = _warmup_config(5 * HOUR)
    whole = RecordKernel(config).update(WARMUP_TICKS, {})
    for cut in range(len(WARMUP_TICKS)):
        first = RecordKernel(config)
        rows = first.update(WARMUP_TICKS[:cut], {})
        again = RecordKernel(config)
        again.restore(orjson.loads(orjson.dumps(first.snapshot())))
        assert rows + again.update(WARMUP_TICKS[cut:], {}) == whole


def test_a_changed_warm_up_applies_to_a_restored_state():
    import orjson

    first = RecordKernel(_warmup_config(5 * HOUR))
    first.update(WARMUP_TICKS[:2], {})
    state = orjson.loads(orjson.dumps(first.snapshot()))
    shorter = RecordKernel(_warmup_config(2 * HOUR))
    shorter.restore(state)
    rows = shorter.update(WARMUP_TICKS[2:], {})
    assert _records(rows, "ath", "atl")[0] == ("atl", 2 * HOUR, 95.0, 100.0, 0)


def test_a_snapshot_from_before_the_warm_up_restores_warmed_up():
    import orjson

    old = RecordKernel(_warmup_config(0))
    old.update(WARMUP_TICKS[:1], {})
    state = orjson.loads(orjson.dumps(old.snapshot()))
    for saved in state["symbols"].values():
        del saved["first_ts_ms"]  # as saved before the warm-up existed
    kernel = RecordKernel(_warmup_config(5 * HOUR))
    kernel.restore(state)
    rows = kernel.update(WARMUP_TICKS[1:2], {})
    assert _records(rows, "ath") == [("ath", HOUR, 105.0, 100.0, 0)]
