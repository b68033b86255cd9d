"""Click options for the shared settings: one flag and one environment variable each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

import click

from tickstream.settings import ConfigError, Settings, envvar, flag

F = TypeVar("F", bound=Callable[..., Any])

_HELP = {
    "kafka_bootstrap": "Kafka bootstrap servers, host:port[,host:port].",
    "namespace": "Prefix of every topic and consumer group; two namespaces never mix.",
    "clickhouse_url": "chdb:///<dir> (embedded ClickHouse engine) or http(s)://host:8123.",
    "clickhouse_database": "ClickHouse database holding tickstream's tables.",
    "partitions": "Partitions of each topic tickstream creates.",
    "metrics_port": "Port of this process's Prometheus /metrics endpoint (0 = off).",
    "allowed_lateness_ms": "How far (ms, event time) a tick may arrive out of order.",
    "sink_batch_rows": "Sink: most rows per ClickHouse insert.",
    "sink_flush_ms": "Sink: longest wait (ms) before a partial batch is inserted.",
    "ticks_ttl_days": "Sink: raw ticks expire this many days after event time (0 = keep).",
    "processor_batch": "Processor: most events per batch.",
    "processor_batch_ms": "Processor: longest wait (ms) to fill a batch.",
    "rolling_windows": "Trailing windows of rolling highs/lows (units s, m, h, d, w).",
    "level_steps": "Round-number level grids per symbol: SYMBOL:step,step;SYMBOL:step.",
    "level_hysteresis": "A level re-arms after price moves back by this fraction (0.001 = 0.1%).",
    "sync_groups": "Symbols whose all-time highs are paired as sync_ath: A+B[;C+D].",
    "sync_span_ms": "Two all-time highs within this span (ms) make a sync_ath.",
    "divergence_pairs": "Pairs whose ratio is watched for divergence: A/B[,C/D].",
    "divergence_clock_ms": "Common clock (ms) on which both prices of a pair are sampled.",
    "divergence_lookback_ms": "Trailing event-time lookback (ms) of the z-score.",
    "divergence_return_horizon_ms": "Horizon (ms) of the relative-return spread.",
    "divergence_z_open": "A divergence window opens when |z| reaches this.",
    "divergence_z_close": "An open divergence window closes when |z| falls below this.",
    "record_seeds": "JSON file of known records per symbol (see README); empty = none.",
}

ALL_SETTINGS = tuple(f.name for f in fields(Settings))


def settings_options(*names: str) -> Callable[[F], F]:
    """Add ``--flag`` options (with ``TICKSTREAM_*`` env vars) for the named settings."""
    by_name = {f.name: f for f in fields(Settings)}

    def decorate(func: F) -> F:
        for name in reversed(names or ALL_SETTINGS):
            f = by_name[name]
            default = f.default if f.default is not MISSING else None
            func = click.option(
                flag(name),
                name,
                envvar=envvar(name),
                type=type(default) if default is not None else str,
                default=default,
                show_default=True,
                show_envvar=True,
                help=_HELP.get(name, ""),
            )(func)
        return func

    return decorate


def build_settings(values: dict[str, Any]) -> Settings:
    """Build Settings from parsed options; a bad value stops the command naming the setting."""
    known = {k: v for k, v in values.items() if k in ALL_SETTINGS and v is not None}
    try:
        return Settings(**known)
    except ConfigError as exc:
        raise click.UsageError(f"bad setting {exc}") from exc


def pop_settings(values: dict[str, Any]) -> Settings:
    """Remove the settings options from a command's kwargs and build Settings from them."""
    picked = {k: values.pop(k) for k in list(values) if k in ALL_SETTINGS}
    return build_settings(picked)
