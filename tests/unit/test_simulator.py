"""Simulator: reproducible, correlated as configured, sane quotes, and valid by our own rules."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict

import pytest

from producers.records import RawTick, wall_ms
from producers.simulator import (
    DEFAULT_ASSETS,
    DEFAULT_START_MS,
    AssetSpec,
    SimulatorConfig,
    generate,
    simulate,
)
from producers.validation import ValidationConfig, Validator


def fields_of(ticks: list[RawTick]) -> list[dict]:
    return [t.fields for t in ticks]  # type: ignore[misc]


def grid_log_returns(ticks: list[RawTick], symbols: list[str], grid_ms: int) -> dict[str, list]:
    """Previous-tick log prices sampled on a common event-time grid, differenced."""
    last: dict[str, float] = {}
    series: dict[str, list[float]] = {s: [] for s in symbols}
    next_ms = ticks[0].fields["ts"] + grid_ms  # type: ignore[index]
    for raw in ticks:
        f = raw.fields
        assert f is not None
        while f["ts"] >= next_ms:
            if len(last) == len(symbols):
                for s in symbols:
                    series[s].append(math.log(last[s]))
            next_ms += grid_ms
        last[f["symbol"]] = f["price"]
    return {s: [b - a for a, b in itertools.pairwise(v)] for s, v in series.items()}


def test_same_seed_same_ticks_and_other_seed_other_ticks() -> None:
    a = [t.raw for t in generate(SimulatorConfig(count=2_000, seed=7))]
    b = [t.raw for t in generate(SimulatorConfig(count=2_000, seed=7))]
    c = [t.raw for t in generate(SimulatorConfig(count=2_000, seed=8))]
    assert a == b
    assert a != c
    assert len(a) == 2_000


def test_default_correlation_and_volatility_on_a_long_run() -> None:
    config = SimulatorConfig(count=150_000, seed=1, jumps_per_hour=0.0)
    ticks = list(generate(config))
    returns = grid_log_returns(ticks, ["XAU", "XAG"], 60_000)
    assert len(returns["XAU"]) > 300
    assert statistics.correlation(returns["XAU"], returns["XAG"]) == pytest.approx(0.8, abs=0.08)
    per_year = math.sqrt(365.25 * 86_400 / 60)
    for asset in config.assets:
        realised = statistics.pstdev(returns[asset.symbol]) * per_year
        assert realised == pytest.approx(asset.vol_annual, rel=0.2)


def test_configured_correlation_for_three_assets() -> None:
    assets = (
        AssetSpec("A", 100.0, 0.3, 5.0, 1.0),
        AssetSpec("B", 50.0, 0.3, 5.0, 1.0),
        AssetSpec("C", 20.0, 0.3, 5.0, 1.0),
    )
    matrix = ((1.0, -0.5, 0.0), (-0.5, 1.0, 0.3), (0.0, 0.3, 1.0))
    config = SimulatorConfig(assets=assets, correlation_matrix=matrix, count=120_000, seed=3)
    returns = grid_log_returns(list(generate(config)), ["A", "B", "C"], 30_000)
    for (i, x), (j, y) in itertools.combinations(enumerate("ABC"), 2):
        assert statistics.correlation(returns[x], returns[y]) == pytest.approx(
            matrix[i][j], abs=0.12
        )


def test_quotes_are_positive_ordered_and_sequenced() -> None:
    ticks = fields_of(list(generate(SimulatorConfig(count=30_000, seed=5))))
    seqs: dict[str, list[int]] = defaultdict(list)
    last_ts = DEFAULT_START_MS
    for f in ticks:
        assert 0 < f["bid"] <= f["price"] <= f["ask"]
        assert f["size"] > 0
        assert f["ts"] >= last_ts
        last_ts = f["ts"]
        seqs[f["symbol"]].append(f["seq"])
    assert set(seqs) == {"XAU", "XAG"}
    for values in seqs.values():
        assert values == list(range(1, len(values) + 1))
    xau = [f["price"] for f in ticks if f["symbol"] == "XAU"]
    assert min(xau) > 4000 and max(xau) < 6000


def test_every_simulated_tick_passes_default_validation() -> None:
    config = SimulatorConfig(count=40_000, seed=11, jumps_per_hour=5.0)  # jumpier than default
    ticks = list(generate(config))
    validator = Validator(ValidationConfig(), now_ms=wall_ms)
    out = validator.feed_many(ticks)
    out.extend(validator.finish())
    assert [r.describe() for r in out.rejected] == []
    assert len(out.accepted) == len(ticks)


async def test_async_fast_mode_matches_sync_core() -> None:
    config = SimulatorConfig(count=2_500, seed=2)
    got = [t async for t in simulate(config)]
    assert [t.raw for t in got] == [t.raw for t in generate(config)]
    assert [t.position for t in got[:2]] == ["n=0", "n=1"]
    assert {t.source for t in got} == {"simulator"}


async def test_paced_mode_starts_at_now_and_scales_the_rate() -> None:
    clock = itertools.count(DEFAULT_START_MS, 1_000_000)  # a clock always far ahead: no waits

    def fake_now() -> int:
        return next(clock)

    config = SimulatorConfig(count=4_000, seed=4, rate_per_s=100.0)
    ticks = [t async for t in simulate(config, now_ms=fake_now)]
    stamps = [t.fields["ts"] for t in ticks]  # type: ignore[index]
    assert stamps[0] >= DEFAULT_START_MS and stamps == sorted(stamps)
    mean_gap_ms = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    assert mean_gap_ms == pytest.approx(10.0, rel=0.1)


async def test_paced_mode_on_the_real_clock_yields_live_event_times() -> None:
    before = wall_ms()
    ticks = [t async for t in simulate(SimulatorConfig(count=10, rate_per_s=500.0))]
    assert len(ticks) == 10
    assert all(t.fields["ts"] >= before for t in ticks)  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"correlation": -0.9, "assets": DEFAULT_ASSETS + (AssetSpec("C", 1.0, 0.1, 1.0, 1.0),)},
        {"correlation_matrix": ((1.0, 0.5), (0.4, 1.0))},
        {"tail_dof": 2.0},
        {"assets": (AssetSpec("X", -1.0, 0.1, 1.0, 1.0),)},
        {"assets": ()},
    ],
)
def test_bad_config_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(**kwargs)


def test_gaussian_tails_are_allowed() -> None:
    ticks = list(generate(SimulatorConfig(count=100, tail_dof=math.inf)))
    assert len(ticks) == 100
