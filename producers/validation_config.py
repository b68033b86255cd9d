"""The parameters of validation: time bounds, duplicate memory and spike thresholds.

Frozen and checked on construction, so a bad setting fails at start-up, before
the first input, instead of as odd verdicts later. The defaults suit liquid
metals and FX; an instrument that moves further per tick gets its own
``SpikeThresholds`` through ``spike_overrides``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from producers.parsing import Y2K_MS


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

    @property
    def default_thresholds(self) -> SpikeThresholds:
        return SpikeThresholds(self.spike_near_pct, self.spike_far_pct, self.spike_near_ms)

    def thresholds(self, symbol: str) -> SpikeThresholds:
        return self.spike_overrides.get(symbol) or self.default_thresholds
