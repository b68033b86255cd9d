"""The parameters of validation: time bounds, duplicate memory and spike thresholds.

Frozen and checked on construction, so a bad setting fails at start-up, before
the first input, instead of as odd verdicts later. The defaults suit liquid
metals and FX; an instrument that moves further per tick gets its own
``SpikeThresholds`` through ``spike_overrides``.

``price_bands`` is a per-symbol sanity band (lowest, highest acceptable price): what a
desk knows a symbol can never trade at is refused outright, as ``out_of_band``, whatever
the ticks around it say (setting ``--price-bands``; ``validation_config`` builds the
config of a producer run from the settings). ``reference_prices`` and
``reference_ranges`` give a symbol's first tick something to be judged against
(otherwise it is accepted as it comes): a price (the previous close, a seed's last
price) or a range (a seed's all-time low and high, ``with_record_seeds``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from producers.parsing import Y2K_MS
from tickstream.settings import Settings, parse_price_bands

__all__ = [
    "SpikeThresholds",
    "ValidationConfig",
    "parse_price_bands",  # lives in tickstream.settings, which checks --price-bands
    "validation_config",
]


@dataclass(frozen=True, slots=True)
class SpikeThresholds:
    """How far a price may move from the last accepted one before it is suspect."""

    near_pct: float = 5.0
    far_pct: float = 20.0
    near_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """Validation parameters; the defaults suit liquid metals and FX."""

    max_future_ms: int = 5 * 60_000
    min_ts_ms: int = Y2K_MS
    duplicate_horizon_ms: int = 5 * 60_000
    spike_filter: bool = True
    spike_near_pct: float = 5.0
    spike_far_pct: float = 20.0
    spike_near_ms: int = 60_000
    confirm_ticks: int = 3
    spike_overrides: Mapping[str, SpikeThresholds] = field(default_factory=dict)
    reference_prices: Mapping[str, float] = field(default_factory=dict)
    reference_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    price_bands: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.confirm_ticks < 1:
            raise ValueError(f"confirm_ticks must be >= 1, got {self.confirm_ticks}")
        if self.duplicate_horizon_ms < 0 or self.max_future_ms < 0:
            raise ValueError("duplicate_horizon_ms and max_future_ms must be >= 0")
        for thresholds in (self.default_thresholds, *self.spike_overrides.values()):
            if not 0 < thresholds.near_pct <= thresholds.far_pct:
                raise ValueError(f"need 0 < near_pct <= far_pct: {thresholds}")
        for symbol, price in self.reference_prices.items():
            if not (math.isfinite(price) and price > 0):
                raise ValueError(f"reference price of {symbol} must be > 0, got {price!r}")
        for name, ranges in (
            ("reference range", self.reference_ranges),
            ("price band", self.price_bands),
        ):
            for symbol, (low, high) in ranges.items():
                if not (0 < low <= high and math.isfinite(high)):
                    got = f"got {low!r}, {high!r}"
                    raise ValueError(f"{name} of {symbol} must be 0 < low <= high, {got}")

    def with_record_seeds(self, seeds: Mapping[str, Any]) -> ValidationConfig:
        """References for first ticks from record seeds (``processors.seeds``): a seed's
        last price where it has one, else its all-time range; references already given
        win. A fresh publisher then judges a symbol's first tick as it judges the others,
        instead of taking whatever comes first as the truth."""
        prices = dict(self.reference_prices)
        ranges = dict(self.reference_ranges)
        for symbol, seed in seeds.items():
            if symbol in prices or symbol in ranges:
                continue
            last = getattr(seed, "last_price", None)
            if last is not None:
                prices[symbol] = float(last)
            elif 0 < seed.atl <= seed.ath:
                ranges[symbol] = (float(seed.atl), float(seed.ath))
        return replace(self, reference_prices=prices, reference_ranges=ranges)

    @property
    def default_thresholds(self) -> SpikeThresholds:
        return SpikeThresholds(self.spike_near_pct, self.spike_far_pct, self.spike_near_ms)

    def thresholds(self, symbol: str) -> SpikeThresholds:
        return self.spike_overrides.get(symbol) or self.default_thresholds


def validation_config(
    settings: Settings, seeds: Mapping[str, Any] | None = None
) -> ValidationConfig:
    """The validation of a producer run with ``settings``: the sanity bands of
    ``--price-bands``, and, given record seeds (``--record-seeds``), each symbol's first
    tick judged against what the seeds know of it (``with_record_seeds``).

    One place for it, so every command that publishes (``tickstream produce``, ``tickstream
    run``) validates alike: a band given in the settings and forgotten by one of them would
    let through there the price it exists to refuse."""
    config = ValidationConfig(price_bands=settings.parsed_price_bands())
    return config.with_record_seeds(seeds) if seeds else config
