"""What `tickstream run` tells the person at the terminal: the banner once it is up (where
to look: metrics, the live board, ClickHouse's HTTP interface) and, as its last line,
what became of the run and of its late ticks."""

from __future__ import annotations

from urllib.parse import quote

from cli.children import processor_metrics_port
from sinks.clickhouse_sink import ClickHouseSink
from tickstream.chdb_http import ChdbHttpServer
from tickstream.redact import redact_url
from tickstream.settings import Settings


def local_host(host: str) -> str:
    """The address to reach a server listening on ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def board_url(settings: Settings, token: str) -> str:
    gateway = settings.gateway
    host = local_host(gateway.host)
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if gateway.tls_cert else "http"
    return f"{scheme}://{host}:{gateway.port}/?token={quote(token)}"


def banner(
    settings: Settings,
    *,
    metrics_port: int,
    simulated: bool,
    backfill_of: str | None,
    board: str | None,
    board_skipped: str | None,
    clickhouse_http: ChdbHttpServer | None,
    clickhouse_http_password: str,
) -> str:
    """``board``: the live board's URL (None: no gateway, for ``board_skipped``'s reason)."""
    s = settings
    lines = [
        f"tickstream namespace {s.namespace!r}, Kafka {s.kafka_bootstrap}",
        f"ClickHouse {redact_url(s.clickhouse_url)} (database {s.clickhouse_database})",
    ]
    if metrics_port:
        first = processor_metrics_port(s, 0)
        processors = f"http://127.0.0.1:{first}/metrics (processor)"
        if s.processors > 1:
            last = processor_metrics_port(s, s.processors - 1)
            processors = (
                f"http://127.0.0.1:{first}/metrics ... :{last}/metrics "
                f"(processors 0-{s.processors - 1})"
            )
        lines.append(
            f"metrics: http://127.0.0.1:{metrics_port}/metrics (producer, sink, child "
            f"restarts), {processors}"
        )
    if simulated:
        lines.append(f"simulated market: {s.sim_rate:g} ticks/s (--sim-rate)")
    if backfill_of is not None:
        lines.append(
            f"backfill for namespace {backfill_of!r}: a clock of its own (this namespace, "
            "removed at the end)"
        )
    if board is not None:
        lines.append(f"live board: {board}")
        ws = board.replace("http", "ws", 1).replace("/?", "/ws?", 1)
        lines.append(f"desk feed: {ws}")
    elif board_skipped:
        lines.append(f"live board: {board_skipped}")
    if clickhouse_http is not None:
        given = bool(s.clickhouse_http_password)  # the user knows it: not on the screen
        password = "(--clickhouse-http-password)" if given else clickhouse_http_password
        mode = "read-write" if s.clickhouse_http_writable else "read-only"
        lines.append(
            f"ClickHouse HTTP interface ({mode}, meanwhile): {clickhouse_http.url}, "
            f"user default, password {password}; `tickstream query` finds it by itself"
        )
    elif s.clickhouse_http_port and s.is_chdb:
        lines.append(
            f"ClickHouse HTTP interface: none, port {s.clickhouse_http_port} is taken "
            "(see the warning above)"
        )
    lines.append(
        f'query afterwards: tickstream query "SELECT * FROM {s.clickhouse_database}.bars_1m '
        'LIMIT 10"'
    )
    return "\n".join(lines)


async def late_ticks(sink: ClickHouseSink, database: str, started_ms: int, drained: bool) -> str:
    """The run's late ticks, as the last line reports them: rows of the database's
    late_ticks table received (``recv_ts``) since the run started, once each.

    Counted in ClickHouse because that is where an analyst finds them, and it is the
    only place that holds them all once the run drained (the processor's counter
    lives in its own process, and is gone with it).
    """
    table = f"{database}.late_ticks"
    try:
        ch = sink.ch
        late = await ch.run(
            ch.client.command,
            f"SELECT count() FROM {table} WHERE recv_ts >= "
            f"fromUnixTimestamp64Milli({int(started_ms)})",
            settings={"final": 1},
        )
    except Exception as exc:  # the run's own outcome stands; say what could not be read
        return f"late ticks: unknown ({table}: {str(exc).splitlines()[0][:200]})"
    so_far = "" if drained else " so far"
    return f"late ticks: {int(late):,}{so_far} (rows of {table} received during this run)"
