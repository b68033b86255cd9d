"""`tickstream run`, `process` and `sink`: the pipeline, whole or one component at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import click

from tickstream.options import pop_settings, settings_options

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="TICKSTREAM_REPLAY",
    show_envvar=True,
    help="Publish this CSV (header ts,symbol,price[,bid,ask,...]) instead of simulating.",
)
@click.option(
    "--until-drained",
    is_flag=True,
    envvar="TICKSTREAM_UNTIL_DRAINED",
    show_envvar=True,
    help="With --replay: exit 0 once everything derived from the file is in ClickHouse.",
)
@click.option(
    "--speed",
    type=float,
    default=0.0,
    show_default=True,
    envvar="TICKSTREAM_SPEED",
    show_envvar=True,
    help="Replay pace: 0 = as fast as possible, 1 = real time, 60 = a minute per second.",
)
@settings_options()
def run(replay: Path | None, until_drained: bool, speed: float, **values: object) -> None:
    """Run the whole pipeline locally: broker (started if none answers), processor, sink, producer.

    Without --replay a simulated gold/silver market is published until Ctrl-C.
    """
    from tickstream.runner import Pipeline, PipelineFailed, RunOptions

    settings = pop_settings(values)
    if until_drained and replay is None:
        raise click.UsageError("--until-drained needs --replay FILE")
    try:
        code = asyncio.run(Pipeline(settings, RunOptions(replay, until_drained, speed)).run())
    except PipelineFailed as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


ANALYTICS_SETTINGS = (
    "allowed_lateness_ms",
    "rolling_windows",
    "level_steps",
    "level_hysteresis",
    "sync_groups",
    "sync_span_ms",
    "divergence_pairs",
    "divergence_clock_ms",
    "divergence_lookback_ms",
    "divergence_return_horizon_ms",
    "divergence_z_open",
    "divergence_z_close",
    "record_seeds",
)


@click.command()
@click.option(
    "--seed-from-clickhouse/--no-seed-from-clickhouse",
    default=True,
    envvar="TICKSTREAM_SEED_FROM_CLICKHOUSE",
    show_envvar=True,
    show_default=True,
    help="Without --record-seeds, read known records from ClickHouse at start.",
)
@settings_options(
    "kafka_bootstrap",
    "namespace",
    "partitions",
    "metrics_port",
    "processor_batch",
    "processor_batch_ms",
    "clickhouse_url",
    "clickhouse_database",
    *ANALYTICS_SETTINGS,
)
def process(seed_from_clickhouse: bool, **values: object) -> None:
    """Run the stream processor (a Faust worker) until SIGINT/SIGTERM.

    Its state (kernel snapshots and input offsets) lives on a compacted Kafka
    topic, so a restarted worker resumes exactly where it stopped. Record seeds
    only matter for symbols that state does not know yet.
    """
    from processors.app import run_worker

    run_worker(pop_settings(values), seed_from_clickhouse)


@click.command()
@settings_options(
    "kafka_bootstrap",
    "namespace",
    "partitions",
    "clickhouse_url",
    "clickhouse_database",
    "metrics_port",
    "sink_batch_rows",
    "sink_flush_ms",
    "ticks_ttl_days",
)
def sink(**values: object) -> None:
    """Run the ClickHouse sink until SIGINT/SIGTERM (commits offsets only after inserts)."""
    from sinks.clickhouse_sink import ClickHouseSink
    from tickstream import metrics
    from tickstream.kafka_io import ensure_topics

    settings = pop_settings(values)

    async def main() -> None:
        await ensure_topics(settings)
        metrics.serve_metrics(settings.metrics_port, "sink")
        service = ClickHouseSink(settings)
        await service.start()
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(service.run())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await service.stop()
            service.close()

    asyncio.run(main())
