"""The ClickHouse schema as ordered, idempotent migrations applied at sink start-up.

Every table is a ReplacingMergeTree ordered by the row's identity, so a row
written twice (a retried insert, a sink restart, the same file replayed again)
is one row for any query that reads with FINAL (the ``final=1`` setting does
that for every table; `tickstream query` sets it, and the docker-compose
ClickHouse profile sets it for analysts). Partitions are by month of the row's
event time, which is part of the identity, so duplicates always meet in the
same partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

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
    tick_identity = "(symbol, ts, price, ifNull(size, -1), ifNull(seq, -1))"
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
    )


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
