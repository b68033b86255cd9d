"""The ClickHouse schema as ordered, idempotent migrations applied at sink start-up.

Every table is a ReplacingMergeTree ordered by the row's identity, so a row
written twice (a retried insert, a sink restart, the same file replayed again)
is one row for any query that reads with FINAL (the ``final=1`` setting does
that for every table; `tickstream query` sets it, and the docker-compose
ClickHouse profile sets it for analysts). Partitions are by month of the row's
event time, which is part of the identity, so duplicates always meet in the
same partition.

This module holds the one ordered list and ``migrate``: a database records the versions
it has (``schema_migrations``), so a change of schema is a new migration at the end of the
list, and a database is brought up to date by what it lacks. Migrations 2 and 6, the OHLC
and analyst views kept current from ``ticks``, are long enough to live in schema_ohlc.py;
what every migration shares (``Migration``, ``TS``, the tick identity) is in
schema_types.py. The aggregates outlive raw ticks: ``ticks_ttl_days`` (see
``apply_ticks_ttl``) may expire old ticks while their bars stay.

Migration 7 adds ``record_breaks.from_level``: a tick jumping across several levels
gives one row (the furthest level), and the column keeps the nearest one, so the row
still says every level that tick crossed (NULL on rows written before it).

Migration 4 adds the real-time desk path's tables: ``rolling_breaks`` (a tick making
a new high or low of a trailing window) and ``signal_ledger`` (every provisional,
confirmed or retracted event of a desk signal, with the receipt time of the tick
behind it and the processor's emission time, so desk latency is plain SQL).
"""

from __future__ import annotations

import logging
import re

from clickhouse_connect.driver.client import Client

from sinks.schema_ohlc import OHLC_INTERVALS, analyst_views, small_ohlc_states
from sinks.schema_types import TS, Migration, Step, tick_identity_columns

__all__ = [
    "OHLC_INTERVALS",
    "RAW_TICK_TABLES",
    "TS",
    "Migration",
    "SchemaTooNew",
    "Step",
    "apply_ticks_ttl",
    "migrate",
    "migrations",
    "table_sizes",
    "ticks_ttl_days",
]

log = logging.getLogger(__name__)


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
    tick_identity = f"({', '.join(tick_identity_columns())})"
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
            2, "OHLC 1m/1h/1d, daily high/low and latest price from ticks", analyst_views(db)
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
        Migration(
            6,
            "OHLC tick counts without a set of every tick: exact, idempotent, small",
            small_ohlc_states(db),
        ),
        Migration(
            7,
            "record breaks show the span of a jump across several levels (from_level)",
            # one row per tick and grid now: without the nearest level crossed, a seed
            # read back from this table would not know the levels a jump passed over
            (
                f"""ALTER TABLE {db}.record_breaks
                    ADD COLUMN IF NOT EXISTS from_level Nullable(Float64)""",
            ),
        ),
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


class SchemaTooNew(RuntimeError):
    pass


def migrate(client: Client, db: str, until: int | None = None) -> int:
    """Apply missing migrations in order; refuse a database newer than this code.

    ``until`` stops at that version: a database as an older tickstream left it, for
    upgrade tests and for benchmarks of the schema before a change.
    """
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
        if until is not None and migration.version > until:
            return max(current, until)
        for step in migration.statements:
            if callable(step):
                step(client)
            else:
                client.command(step)
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


def table_sizes(client: Client, db: str, optimize: bool = False) -> dict[str, tuple[int, int]]:
    """Per table of ``db``: (rows, bytes on disk) of its active parts.

    ``optimize`` merges every MergeTree table first (OPTIMIZE ... FINAL), so the figures are
    what the data costs once background merges have run, not what a burst of inserts left.
    """
    if optimize:
        tables = client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} "
            "AND engine LIKE '%MergeTree'",
            parameters={"db": db},
        ).result_rows
        for (table,) in tables:
            client.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
    result = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts "
        "WHERE active AND database = {db:String} GROUP BY table",
        parameters={"db": db},
    )
    return {str(t): (int(r), int(b)) for t, r, b in result.result_rows}
