"""The simulated market comes with a history, so a fresh `tickstream run` is not all records.

Without seeds the processor took the first simulated tick for the instrument's whole
history: every small new high or low of the first minutes was an all-time one (110 record
breaks in the first two minutes of a fresh `tickstream run`, measured). The simulator's
instruments carry their record seeds; the runner merges them with what the database knows.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from cli.runner import merge_seed_docs
from processors.config import analytics_config
from processors.kernels.analytics import Analytics
from processors.seeds import seeds_from_file
from producers.simulator import (
    DEFAULT_ASSETS,
    DEFAULT_START_MS,
    AssetHistory,
    AssetSpec,
    SimulatorConfig,
    generate,
    record_seeds,
)
from tickstream.model import Tick
from tickstream.settings import Settings
from tickstream.timestamps import parse_ts_ms

NOW_MS = 1_796_000_000_000  # 2026-11-30: a live run's clock


def test_every_default_instrument_has_a_history_that_holds_its_starting_price() -> None:
    for asset in DEFAULT_ASSETS:
        history = asset.history
        assert history is not None, asset.symbol
        assert history.atl <= asset.price <= history.ath
        assert max(history.times_ms()) < NOW_MS


def test_a_history_that_contradicts_the_starting_price_is_refused() -> None:
    low = AssetHistory(ath=4_000.0, ath_ts="2025-10-08T00:00:00Z", atl=250.0, atl_ts="1999-07-20")
    with pytest.raises(ValueError, match="outside its history's all-time range"):
        SimulatorConfig(assets=(AssetSpec("XAU", 5_000.0, 0.2, 1.0, 1.0, history=low),))


def test_seeds_load_as_a_record_seed_file(tmp_path: Path) -> None:
    path = tmp_path / "seeds.json"
    path.write_bytes(orjson.dumps(record_seeds(SimulatorConfig(rate_per_s=20.0), NOW_MS)))
    seeds = seeds_from_file(path)
    assert set(seeds) == {"XAU", "XAG"}
    assert seeds["XAU"].ath == 5051.91
    assert seeds["XAU"].first_crossings[(1000.0, 4000.0)] == parse_ts_ms("2025-10-08T07:12:00Z")
    assert seeds["XAG"].atl == 3.55


def test_the_unpaced_simulator_starts_before_its_history_ends_so_gets_none() -> None:
    """Unpaced, the market is 26 January 2026 from midnight: the day's high is its future."""
    assert record_seeds(SimulatorConfig(rate_per_s=0.0), NOW_MS) == {}
    assert parse_ts_ms(DEFAULT_ASSETS[0].history.ath_ts) > DEFAULT_START_MS  # type: ignore[union-attr]


def test_merged_seeds_keep_the_most_extreme_records_and_the_earliest_crossings() -> None:
    simulator = {
        "XAU": {
            "ath": 5051.91,
            "ath_ts": "2026-01-26T06:53:51.525Z",
            "atl": 252.8,
            "atl_ts": "1999-07-20T00:00:00Z",
            "first_up": [[1000, 5000, "2026-01-26T02:54:47.209Z"]],
            "first_down": [],
        }
    }
    database = {  # an earlier simulated run: a narrower range, later times (epoch ms)
        "XAU": {
            "ath": 5003.09,
            "ath_ts": NOW_MS - 60_000,
            "atl": 4999.74,
            "atl_ts": NOW_MS - 30_000,
            "first_up": [[1000.0, 5000.0, NOW_MS - 90_000], [100.0, 5100.0, NOW_MS - 10]],
            "first_down": [[100.0, 5000.0, NOW_MS - 20_000]],
        },
        "XPT": {"ath": 1.0, "ath_ts": 1, "atl": 1.0, "atl_ts": 1},
    }
    merged = merge_seed_docs(simulator, database)
    xau = merged["XAU"]
    assert (xau["ath"], xau["ath_ts"]) == (5051.91, parse_ts_ms("2026-01-26T06:53:51.525Z"))
    assert (xau["atl"], xau["atl_ts"]) == (252.8, parse_ts_ms("1999-07-20T00:00:00Z"))
    assert xau["first_up"] == [
        [100.0, 5100.0, NOW_MS - 10],
        [1000.0, 5000.0, parse_ts_ms("2026-01-26T02:54:47.209Z")],
    ]
    assert xau["first_down"] == [[100.0, 5000.0, NOW_MS - 20_000]]
    assert merged["XPT"]["ath"] == 1.0


def record_breaks(
    seeded: bool, tmp_path: Path, seconds: int = 120, warmup_ms: int = 86_400_000
) -> Counter[str]:
    """The record breaks of the first ``seconds`` of `tickstream run`'s simulated market
    (20 ticks/s, seed 42), through the processor's analytics in batches."""
    config = SimulatorConfig(rate_per_s=20.0)
    seeds = {}
    if seeded:
        path = tmp_path / "seeds.json"
        path.write_bytes(orjson.dumps(merge_seed_docs(record_seeds(config, NOW_MS))))
        seeds = seeds_from_file(path)
    analytics = Analytics(analytics_config(Settings(record_warmup_ms=warmup_ms), seeds))
    scale = config.rate_per_s / sum(a.ticks_per_s for a in config.assets)
    ticks = []
    for raw in generate(config, lambda: NOW_MS, start_ms=NOW_MS, rate_scale=scale):
        fields = raw.fields or {}
        if fields["ts"] > NOW_MS + seconds * 1000:
            break
        ticks.append(Tick(fields["symbol"], fields["ts"], fields["price"]))
    rows = []
    for i in range(0, len(ticks), 50):
        rows.extend(analytics.update(ticks[i : i + 50]).rows)
    rows.extend(analytics.flush().rows)
    return Counter(r.record for r in rows if r.SPEC.kind == "record_break")  # type: ignore[attr-defined]


def test_a_fresh_simulated_market_is_not_a_flood_of_all_time_records(tmp_path: Path) -> None:
    flood = record_breaks(seeded=False, tmp_path=tmp_path, warmup_ms=0)
    fresh = record_breaks(seeded=False, tmp_path=tmp_path)
    seeded = record_breaks(seeded=True, tmp_path=tmp_path)
    assert flood["ath"] + flood["atl"] > 50  # what a market without a past looked like
    assert fresh["ath"] + fresh["atl"] == 0  # the warm-up: no seed, still no flood
    assert seeded["ath"] + seeded["atl"] == 0  # gold's $5,051.91 and silver's $107.353 stand
    assert sum(seeded.values()) <= 5  # only crossings of the round levels it starts on
