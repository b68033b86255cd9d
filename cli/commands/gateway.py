"""`tickstream gateway`: the desk feed (websockets) and the live board, fed from Kafka."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from cli.options import pop_settings, section_options, settings_options, usage_error
from tickstream.settings import ConfigError


@click.command()
@section_options("gateway")
@settings_options(
    "kafka_bootstrap",
    "namespace",
    "partitions",
    "clickhouse_url",
    "level_steps",
    "record_seeds",
    every=True,  # `tickstream run` hands its gateway child the whole Settings
)
def gateway(**values: object) -> None:
    """Serve ticks, bars, rolling highs, record breaks and divergence windows to desks.

    Websocket clients connect to ws://HOST:PORT/ws?token=TOKEN and speak the JSON protocol
    of docs/gateway.md; the live board is at http://HOST:PORT/?token=TOKEN, Prometheus
    metrics at /metrics. Runs until SIGINT/SIGTERM.
    """
    from sinks.gateway.server import GatewayConfig, run_gateway
    from tickstream.service_runtime import tune_for_latency

    settings = pop_settings(values)
    try:
        config = GatewayConfig.from_settings(settings, _known_aths(settings.record_seeds))
    except ConfigError as exc:
        raise usage_error(exc) from exc

    async def main() -> None:
        tune_for_latency()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_gateway(config, stop)

    try:
        asyncio.run(main())
    except OSError as exc:  # a port taken: one line naming the setting that moves it
        where = f"{config.host}:{config.port}"
        reason = exc.strerror or str(exc)
        taken = ConfigError("gateway.port", f"cannot listen on {where} ({reason})")
        raise click.ClickException(usage_error(taken).message) from exc


def _known_aths(path: str) -> dict[str, tuple[float, int]]:
    """All-time highs the processor was seeded with, so the board measures from them too."""
    if not path:
        return {}
    from processors.seeds import seeds_from_file

    return {s: (seed.ath, seed.ath_ts_ms) for s, seed in seeds_from_file(Path(path)).items()}
