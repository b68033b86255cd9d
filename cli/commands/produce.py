"""`tickstream produce simulate|replay|ws`: one source, validated, published to Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
import orjson

from cli.options import pop_settings, settings_options
from producers.replay import ReplayConfig
from tickstream.settings import Settings, default_of

# price_bands and record_seeds shape the validation (producers.validation_config)
_PRODUCER_SETTINGS = (
    "kafka_bootstrap",
    "namespace",
    "partitions",
    "metrics_port",
    "price_bands",
    "record_seeds",
)


def _env(name: str) -> dict[str, Any]:
    return {"envvar": f"TICKSTREAM_{name}", "show_envvar": True}


@click.group()
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "lz4", "zstd", "snappy"]),
    default="none",
    show_default=True,
    **_env("COMPRESSION"),
    help="Kafka batch compression. none is fastest next to the broker; gzip is always "
    "available, the others need aiokafka's codec extras.",
)
@click.pass_context
def produce(ctx: click.Context, compression: str) -> None:
    """Publish ticks from one source: validated, rejects to the dead-letter topic.

    Every accepted tick goes to <namespace>.ticks (keyed by symbol); every
    rejected input goes to <namespace>.ticks.dlq with its reason and position.
    """
    from aiokafka import codec

    available = {
        "none": True,
        "gzip": codec.has_gzip(),
        "lz4": codec.has_lz4(),
        "zstd": codec.has_zstd(),
        "snappy": codec.has_snappy(),
    }
    if not available[compression]:
        raise click.BadParameter(
            f"{compression} needs its codec (pip install 'aiokafka[{compression}]')",
            param_hint="--compression / TICKSTREAM_COMPRESSION",
        )
    ctx.obj = {"compression_type": None if compression == "none" else compression}


@produce.command()
@click.option(
    "--rate",
    type=float,
    default=20.0,
    show_default=True,
    **_env("SIM_RATE"),
    help="Ticks per second across all symbols; 0 = as fast as possible.",
)
@click.option(
    "--count",
    type=int,
    default=None,
    **_env("SIM_COUNT"),
    help="Stop after this many ticks (default: run until Ctrl-C).",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    **_env("SIM_SEED"),
    help="Random seed; the same seed gives the same market.",
)
@click.option(
    "--correlation",
    type=float,
    default=0.8,
    show_default=True,
    **_env("SIM_CORRELATION"),
    help="Correlation between the assets' returns.",
)
@settings_options(*_PRODUCER_SETTINGS)
def simulate(
    rate: float, count: int | None, seed: int, correlation: float, **values: object
) -> None:
    """A simulated, correlated gold (XAU ~ $5,000) and silver (XAG ~ $107) market."""
    from producers.simulator import SimulatorConfig
    from producers.simulator import simulate as source

    settings = pop_settings(values)
    config = SimulatorConfig(rate_per_s=rate, count=count, seed=seed, correlation=correlation)
    _publish(settings, source(config))


@produce.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--speed",
    type=float,
    default=0.0,
    show_default=True,
    **_env("SPEED"),
    help="0 = as fast as possible, 1 = real time, 60 = a minute per second.",
)
@click.option(
    "--start-line",
    type=int,
    default=0,
    **_env("START_LINE"),
    help="Resume: skip data lines before this line number of the file.",
)
@click.option(
    "--start-ts",
    default=None,
    **_env("START_TS"),
    help="Resume: skip ticks before this time (ISO-8601 or epoch ms).",
)
@click.option(
    "--allow-late",
    is_flag=True,
    envvar="TICKSTREAM_ALLOW_LATE",
    show_envvar=True,
    help="Publish a file behind the namespace's clock all the same (its late ticks go to "
    "late_ticks, not to the analytics).",
)
@settings_options(*_PRODUCER_SETTINGS)
def replay(
    path: Path,
    speed: float,
    start_line: int,
    start_ts: str | None,
    allow_late: bool,
    **values: object,
) -> None:
    """Replay a CSV (header ts,symbol,price[,bid,ask,size,venue,seq]) or Parquet file.

    The file is first compared with the namespace's clock (how far its processor has come
    per symbol, from its last snapshot): a file behind it, whose ticks would all be late,
    is refused with the commands that work instead, unless --allow-late.
    """
    from producers.replay import ReplayConfig, replay_total
    from producers.replay import replay as source
    from tickstream.timestamps import parse_ts_ms

    settings = pop_settings(values)
    start_ts_ms = None
    if start_ts:
        try:
            start_ts_ms = parse_ts_ms(start_ts)
        except Exception as exc:
            raise click.BadParameter(str(exc), param_hint="--start-ts") from exc
    config = ReplayConfig(path, speed=speed, start_line=start_line, start_ts_ms=start_ts_ms)
    check = None if allow_late else config
    of = f" lines from line {start_line}" if start_line > 2 else ""  # progress: 12/12 lines...
    if start_ts:
        of = f" inputs from {start_ts}" + (f", line {start_line}" if start_line > 2 else "")
    _publish(settings, source(config), total=replay_total(config), check=check, of=of)


@produce.command()
@click.argument("url")
@click.option(
    "--subscribe",
    default=None,
    **_env("WS_SUBSCRIBE"),
    help='Message sent after every (re)connect, e.g. \'{"op":"sub","ch":"XAU"}\'.',
)
@click.option(
    "--field-map",
    default=None,
    **_env("WS_FIELD_MAP"),
    help="JSON object: venue key (dotted path) -> our field, e.g. "
    '\'{"s":"symbol","t":"ts","p":"price"}\'.',
)
@click.option(
    "--require-key",
    default=None,
    **_env("WS_REQUIRE_KEY"),
    help="Skip (do not reject) frames without this key, e.g. heartbeats.",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    **_env("WS_HEADERS"),
    help="Extra handshake header 'Name: value' (e.g. authorization); repeatable.",
)
@click.option(
    "--stale-after-s",
    type=float,
    default=30.0,
    show_default=True,
    **_env("WS_STALE_AFTER_S"),
    help="Warn when no frame arrived for this long.",
)
@settings_options(*_PRODUCER_SETTINGS)
def ws(
    url: str,
    subscribe: str | None,
    field_map: str | None,
    require_key: str | None,
    headers: tuple[str, ...],
    stale_after_s: float,
    **values: object,
) -> None:
    """Consume a venue's websocket feed (reconnects with backoff; stale-feed alarm)."""
    from producers.websocket_source import WebSocketSourceConfig, websocket_source
    from tickstream.redact import redact_url

    settings = pop_settings(values)
    try:
        mapping = orjson.loads(field_map) if field_map else {}
        if not isinstance(mapping, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise click.BadParameter(f"{field_map!r}: {exc}", param_hint="--field-map") from exc
    parsed_headers = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep:
            raise click.BadParameter(f"{header!r} is not 'Name: value'", param_hint="--header")
        parsed_headers[name.strip()] = value.strip()
    try:
        config = WebSocketSourceConfig(
            url,
            subscribe=subscribe,
            field_map=mapping,
            require_key=require_key,
            headers=parsed_headers,
            stale_after_s=stale_after_s,
            source=f"ws:{redact_url(url)}",  # a metric label and a dead-letter column
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from exc
    _publish(settings, websocket_source(config))


def _publish(
    settings: Settings,
    source: AsyncIterator[Any],
    total: int | None = None,
    check: ReplayConfig | None = None,
    of: str = "",
) -> None:
    """Publish ``source``; a replay file (``check``) only once it is not behind the clock.
    Progress counts ``total`` inputs (``of`` says which: " lines from line 9990")."""
    from cli.progress import progress_printer
    from producers.publisher import Publisher
    from producers.validation import Validator
    from producers.validation_config import validation_config
    from tickstream import metrics
    from tickstream.kafka_io import ensure_topics
    from tickstream.service_runtime import tune_for_latency

    producer_options = click.get_current_context().obj or {}  # from the produce group
    config = validation_config(settings, _record_seeds(settings))

    async def main() -> None:
        await ensure_topics(settings)
        if check is not None:
            await _refuse_if_behind(settings, check)
        metrics.serve_metrics(settings.metrics_port, "producer")
        tune_for_latency()
        async with Publisher(
            settings, Validator(config), producer_options=producer_options
        ) as publisher:
            task = asyncio.create_task(
                publisher.publish(source, progress=progress_printer(total, of=of))
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                report = await task
                print(f"published: {report.summary()}", file=sys.stderr)

    asyncio.run(main())


def _record_seeds(settings: Settings) -> dict[str, Any]:
    """The --record-seeds file's seeds (none without one): a symbol's first tick is then
    judged against what they know of it instead of being taken as the truth."""
    if not settings.record_seeds:
        return {}
    from processors.seeds import SeedError, seeds_from_file

    try:
        return dict(seeds_from_file(Path(settings.record_seeds)))
    except SeedError as exc:
        raise click.BadParameter(str(exc), param_hint="--record-seeds") from exc


async def _refuse_if_behind(settings: Settings, config: ReplayConfig) -> None:
    """Refuse a file the namespace's processor would take for late, saying what to run."""
    from cli import backfill

    check = await backfill.check_file(settings, config)
    if not check.behind:
        return
    ns = settings.namespace
    fresh = backfill.fresh_namespace(ns, check)
    run = ["run", "--namespace", ns, "--replay", str(config.path), "--until-drained"]
    if settings.kafka_bootstrap != default_of("kafka_bootstrap"):
        run += ["--kafka-bootstrap", settings.kafka_bootstrap]
    raise click.ClickException(
        f"{backfill.behind_summary(ns, check)}\n"
        f"Backfill it into database {settings.clickhouse_database} with a clock of its own, "
        "through a pipeline of its own (add --clickhouse-url for a ClickHouse server):\n"
        f"  {backfill.command_line(run, backfill=None)}\n"
        "or publish it into a new namespace (and run a processor and a sink for it):\n"
        f"  {backfill.command_line(sys.argv[1:], namespace=fresh)}\n"
        "or add --allow-late to publish it all the same (its late ticks go to late_ticks)."
    )
