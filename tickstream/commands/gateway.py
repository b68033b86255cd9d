"""`tickstream gateway`: the desk feed (websockets) and the live board, fed from Kafka."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from tickstream.options import pop_settings, settings_options


def _opt(name: str, **kwargs: object):  # type: ignore[no-untyped-def]
    env = "TICKSTREAM_GATEWAY_" + name.upper().replace("-", "_")
    return click.option(f"--{name}", envvar=env, show_envvar=True, **kwargs)  # type: ignore[arg-type]


@click.command()
@_opt("host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@_opt("port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="TCP port.")
@_opt(
    "tokens",
    default=None,
    help="Access tokens: 'TOKEN[:SYM+SYM],...' (a symbol list restricts that token).",
)
@_opt(
    "tokens-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File of tokens, one a line: 'TOKEN [SYM SYM ...]', '#' comments.",
)
@_opt(
    "tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM certificate (chain): serve wss:// and https://.",
)
@_opt(
    "tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM private key of --tls-cert (if not in the certificate file).",
)
@_opt(
    "conflation-ms",
    type=click.IntRange(0, 60_000),
    default=250,
    show_default=True,
    help="Ticks: at most the latest per symbol per interval (0 = every tick).",
)
@_opt(
    "max-send-buffer",
    type=click.IntRange(1024),
    default=2 << 20,
    show_default=True,
    help="Bytes queued for one client before it is disconnected (4008 slow consumer).",
)
@_opt(
    "max-message-bytes",
    type=click.IntRange(256),
    default=64 << 10,
    show_default=True,
    help="Largest client message accepted (larger: close 1009).",
)
@_opt(
    "heartbeat-s",
    type=click.FloatRange(0.1),
    default=15.0,
    show_default=True,
    help="Seconds between server heartbeat frames.",
)
@_opt(
    "backfill",
    type=click.IntRange(0),
    default=5_000,
    show_default=True,
    help="Messages per partition of ticks/aggregates read at start for the snapshot state.",
)
@_opt(
    "replay-capacity",
    type=click.IntRange(1),
    default=200_000,
    show_default=True,
    help="Signals kept in memory for since_ms replays (the signals topic is read whole).",
)
@settings_options(
    "kafka_bootstrap", "namespace", "partitions", "clickhouse_url", "level_steps", "record_seeds"
)
def gateway(
    host: str,
    port: int,
    tokens: str | None,
    tokens_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    conflation_ms: int,
    max_send_buffer: int,
    max_message_bytes: int,
    heartbeat_s: float,
    backfill: int,
    replay_capacity: int,
    **values: object,
) -> None:
    """Serve ticks, bars, rolling highs, record breaks and divergence windows to desks.

    Websocket clients connect to ws://HOST:PORT/ws?token=TOKEN and speak the JSON protocol
    of docs/gateway.md; the live board is at http://HOST:PORT/?token=TOKEN, Prometheus
    metrics at /metrics. Runs until SIGINT/SIGTERM.
    """
    from sinks.gateway.protocol import TokenTable
    from sinks.gateway.server import GatewayConfig, run_gateway, ssl_context

    settings = pop_settings(values)
    try:
        table = TokenTable({})
        if tokens:
            table = table.merged(TokenTable.parse_list(tokens))
        if tokens_file:
            table = table.merged(TokenTable.parse_file(tokens_file.read_text()))
    except ValueError as exc:
        raise click.UsageError(f"--tokens / --tokens-file: {exc}") from exc
    if not len(table):
        raise click.UsageError(
            "no access token: give --tokens / TICKSTREAM_GATEWAY_TOKENS "
            "or --tokens-file / TICKSTREAM_GATEWAY_TOKENS_FILE"
        )
    if tls_key and not tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    try:
        ssl = ssl_context(tls_cert, tls_key) if tls_cert else None
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"--tls-cert / --tls-key: {exc}") from exc
    try:
        config = GatewayConfig(
            kafka_bootstrap=settings.kafka_bootstrap,
            namespace=settings.namespace,
            tokens=table,
            host=host,
            port=port,
            ssl=ssl,
            conflation_ms=conflation_ms,
            max_send_buffer=max_send_buffer,
            max_message_bytes=max_message_bytes,
            heartbeat_s=heartbeat_s,
            backfill=backfill,
            replay_capacity=replay_capacity,
            partitions=settings.partitions,
            level_steps=settings.parsed_level_steps(),
            known_aths=_known_aths(settings.record_seeds),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_gateway(config, stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc


def _known_aths(path: str) -> dict[str, tuple[float, int]]:
    """All-time highs the processor was seeded with, so the board measures from them too."""
    if not path:
        return {}
    from processors.seeds import seeds_from_file

    return {s: (seed.ath, seed.ath_ts_ms) for s, seed in seeds_from_file(Path(path)).items()}
