"""The clock-jump rule and the sanity bands, from the settings to the stage that applies them.

The ordering stage's jump rule (``max_jump_ms``, per symbol, ``jump_confirm_ticks``) and
the producers' price bands were options of the kernel and the validator only: a deployment
could not set them. Now each is a setting, checked at start-up with an error naming it, and
reaches the Reorderer (through AnalyticsConfig) and the ValidationConfig of every producer.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from processors.config import analytics_config
from processors.kernels.analytics import Analytics, AnalyticsConfig
from processors.kernels.records import RecordSeed
from processors.seeds import seeds_to_json
from producers.validation import OUT_OF_BAND
from producers.validation_config import ValidationConfig, validation_config
from tickstream.model import Tick
from tickstream.settings import ConfigError, Settings

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BY_SYMBOL = "--max-jump-by-symbol / TICKSTREAM_MAX_JUMP_BY_SYMBOL"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"max_jump_ms": -1}, "--max-jump-ms / TICKSTREAM_MAX_JUMP_MS"),
        (
            {"max_jump_by_symbol": "XAU:soon"},
            "--max-jump-by-symbol / TICKSTREAM_MAX_JUMP_BY_SYMBOL",
        ),
        ({"max_jump_by_symbol": "XAU"}, "--max-jump-by-symbol / TICKSTREAM_MAX_JUMP_BY_SYMBOL"),
        ({"jump_confirm_ticks": 0}, "--jump-confirm-ticks / TICKSTREAM_JUMP_CONFIRM_TICKS"),
        ({"price_bands": "XAU:100"}, "--price-bands / TICKSTREAM_PRICE_BANDS"),
        ({"price_bands": "XAU:10-1"}, "--price-bands / TICKSTREAM_PRICE_BANDS"),
        ({"price_bands": "XAU:1.2.3-5"}, "--price-bands / TICKSTREAM_PRICE_BANDS"),
    ],
)
def test_a_bad_setting_names_itself(changes: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings(**changes)  # type: ignore[arg-type]
    assert str(err.value).startswith(named)


def test_settings_reach_the_ordering_stage() -> None:
    settings = Settings(
        max_jump_ms=30_000, max_jump_by_symbol="XAU:0; XAG:5000", jump_confirm_ticks=3
    )
    config = analytics_config(settings)
    assert (config.max_jump_ms, dict(config.max_jump_ms_by_symbol)) == (
        30_000,
        {"XAU": 0, "XAG": 5_000},
    )
    assert config.jump_confirm_ticks == 3
    ordering = Analytics(config).ordering
    assert (ordering.max_jump_of("XAU"), ordering.max_jump_of("XAG")) == (0, 5_000)
    assert ordering.max_jump_of("EURUSD") == 30_000 and ordering.jump_confirm_ticks == 3
    defaults = AnalyticsConfig()
    assert analytics_config(Settings()).max_jump_ms == defaults.max_jump_ms == 60_000
    assert analytics_config(Settings()).jump_confirm_ticks == defaults.jump_confirm_ticks == 1


def test_max_jump_0_lets_one_tick_move_the_clock() -> None:
    """Off, the clock follows the newest tick as before the rule: what 0 is for is a feed
    whose gaps are normal; here it shows the setting is the one applied."""
    ahead = [Tick("XAU", T0, 5_000.0), Tick("XAU", T0 + 290_000, 5_001.0)]
    checked = Analytics(analytics_config(Settings()))
    unchecked = Analytics(analytics_config(Settings(max_jump_by_symbol="XAU:0")))
    checked.update(ahead)
    unchecked.update(ahead)
    good = [Tick("XAU", T0 + 1_000, 5_000.5)]
    assert checked.update(good).late == []
    assert unchecked.update(good).late == good


def test_validation_config_from_settings_and_seeds() -> None:
    assert validation_config(Settings()) == ValidationConfig()
    banded = validation_config(Settings(price_bands="XAU:100-100000;XAG:1-5e3"))
    assert banded.price_bands == {"XAU": (100.0, 100_000.0), "XAG": (1.0, 5_000.0)}
    seed = RecordSeed(ath=5_100.0, ath_ts_ms=0, atl=250.0, atl_ts_ms=0)
    seeded = validation_config(Settings(price_bands="XAU:100-100000"), {"XAU": seed})
    assert seeded.reference_ranges == {"XAU": (250.0, 5_100.0)}
    assert seeded.price_bands == {"XAU": (100.0, 100_000.0)}


def test_produce_builds_its_validation_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tickstream produce`: --price-bands and --record-seeds reach the Validator its
    publisher gets (the broker-facing parts are stubbed: no Kafka here)."""
    import producers.publisher
    from cli.main import _register, cli
    from tickstream import kafka_io, metrics

    seeds = tmp_path / "seeds.json"
    seeds.write_bytes(seeds_to_json({"XAU": RecordSeed(5_100.0, 0, 250.0, 0)}))
    got: list[ValidationConfig] = []

    class Publisher:
        def __init__(self, settings: Settings, validator: Any, **options: Any) -> None:
            got.append(validator.config)

        async def __aenter__(self) -> Publisher:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def publish(self, source: Any, progress: Any = None) -> Any:
            return SimpleNamespace(summary=lambda: "stubbed")

    async def no_topics(settings: Settings) -> None:
        return None

    monkeypatch.setattr(producers.publisher, "Publisher", Publisher)
    monkeypatch.setattr(kafka_io, "ensure_topics", no_topics)
    monkeypatch.setattr(metrics, "serve_metrics", lambda *args, **kwargs: None)
    _register()
    result = CliRunner().invoke(
        cli,
        ["produce", "simulate", "--count", "1", "--record-seeds", str(seeds)],
        env={"TICKSTREAM_PRICE_BANDS": "XAU:100-100000"},
    )
    assert result.exit_code == 0, result.output
    (config,) = got
    assert config.price_bands == {"XAU": (100.0, 100_000.0)}
    assert config.reference_ranges == {"XAU": (250.0, 5_100.0)}

    bad = CliRunner().invoke(cli, ["produce", "simulate", "--price-bands", "XAU:9-1"])
    assert bad.exit_code == 2 and "--price-bands / TICKSTREAM_PRICE_BANDS" in bad.output
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    bad = CliRunner().invoke(cli, ["produce", "simulate", "--record-seeds", str(broken)])
    assert bad.exit_code == 2 and "--record-seeds" in bad.output
    assert len(got) == 1  # neither bad setting got as far as a publisher


def test_out_of_band_is_a_documented_reason() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"`{OUT_OF_BAND}`" in readme
