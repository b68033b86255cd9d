"""Click options for the settings: one flag and one environment variable each.

The flags, variables, types and defaults all come from ``tickstream.settings``; only the
help texts live here. Each command decorates itself with the settings it takes and
builds one ``Settings`` with ``pop_settings``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import click

from tickstream.settings import ConfigError, Settings, default_of, envvar, flag, setting_names

F = TypeVar("F", bound=Callable[..., Any])

_HELP = {
    "kafka_bootstrap": "Kafka bootstrap servers, host:port[,host:port].",
    "namespace": "Prefix of every topic and consumer group, and the ClickHouse database's "
    "name unless --clickhouse-database is given: two namespaces never mix.",
    "clickhouse_url": "chdb:///<dir> (embedded ClickHouse engine) or http(s)://host:8123.",
    "clickhouse_database": "ClickHouse database holding tickstream's tables "
    "[default: tickstream for the namespace tickstream, else tickstream_<namespace>].",
    "partitions": "Partitions of each topic tickstream creates.",
    "processors": "tickstream run: stream processor child processes, one consumer group "
    "sharing the partitions (1 to --partitions); processor i (from 0) serves its metrics on "
    "--metrics-port + 1 + i.",
    "metrics_port": "Port of this process's Prometheus /metrics endpoint (0 = off; "
    "`tickstream run`: processor i on this + 1 + i).",
    "clickhouse_http_port": "Serve ClickHouse's HTTP interface over the chDB directory this "
    "process holds, so clients can query it meanwhile (0 = off; `tickstream run`: 8124 unless "
    "given; needs the password).",
    "clickhouse_http_host": "Interface of the ClickHouse HTTP interface (0.0.0.0: all).",
    "clickhouse_http_password": "Password of its user 'default' (`tickstream run`: a fresh "
    "random one unless given; `tickstream query` finds it by itself).",
    "clickhouse_http_writable": "Let its clients write (inserts, DDL): off = read-only, as "
    "production's analyst (readonly=1, final=1).",
    "clickhouse_wait_s": "Processor: how long (s) to wait at start for ClickHouse to give "
    "the record seeds before failing (it never starts without them).",
    "allowed_lateness_ms": "How far (ms, event time) a tick may arrive out of order.",
    "sim_rate": "tickstream run: the simulated market's ticks/s (0 = as fast as possible).",
    "lateness_by_symbol": "Per-symbol lateness (ms) overriding the default: XAU:0;XAG:500.",
    "heartbeat_ms": "Producers: after this long (ms, wall clock) without a tick of a symbol, "
    "send its clock so the processor confirms its last ticks without waiting (0 = off).",
    "publish_linger_ms": "Producers: under a steady stream a symbol's ticks are shipped at most "
    "once per this many ms (more: fewer, larger messages; a lone tick leaves at once).",
    "record_warmup_ms": "A symbol with neither record seed nor history makes no all-time "
    "high/low rows in its first this many ms of event time (0 = from its second tick).",
    "max_jump_ms": "A tick stamped more than this (ms) past its symbol's clock moves the clock "
    "only once --jump-confirm-ticks later ticks confirm the jump (0 = off).",
    "max_jump_by_symbol": "Per-symbol --max-jump-ms overriding the default: XAU:0;XAG:30000.",
    "jump_confirm_ticks": "Later ticks that confirm a clock jump beyond --max-jump-ms (>= 1).",
    "price_bands": "Producers: per-symbol sanity band; a price outside is rejected as "
    "out_of_band: XAU:100-100000;XAG:1-5000.",
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
    "record_seeds": "JSON file of known records per symbol (see README); empty = none. "
    "Producers judge a symbol's first tick against it.",
    "gateway.host": "Interface to listen on.",
    "gateway.port": "TCP port.",
    "gateway.tokens": "Access tokens: 'TOKEN[:SYM+SYM],...' (a symbol list restricts that token).",
    "gateway.tokens_file": "File of tokens, one a line: 'TOKEN [SYM SYM ...]', '#' comments.",
    "gateway.tls_cert": "PEM certificate (chain): serve wss:// and https://.",
    "gateway.tls_key": "PEM private key of the certificate (if not in the certificate file).",
    "gateway.conflation_ms": "Ticks: at most the latest per symbol per interval (0 = every tick).",
    "gateway.max_send_buffer": "Bytes queued for one client before it is disconnected "
    "(4008 slow consumer).",
    "gateway.max_message_bytes": "Largest client message accepted (larger: close 1009).",
    "gateway.heartbeat_s": "Seconds between server heartbeat frames.",
    "gateway.backfill": "Messages per partition of ticks/aggregates read at start for the "
    "snapshot state.",
    "gateway.max_symbols_per_client": "Symbols, pairs and sync groups one desk client may "
    "subscribe to (past it: error too_many_symbols, nothing changed).",
    "gateway.replay_capacity": "Signals kept in memory for since_ms replays (the signals topic "
    "is read whole).",
}

ALL_SETTINGS = tuple(n for n in setting_names() if "." not in n)  # the shared ones: no section


def param_name(name: str) -> str:
    """The click parameter of a setting (``gateway_port``): a section's names cannot collide."""
    return name.replace(".", "_")


_BY_PARAM = {param_name(n): n for n in setting_names()}


def settings_options(*names: str, every: bool = False) -> Callable[[F], F]:
    """Add ``--flag`` options (with ``TICKSTREAM_*`` env vars) for the named shared settings.

    Without names: all of them. ``every=True`` also accepts the unnamed ones, hidden from
    --help: a command that `tickstream run` starts as a child gets the whole Settings
    through its environment and must not drop a setting it does not list.
    """
    shown = names or ALL_SETTINGS
    declared = ALL_SETTINGS if every else shown

    def decorate(func: F) -> F:
        for name in reversed(declared):
            func = _option(name, flag(name), hidden=name not in shown)(func)
        return func

    return decorate


def section_options(
    section: str,
    *,
    prefixed: bool = False,
    skip: Collection[str] = (),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[F], F]:
    """Add the options of a section of Settings (``gateway``), variables TICKSTREAM_GATEWAY_*.

    On the section's own command (`tickstream gateway`) the flags are plain (``--port``);
    on a command that does more (`tickstream run`) they carry the section's name
    (``--gateway-port``). ``skip``: settings the command sets itself; ``overrides``: click
    arguments (help, show_default) that differ on that command.
    """
    names = [n for n in setting_names() if n.startswith(section + ".")]
    names = [n for n in names if n.partition(".")[2] not in skip]
    overrides = overrides or {}

    def decorate(func: F) -> F:
        for name in reversed(names):
            key = name.partition(".")[2]
            spelled = "--" + param_name(name).replace("_", "-") if prefixed else flag(name)
            func = _option(name, spelled, **overrides.get(key, {}))(func)
        return func

    return decorate


def _option(name: str, spelled: str, **changes: Any) -> Callable[[F], F]:
    default = default_of(name)
    kwargs: dict[str, Any] = {
        "envvar": envvar(name),
        "type": type(default),
        "default": default,
        "show_default": default != "",  # an empty default means "none"
        "show_envvar": True,
        "help": _HELP.get(name, ""),
        **changes,
    }
    return click.option(spelled, param_name(name), **kwargs)


def pop_settings(values: dict[str, Any]) -> Settings:
    """Remove the settings options from a command's kwargs and build Settings from them."""
    picked = {_BY_PARAM[k]: values.pop(k) for k in list(values) if k in _BY_PARAM}
    try:
        return Settings.from_flat({k: v for k, v in picked.items() if v is not None})
    except ConfigError as exc:
        raise usage_error(exc) from exc


def usage_error(exc: ConfigError) -> click.UsageError:
    """A bad setting as a usage error, named with the flag of the running command.

    The same setting is ``--port`` on `tickstream gateway` and ``--gateway-port`` on
    `tickstream run`; the variable is the same on both.
    """
    spelled = flag(exc.setting)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        for param in ctx.command.params:
            if param.name == param_name(exc.setting) and param.opts:
                spelled = param.opts[0]
    return click.UsageError(f"bad setting {spelled} / {envvar(exc.setting)}: {exc.problem}")
