"""An absurd price: bounded work and output in the records kernel, refused by validation.

A confirmed jump of gold to 5e7 used to give one level_up row per level of 100 on the
way (about half a million rows, at a cost linear in the price) plus a false all-time high.
Now one tick gives at most one row per grid (the furthest level, the others crossed on
the way), at a cost that does not grow with the levels; and the validator refuses what
the sanity band says a symbol never trades at, and judges a first tick against the
record seeds.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from processors.kernels.records import RecordConfig, RecordKernel, RecordSeed
from producers.records import RawTick
from producers.validation import (
    OUT_OF_BAND,
    REASONS,
    SPIKE,
    ValidationConfig,
    Validator,
    parse_price_bands,
)
from tickstream.model import Tick

T0 = 1_769_385_600_000
XAU_STEPS = {"XAU": (100.0, 1_000.0)}


def gold() -> RecordKernel:
    return RecordKernel(RecordConfig(level_steps=XAU_STEPS, sync_groups=()))


def levels(rows: list) -> list[tuple[str, float, float, int]]:
    return [(r.record, r.step, r.level, r.first_time) for r in rows if r.step]


@pytest.mark.parametrize("price", [5e7, 1e8])
def test_a_jump_through_many_levels_is_one_row_per_grid(price: float) -> None:
    kernel = gold()
    kernel.update([Tick("XAU", T0, 5_000.0), Tick("XAU", T0 + 1, 5_010.0)], {})
    started = time.perf_counter()
    rows = kernel.update([Tick("XAU", T0 + 2, price)], {})
    took = time.perf_counter() - started
    furthest = (price // 1_000) * 1_000
    assert levels(rows) == [("level_up", 100.0, furthest, 1), ("level_up", 1_000.0, furthest, 1)]
    assert took < 0.2, took  # was 0.86 s (and 495k rows) for 5e7
    # every level on the way counts as crossed: back down and up through 7,000 again
    rows = kernel.update([Tick("XAU", T0 + 3, 6_950.0), Tick("XAU", T0 + 4, 7_001.0)], {})
    ups = [(r.step, r.level, r.prev_ts_ms, r.first_time) for r in rows if r.record == "level_up"]
    assert ups == [(100.0, 7_000.0, T0 + 2, 0), (1_000.0, 7_000.0, T0 + 2, 0)]


def test_a_fall_through_many_levels_is_one_row_per_grid_too() -> None:
    kernel = gold()
    kernel.update([Tick("XAU", T0, 5_000.0), Tick("XAU", T0 + 1, 4_990.0)], {})
    rows = kernel.update([Tick("XAU", T0 + 2, 1_234.0)], {})
    assert levels(rows) == [("level_down", 100.0, 1_300.0, 1), ("level_down", 1_000.0, 2_000.0, 1)]
    rows = kernel.update([Tick("XAU", T0 + 3, 3_050.0), Tick("XAU", T0 + 4, 2_990.0)], {})
    downs = [(r.step, r.level, r.prev_ts_ms, r.first_time) for r in rows if "down" in r.record]
    assert downs == [(100.0, 3_000.0, T0 + 2, 0), (1_000.0, 3_000.0, T0 + 2, 0)]


def test_a_hostile_price_costs_no_more_than_a_sane_one() -> None:
    """1e300 is finite and positive: levels of 100 are meaningless there, and the grid
    does not see it (nor does the work grow with it); the record is the validator's job."""
    kernel = gold()
    kernel.update([Tick("XAU", T0, 5_000.0)], {})
    started = time.perf_counter()
    rows = kernel.update([Tick("XAU", T0 + 1, 1e300), Tick("XAU", T0 + 2, 5_001.0)], {})
    assert time.perf_counter() - started < 0.2
    assert [r.record for r in rows] == ["ath"]


def test_an_older_snapshot_of_first_crossings_restores() -> None:
    kernel = gold()
    kernel.update([Tick("XAU", T0, 4_950.0), Tick("XAU", T0 + 1, 5_050.0)], {})
    state = orjson.loads(orjson.dumps(kernel.snapshot()))
    for grid in state["symbols"]["XAU"]["grids"]:  # the format of before: [k, ts] each
        grid["first_up"] = [[k, t] for a, b, t in grid["first_up"] for k in range(a, b + 1)]
        del grid["instant"]
    reborn = gold()
    reborn.restore(state)
    rows = reborn.update([Tick("XAU", T0 + 2, 4_900.0), Tick("XAU", T0 + 3, 5_050.0)], {})
    assert [(r.level, r.first_time) for r in rows if r.record == "level_up"] == [
        (5_000.0, 0),
        (5_000.0, 0),
    ]


# -- validation ---------------------------------------------------------------------------


def raw(n: int, price: float, symbol: str = "XAU", ts_ms: int | None = None) -> RawTick:
    fields: dict[str, Any] = {"symbol": symbol, "ts": T0 + n * 1_000 if ts_ms is None else ts_ms}
    fields["price"] = price
    return RawTick(repr(fields), "test", f"n={n}", T0, fields)


def validate(config: ValidationConfig, prices: list[float]) -> tuple[list[float], list[tuple]]:
    validator = Validator(config, now_ms=lambda: T0 + 10**9)
    out = validator.feed_many([raw(n, p) for n, p in enumerate(prices)])
    out.extend(validator.finish())
    return [t.price for t in out.accepted], [(r.position, r.reason) for r in out.rejected]


def test_the_sanity_band_refuses_with_a_reason() -> None:
    config = ValidationConfig(price_bands={"XAU": (100.0, 100_000.0)})
    accepted, rejected = validate(config, [5e7, 5e7, 5e7, 5e7, 5_000.0, 50.0, 5_001.0])
    assert accepted == [5_000.0, 5_001.0]
    assert rejected == [("n=0", OUT_OF_BAND), ("n=1", OUT_OF_BAND), ("n=2", OUT_OF_BAND),
                        ("n=3", OUT_OF_BAND), ("n=5", OUT_OF_BAND)]  # fmt: skip
    validator = Validator(config, now_ms=lambda: T0 + 10**9)
    (rejection,) = validator.feed(raw(0, 5e7)).rejected
    assert "sanity band [100.0, 100000.0]" in rejection.detail and rejection.symbol == "XAU"
    assert OUT_OF_BAND in REASONS  # exported at 0 by the publisher, like every reason


def test_without_a_band_a_confirmed_jump_is_accepted() -> None:
    accepted, _ = validate(ValidationConfig(), [5_000.0, 5e7, 5e7, 5e7, 5e7])
    assert accepted == [5_000.0, 5e7, 5e7, 5e7, 5e7]


def test_a_first_tick_is_judged_against_the_record_seeds() -> None:
    seeds = {"XAU": RecordSeed(ath=5_100.0, ath_ts_ms=0, atl=250.0, atl_ts_ms=0)}
    config = ValidationConfig().with_record_seeds(seeds)
    # a fat finger as the very first tick: quarantined against the all-time high, and
    # rejected when the next tick is back in the known range
    accepted, rejected = validate(config, [49_800.0, 4_950.0, 4_951.0])
    assert (accepted, rejected) == ([4_950.0, 4_951.0], [("n=0", SPIKE)])
    # inside the known range the first tick is its own reference
    assert validate(config, [4_950.0, 4_951.0]) == ([4_950.0, 4_951.0], [])
    # unseeded, the fat finger was the reference everything else was judged by
    accepted, rejected = validate(ValidationConfig(), [49_800.0, 4_950.0, 4_951.0])
    assert accepted[0] == 49_800.0


def test_a_seed_with_a_last_price_gives_a_point_reference() -> None:
    seed = RecordSeed(ath=5_100.0, ath_ts_ms=0, atl=250.0, atl_ts_ms=0, last_price=5_000.0)
    config = ValidationConfig().with_record_seeds({"XAU": seed, "XAG": seed})
    assert config.reference_prices == {"XAU": 5_000.0, "XAG": 5_000.0}
    given = ValidationConfig(reference_prices={"XAU": 4_000.0}).with_record_seeds({"XAU": seed})
    assert given.reference_prices == {"XAU": 4_000.0}  # what was given wins


def test_price_bands_parse_and_check() -> None:
    assert parse_price_bands("XAU:100-100000; XAG:1-5e3") == {
        "XAU": (100.0, 100_000.0),
        "XAG": (1.0, 5_000.0),
    }
    assert parse_price_bands("") == {}
    for bad in ("XAU:100", "XAU:0-10", "XAU:10-1"):
        with pytest.raises(ValueError):
            parse_price_bands(bad)
    with pytest.raises(ValueError, match="price band of XAU"):
        ValidationConfig(price_bands={"XAU": (10.0, 1.0)})
