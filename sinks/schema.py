"""The ClickHouse schema as ordered, idempotent migrations applied at sink start-up.

Every table is a ReplacingMergeTree ordered by the row's identity, so a row
written twice (a retried insert, a sink restart, the same file replayed again)
is one row for any query that reads with FINAL (the ``final=1`` setting does
that for every table; `tickstream query` sets it, and the docker-compose
ClickHouse profile sets it for analysts). Partitions are by month of the row's
event time, which is part of the identity, so duplicates always meet in the
same partition.

Migration 2 adds what analysts ask most, kept current by materialized views on
``ticks``: OHLC at 1m/1h/1d (``ohlc_1m``, ``ohlc_1h``, ``ohlc_1d`` views over
AggregatingMergeTree state tables), the daily high and low (``daily_high_low``)
and the latest price per symbol (``latest_price``). Each state is idempotent, so
a tick inserted twice (a retry, a restart, a second replay) changes nothing:
open/close are ``argMin``/``argMax`` over a total order of (ts, price), high and
low are ``max``/``min``, and the tick count is ``uniqExact`` over the tick's
identity (the columns of ``ticks``' ORDER BY), i.e. the number of distinct ticks.
1h and 1d are cascaded from the 1m states (cheaper than three views on ticks).
It also adds ``ticks_ingest``, a Null table the sink writes tick batches into as
JSON (ClickHouse parses them, Python does not); its view converts and fills ``ticks``.
The aggregates outlive raw ticks: ``ticks_ttl_days`` (see ``apply_ticks_ttl``)
may expire old ticks while their bars stay.

Migration 4 adds the real-time desk path's tables: ``rolling_breaks`` (a tick making
a new high or low of a trailing window) and ``signal_ledger`` (every provisional,
confirmed or retracted event of a desk signal, with the receipt time of the tick
behind it and the processor's emission time, so desk latency is plain SQL).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from tickstream.contracts import TICK_COLUMNS
from tickstream.model import TICK_IDENTITY

log = logging.getLogger(__name__)

TS = "DateTime64(3, 'UTC')"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def migrations(db: str) -> tuple[Migration, ...]:
    dedup = "SETTINGS non_replicated_deduplication_window = 1000"
    tick_columns = f"""
        symbol LowCardinality(String),
        ts {TS} CODEC(Delta, ZSTD(1)),
        price Float64 CODEC(Gorilla, ZSTD(1)),
        bid Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
        ask Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
        size Nullable(Float64) CODEC(ZSTD(1)),
        venue LowCardinality(Nullable(String)),
        seq Nullable(Int64) CODEC(Delta, ZSTD(1)),
        recv_ts Nullable({TS}) CODEC(Delta, ZSTD(1))"""
    tick_identity = f"({', '.join(_tick_identity_columns())})"
    return (
        Migration(
            1,
            "ticks, bars, signals, rejected and late ticks",
            (
                f"""CREATE TABLE IF NOT EXISTS {db}.ticks ({tick_columns},
                    inserted_at {TS} DEFAULT now64(3) CODEC(Delta, ZSTD(1)))
                ENGINE = ReplacingMergeTree(inserted_at)
                PARTITION BY toYYYYMM(ts) ORDER BY {tick_identity} {dedup}""",
                f"""CREATE TABLE IF NOT EXISTS {db}.late_ticks ({tick_columns},
                    inserted_at {TS} DEFAULT now64(3) CODEC(Delta, ZSTD(1)))
                ENGINE = ReplacingMergeTree(inserted_at)
                PARTITION BY toYYYYMM(ts) ORDER BY {tick_identity} {dedup}""",
                f"""CREATE TABLE IF NOT EXISTS {db}.bars_1m (
                    symbol LowCardinality(String),
                    ts {TS} CODEC(Delta, ZSTD(1)),
                    open Float64, high Float64, low Float64, close Float64,
                    ticks UInt32)
                ENGINE = ReplacingMergeTree(ticks)
                PARTITION BY toYYYYMM(ts) ORDER BY (symbol, ts) {dedup}""",
                f"""CREATE TABLE IF NOT EXISTS {db}.rolling_highs (
                    symbol LowCardinality(String),
                    window LowCardinality(String),
                    ts {TS} CODEC(Delta, ZSTD(1)),
                    high Float64, high_ts {TS},
                    low Float64, low_ts {TS})
                ENGINE = ReplacingMergeTree
                PARTITION BY toYYYYMM(ts) ORDER BY (symbol, window, ts) {dedup}""",
                f"""CREATE TABLE IF NOT EXISTS {db}.record_breaks (
                    symbol LowCardinality(String),
                    kind LowCardinality(String),
                    ts {TS},
                    price Float64,
                    level Float64,
                    step Float64,
                    prev_ts Nullable({TS}),
                    since_prev_s Nullable(Float64),
                    first_time UInt8)
                ENGINE = ReplacingMergeTree
                PARTITION BY toYYYYMM(ts) ORDER BY (symbol, kind, step, level, ts) {dedup}""",
                f"""CREATE TABLE IF NOT EXISTS {db}.divergence_windows (
                    pair LowCardinality(String),
                    metric LowCardinality(String),
                    direction Int8,
                    opened_at {TS},
                    closed_at Nullable({TS}),
                    open_value Float64,
                    peak_value Float64,
                    peak_at {TS},
                    close_value Nullable(Float64),
                    version UInt64)
                ENGINE = ReplacingMergeTree(version)
                PARTITION BY toYYYYMM(opened_at) ORDER BY (pair, metric, opened_at) {dedup}""",
                f"""CREATE TABLE IF NOT EXISTS {db}.rejected_ticks (
                    received_at {TS},
                    source LowCardinality(String),
                    position String,
                    raw String,
                    reason LowCardinality(String),
                    detail String,
                    symbol Nullable(String))
                ENGINE = ReplacingMergeTree(received_at)
                ORDER BY (source, position, reason, raw) {dedup}""",
            ),
        ),
        Migration(
            2, "OHLC 1m/1h/1d, daily high/low and latest price from ticks", _analyst_views(db)
        ),
        Migration(
            3,
            "divergence windows keep the z-scores of their opening and peak",
            (
                f"""ALTER TABLE {db}.divergence_windows
                    ADD COLUMN IF NOT EXISTS z_open_value Nullable(Float64) AFTER close_value,
                    ADD COLUMN IF NOT EXISTS z_peak Nullable(Float64) AFTER z_open_value""",
            ),
        ),
        Migration(
            4,
            "rolling breaks and the desk signal ledger",
            (
                f"""CREATE TABLE IF NOT EXISTS {db}.rolling_breaks (
                    symbol LowCardinality(String),
                    window LowCardinality(String),
                    record LowCardinality(String),
                    ts {TS} CODEC(Delta, ZSTD(1)),
                    price Float64 CODEC(Gorilla, ZSTD(1)),
                    prev Float64 CODEC(Gorilla, ZSTD(1)),
                    prev_ts {TS} CODEC(Delta, ZSTD(1)))
                ENGINE = ReplacingMergeTree
                PARTITION BY toYYYYMM(ts) ORDER BY (symbol, window, record, ts, price) {dedup}""",
                # one row per (signal, status); the id is derived from the signal's identity,
                # event time included, so the copies of an event share a partition. The
                # symbol leads the key for locality (it is part of the id too).
                f"""CREATE TABLE IF NOT EXISTS {db}.signal_ledger (
                    id String,
                    status LowCardinality(String),
                    signal LowCardinality(String),
                    symbol LowCardinality(String),
                    ts {TS} CODEC(Delta, ZSTD(1)),
                    price Float64 CODEC(Gorilla, ZSTD(1)),
                    recv_ts Nullable({TS}) CODEC(Delta, ZSTD(1)),
                    emitted_at {TS} CODEC(Delta, ZSTD(1)),
                    announced UInt8,
                    reason LowCardinality(String),
                    row String CODEC(ZSTD(3)))
                ENGINE = ReplacingMergeTree
                PARTITION BY toYYYYMM(ts) ORDER BY (symbol, id, status) {dedup}""",
            ),
        ),
        Migration(5, "per-day record states that outlive raw ticks", _record_states(db)),
    )


def _record_states(db: str) -> tuple[str, ...]:
    """Migration 5: each symbol's daily high and low with the tick that set them.

    Record seeds used to be read from ``ticks``, which ``ticks_ttl_days`` may expire:
    an expired all-time high would come back as a false new one. These states are
    aggregates (never expired), exact to the tick (the earliest tick at the extreme),
    idempotent (a tick inserted twice changes nothing), and daily, so seeds "as of" a
    replay's first tick are the days before it plus that day's ticks up to it.
    """
    return (
        f"""CREATE TABLE IF NOT EXISTS {db}.records_1d_state (
            symbol LowCardinality(String),
            day Date,
            high SimpleAggregateFunction(max, Float64),
            high_ts AggregateFunction(argMin, {TS}, Tuple(Float64, {TS})),
            low SimpleAggregateFunction(min, Float64),
            low_ts AggregateFunction(argMin, {TS}, Tuple(Float64, {TS})))
        ENGINE = AggregatingMergeTree ORDER BY (symbol, day)""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.records_1d_mv
        TO {db}.records_1d_state AS {_RECORDS_FROM_TICKS.format(db=db)}""",
        f"INSERT INTO {db}.records_1d_state {_RECORDS_FROM_TICKS.format(db=db)}",
    )


_RECORDS_FROM_TICKS = """SELECT t.symbol AS symbol, toDate(t.ts) AS day,
        max(t.price) AS high, argMinState(t.ts, (-t.price, t.ts)) AS high_ts,
        min(t.price) AS low, argMinState(t.ts, (t.price, t.ts)) AS low_ts
    FROM {db}.ticks AS t GROUP BY symbol, day"""


_NULLABLE_TICK_FIELDS = ("bid", "ask", "size", "venue", "seq", "recv_ms")


def _tick_identity_columns(prefix: str = "") -> list[str]:
    """The ticks table's ORDER BY: the tick contract's identity (nulls as -1)."""
    return [
        f"ifNull({prefix}{TICK_COLUMNS[f]}, -1)"
        if f in _NULLABLE_TICK_FIELDS
        else f"{prefix}{TICK_COLUMNS[f]}"
        for f in TICK_IDENTITY
    ]


# A total order of ticks by (ts, price) as one Int128: open/close stay the same whatever
# the order in which states merge (ties in ts go to the lower price for open, the higher
# for close). Prices are positive, so their IEEE bits order like the numbers.
_ORDER_KEY = (
    "bitOr(bitShiftLeft(toInt128(toUnixTimestamp64Milli(t.ts)), 64), "
    "toInt128(reinterpretAsUInt64(t.price)))"
)
# A tick's identity, as in ticks' ORDER BY (the symbol is part of every group key).
_TICK_IDENTITY_ARGS = ", ".join(_tick_identity_columns("t.")[1:])
OHLC_INTERVALS = {"1m": "toStartOfMinute", "1h": "toStartOfHour", "1d": "toStartOfDay"}


def _analyst_views(db: str) -> tuple[str, ...]:
    """Migration 2: aggregate tables, the views that feed them, the views that read them.

    Order matters: state tables, then materialized views (1m and latest price on ticks,
    1h and 1d cascaded on the 1m states), then the backfill of ticks already present
    (which cascades too), then the plain views analysts read. Every statement is
    idempotent, the backfill included (re-inserting states changes no result).
    """
    state_columns = f"""
        symbol LowCardinality(String),
        ts {TS} CODEC(Delta, ZSTD(1)),
        open AggregateFunction(argMin, Float64, Int128),
        high SimpleAggregateFunction(max, Float64),
        low SimpleAggregateFunction(min, Float64),
        close AggregateFunction(argMax, Float64, Int128),
        ticks AggregateFunction(uniqExact, {TS}, Float64, Float64, Int64)"""
    from_ticks = f"""SELECT t.symbol AS symbol, toStartOfMinute(t.ts) AS ts,
            argMinState(t.price, {_ORDER_KEY}) AS open,
            max(t.price) AS high, min(t.price) AS low,
            argMaxState(t.price, {_ORDER_KEY}) AS close,
            uniqExactState({_TICK_IDENTITY_ARGS}) AS ticks
        FROM {db}.ticks AS t GROUP BY symbol, ts"""
    latest_from_ticks = f"""SELECT t.symbol AS symbol, max(t.ts) AS ts,
            argMaxState(t.price, {_ORDER_KEY}) AS price
        FROM {db}.ticks AS t GROUP BY symbol"""
    statements: list[str] = [
        # the sink's fast path: tick batches go in as the JSON they travel as on Kafka
        # (JSONCompactEachRow, parsed by ClickHouse, not Python) into this Null table,
        # whose view turns epoch milliseconds into DateTime64 and writes ticks
        f"""CREATE TABLE IF NOT EXISTS {db}.ticks_ingest (
            symbol String, ts Int64, price Float64,
            bid Nullable(Float64), ask Nullable(Float64), size Nullable(Float64),
            venue Nullable(String), seq Nullable(Int64), recv_ts Nullable(Int64))
        ENGINE = Null""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ticks_ingest_mv TO {db}.ticks AS
        SELECT symbol, fromUnixTimestamp64Milli(ts, 'UTC') AS ts, price, bid, ask, size,
            venue, seq, fromUnixTimestamp64Milli(recv_ts, 'UTC') AS recv_ts
        FROM {db}.ticks_ingest""",
    ]
    for name in OHLC_INTERVALS:
        statements.append(
            f"""CREATE TABLE IF NOT EXISTS {db}.ohlc_{name}_state ({state_columns})
            ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(ts) ORDER BY (symbol, ts)"""
        )
    statements.append(
        f"""CREATE TABLE IF NOT EXISTS {db}.latest_price_state (
            symbol LowCardinality(String),
            ts SimpleAggregateFunction(max, {TS}),
            price AggregateFunction(argMax, Float64, Int128))
        ENGINE = AggregatingMergeTree ORDER BY symbol"""
    )
    statements.append(
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ohlc_1m_mv TO {db}.ohlc_1m_state "
        f"AS {from_ticks}"
    )
    for name, start_of in OHLC_INTERVALS.items():
        if name == "1m":
            continue
        statements.append(
            f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ohlc_{name}_mv
            TO {db}.ohlc_{name}_state AS
            SELECT m.symbol AS symbol, {start_of}(m.ts) AS ts,
                argMinMergeState(m.open) AS open, max(m.high) AS high, min(m.low) AS low,
                argMaxMergeState(m.close) AS close, uniqExactMergeState(m.ticks) AS ticks
            FROM {db}.ohlc_1m_state AS m GROUP BY symbol, ts"""
        )
    statements.append(
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.latest_price_mv "
        f"TO {db}.latest_price_state AS {latest_from_ticks}"
    )
    # backfill: ticks written before this migration (cascades into 1h and 1d)
    statements.append(f"INSERT INTO {db}.ohlc_1m_state {from_ticks}")
    statements.append(f"INSERT INTO {db}.latest_price_state {latest_from_ticks}")
    for name in OHLC_INTERVALS:
        statements.append(
            f"""CREATE VIEW IF NOT EXISTS {db}.ohlc_{name} AS
            SELECT symbol, ts, argMinMerge(open) AS open, max(high) AS high, min(low) AS low,
                argMaxMerge(close) AS close, uniqExactMerge(ticks) AS ticks
            FROM {db}.ohlc_{name}_state GROUP BY symbol, ts"""
        )
    statements.append(
        f"""CREATE VIEW IF NOT EXISTS {db}.daily_high_low AS
        SELECT symbol, toDate(ts) AS day, max(high) AS high, min(low) AS low
        FROM {db}.ohlc_1d_state GROUP BY symbol, day"""
    )
    statements.append(
        f"""CREATE VIEW IF NOT EXISTS {db}.latest_price AS
        SELECT symbol, max(ts) AS ts, argMaxMerge(price) AS price
        FROM {db}.latest_price_state GROUP BY symbol"""
    )
    return tuple(statements)


class SchemaTooNew(RuntimeError):
    pass


def migrate(client: Client, db: str) -> int:
    """Apply missing migrations in order; refuse a database newer than this code."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"""CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
            version UInt32, description String, applied_at DateTime DEFAULT now())
        ENGINE = MergeTree ORDER BY version"""
    )
    current = int(client.command(f"SELECT max(version) FROM {db}.schema_migrations") or 0)
    known = migrations(db)
    latest = known[-1].version
    if current > latest:
        raise SchemaTooNew(
            f"database {db} is at schema version {current}, newer than this tickstream "
            f"({latest}); upgrade tickstream instead of letting it downgrade the schema"
        )
    for migration in known:
        if migration.version <= current:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.insert(
            f"{db}.schema_migrations",
            [[migration.version, migration.description]],
            column_names=["version", "description"],
        )
        log.info("schema migration %d applied: %s", migration.version, migration.description)
    return latest


_TTL_RE = re.compile(r"\bTTL toDateTime\(ts\) \+ toIntervalDay\((\d+)\)")
RAW_TICK_TABLES = ("ticks", "late_ticks")


def ticks_ttl_days(client: Client, db: str, table: str = "ticks") -> int:
    """The table's current TTL in days (0 = none), read from its definition."""
    engine = str(
        client.command(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} "
            "AND name = {table:String}",
            parameters={"db": db, "table": table},
        )
    )
    match = _TTL_RE.search(engine)
    return int(match[1]) if match else 0


def apply_ticks_ttl(client: Client, db: str, days: int) -> None:
    """Keep raw ticks (ticks, late_ticks) ``days`` days after their event time; 0 = forever.

    Only an actual change is applied (a TTL change rewrites the table's parts), so this
    runs at every start-up. Aggregates (bars, ohlc_*, latest_price) are never expired.
    """
    if days < 0:
        raise ValueError("ticks_ttl_days must be >= 0")
    for table in RAW_TICK_TABLES:
        current = ticks_ttl_days(client, db, table)
        if current == days:
            continue
        if days == 0:
            client.command(f"ALTER TABLE {db}.{table} REMOVE TTL")
            log.info("%s.%s: TTL removed, raw ticks are kept forever", db, table)
        else:
            client.command(
                f"ALTER TABLE {db}.{table} MODIFY TTL toDateTime(ts) + INTERVAL {days} DAY"
            )
            log.info("%s.%s: raw ticks expire %d days after their event time", db, table, days)
