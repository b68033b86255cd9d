"""`tickstream run`, `process` and `sink`: everything at once, or one component at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from cli.options import pop_settings, section_options, settings_options
from tickstream.settings import check_token, default_of

log = logging.getLogger(__name__)

_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


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
@click.option(
    "--backfill",
    is_flag=True,
    envvar="TICKSTREAM_BACKFILL",
    show_envvar=True,
    help="With --replay: process the file with a clock of its own (history older than the "
    "namespace's clock), writing into the namespace's database.",
)
@click.option(
    "--allow-late",
    is_flag=True,
    envvar="TICKSTREAM_ALLOW_LATE",
    show_envvar=True,
    help="With --replay: publish a file behind the namespace's clock all the same (its late "
    "ticks go to late_ticks, not to the analytics).",
)
@section_options(
    "gateway",
    prefixed=True,
    skip=("tokens",),  # the run's board token is --gateway-token, a single one
    overrides={
        "port": {
            "show_default": f"{default_of('gateway.port')}; with --until-drained: 0 unless given",
            "help": "Port of the desk-feed gateway and its live board (0 = no gateway).",
        }
    },
)
@click.option(
    "--gateway-token",
    default=None,
    envvar="TICKSTREAM_GATEWAY_TOKEN",
    show_envvar=True,
    show_default="a fresh random one",
    help="Access token of the live board and the websocket feed (URL-safe characters).",
)
@settings_options()
@click.pass_context
def run(
    ctx: click.Context,
    replay: Path | None,
    until_drained: bool,
    speed: float,
    backfill: bool,
    allow_late: bool,
    gateway_token: str | None,
    **values: object,
) -> None:
    """Run the whole pipeline locally: broker (started if none answers), processor, sink, producer,
    and the desk-feed gateway with its live board.

    Without --replay a simulated gold/silver market (--sim-rate ticks a second) is published
    until Ctrl-C. With --replay
    (and without --until-drained) the file is published and the pipeline keeps running, board
    included, until Ctrl-C.

    A replay is first compared with the namespace's clock (how far its processor has
    come per symbol). A file behind it, whose ticks would all be late, is refused with the
    commands that work instead: --backfill (a clock of its own for the file: a temporary
    namespace, removed at the end, writing into this namespace's database), a new
    --namespace, or --allow-late. The last line of every run counts its late ticks.

    The start-up banner prints the live board's URL with its token
    (http://127.0.0.1:8765/?token=...). A run with --until-drained exits as soon as the
    file is in ClickHouse, so it starts no gateway unless --gateway-port (or
    TICKSTREAM_GATEWAY_PORT) is given; it then serves the board until the run drains.
    When the default port is taken the run goes on without a board (a warning); a port
    you gave must be free. The other --gateway-* options are the gateway's own (see
    `tickstream gateway --help`).

    The processors (--processors N, one consumer group; processor i serves its metrics on
    --metrics-port + 1 + i) and the gateway are child processes the run supervises: one that
    dies is started again after a backoff (logged, counted in
    tickstream_child_restarts_total), one that refuses to start (a bad setting) stops the
    run with its error, and they all die with the run, however it ends.

    While it runs (without --until-drained), the run serves ClickHouse's HTTP interface
    over its chDB directory, read-only, on 127.0.0.1:8124 (--clickhouse-http-port, 0 = off;
    a taken default port only warns), with a fresh random password unless
    --clickhouse-http-password is given: `tickstream query` in another shell finds it by
    itself, and the banner prints the URL for Grafana or clickhouse-connect.
    """
    from cli.runner import RunFailed, Runner, RunOptions

    settings = pop_settings(values)
    needs_replay = {"--until-drained": until_drained, "--backfill": backfill}
    needs_replay["--allow-late"] = allow_late
    for name, given in needs_replay.items():
        if given and replay is None:
            raise click.UsageError(f"{name} needs --replay FILE")
    if backfill and allow_late:
        raise click.UsageError("--backfill and --allow-late: a backfill has no late ticks to allow")
    gateway_port_given = ctx.get_parameter_source("gateway_port") in _GIVEN
    http_port_given = ctx.get_parameter_source("clickhouse_http_port") in _GIVEN
    if settings.is_chdb and not until_drained and not http_port_given:
        from tickstream.chdb_http import RUN_PORT  # queries during a run: see docs/queries.md

        settings = settings.replace(clickhouse_http_port=RUN_PORT)
    if until_drained and not gateway_port_given:
        settings = settings.replace(gateway=settings.gateway.replace(port=0))
    if gateway_token is not None:
        try:
            check_token(gateway_token)
        except ValueError as exc:
            raise click.UsageError(f"--gateway-token / TICKSTREAM_GATEWAY_TOKEN: {exc}") from exc
    options = RunOptions(
        replay,
        until_drained,
        speed,
        gateway_port_given=gateway_port_given,
        clickhouse_http_port_given=http_port_given,
        gateway_token=gateway_token,
        backfill=backfill,
        allow_late=allow_late,
        argv=tuple(sys.argv[1:]),
    )
    try:
        code = asyncio.run(Runner(settings, options).run())
    except RunFailed as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


@click.command()
@click.option(
    "--seed-from-clickhouse/--no-seed-from-clickhouse",
    default=True,
    envvar="TICKSTREAM_SEED_FROM_CLICKHOUSE",
    show_envvar=True,
    show_default=True,
    help="Without --record-seeds, read known records from ClickHouse at start.",
)
@settings_options()
def process(seed_from_clickhouse: bool, **values: object) -> None:
    """Run the stream processor (a Faust worker) until SIGINT/SIGTERM.

    Its state (kernel snapshots and input offsets) lives on a compacted Kafka
    topic, so a restarted worker resumes exactly where it stopped. Record seeds
    only matter for symbols that state does not know yet. It takes every shared
    setting, as `tickstream run` hands its child the whole Settings.
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
    "clickhouse_http_port",
    "clickhouse_http_host",
    "clickhouse_http_password",
    "clickhouse_http_writable",
)
def sink(**values: object) -> None:
    """Run the ClickHouse sink until SIGINT/SIGTERM (commits offsets only after inserts).

    With a chDB directory and --clickhouse-http-port, it also serves ClickHouse's HTTP
    interface over that directory (which it holds, so nothing else can open it), read-only
    unless --clickhouse-http-writable: see docs/queries.md.
    """
    from sinks.clickhouse_sink import ClickHouseSink
    from tickstream import metrics
    from tickstream.kafka_io import ensure_topics
    from tickstream.service_runtime import tune_for_latency

    settings = pop_settings(values)
    from tickstream import chdb_http

    chdb_http.check_settings(settings, settings.clickhouse_http_password, required=True)

    async def main() -> None:
        await ensure_topics(settings)
        metrics.serve_metrics(settings.metrics_port, "sink")
        service = ClickHouseSink(settings)
        await service.start()
        tune_for_latency()
        server = None
        try:  # the engine is open now: serve it
            server = chdb_http.serve(settings, settings.clickhouse_http_password, required=True)
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(service.run())
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            if server is not None:
                server.close()
            await service.stop()
            service.close()

    asyncio.run(main())
