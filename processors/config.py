"""Settings (flags and environment) to the kernels' plain configuration objects."""

from __future__ import annotations

from collections.abc import Mapping

from processors.kernels.analytics import AnalyticsConfig
from processors.kernels.divergence import DivergenceConfig
from processors.kernels.records import RecordConfig, RecordSeed
from processors.kernels.rolling import RollingConfig
from tickstream.settings import Settings

# Settings the kernels fold into their state: a changed one could not be applied to the history
# already folded (an added level step would never see the crossings before it, a longer window
# only the ticks since), so a namespace keeps them. Lateness, clock jumps, z thresholds,
# price bands and the records warm-up (the state keeps each symbol's first tick, not the
# warm-up's end) are read afresh on every tick and may change between runs.
STATE_SHAPING = (
    "rolling_windows",
    "level_steps",
    "level_hysteresis",
    "sync_span_ms",
    "divergence_clock_ms",
    "divergence_lookback_ms",
    "divergence_return_horizon_ms",
)


def state_settings(settings: Settings) -> dict[str, str]:
    """The state-shaping settings as kept in a snapshot, parsed so that spelling is no change."""
    out: dict[str, str] = {}
    for name in STATE_SHAPING:
        parse = getattr(settings, f"parsed_{name}", None)
        out[name] = repr(parse() if parse is not None else getattr(settings, name))
    return out


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
            warmup_ms=settings.record_warmup_ms,
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
