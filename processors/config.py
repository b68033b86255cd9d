"""Settings (flags and environment) to the kernels' plain configuration objects."""

from __future__ import annotations

from collections.abc import Mapping

from processors.kernels.analytics import AnalyticsConfig
from processors.kernels.divergence import DivergenceConfig
from processors.kernels.records import RecordConfig, RecordSeed
from processors.kernels.rolling import RollingConfig
from tickstream.settings import Settings


def analytics_config(
    settings: Settings, seeds: Mapping[str, RecordSeed] | None = None
) -> AnalyticsConfig:
    return AnalyticsConfig(
        allowed_lateness_ms=settings.allowed_lateness_ms,
        lateness_ms_by_symbol=settings.parsed_lateness_by_symbol(),
        max_jump_ms=settings.max_jump_ms,
        max_jump_ms_by_symbol=settings.parsed_max_jump_by_symbol(),
        jump_confirm_ticks=settings.jump_confirm_ticks,
        rolling=RollingConfig(settings.parsed_rolling_windows()),
        records=RecordConfig(
            level_steps=settings.parsed_level_steps(),
            hysteresis=settings.level_hysteresis,
            sync_groups=settings.parsed_sync_groups(),
            sync_span_ms=settings.sync_span_ms,
            seeds=dict(seeds or {}),
        ),
        divergence=DivergenceConfig(
            pairs=settings.parsed_divergence_pairs(),
            clock_ms=settings.divergence_clock_ms,
            lookback_ms=settings.divergence_lookback_ms,
            z_open=settings.divergence_z_open,
            z_close=settings.divergence_z_close,
            return_horizon_ms=settings.divergence_return_horizon_ms,
        ),
    )
