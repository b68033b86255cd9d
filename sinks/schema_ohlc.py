"""The OHLC and analyst views: migration 2, and migration 6 that made their states small.

Analysts ask most for OHLC bars, the daily high and low and the latest price; computing
them from raw ticks at query time is slow, and raw ticks may expire (``ticks_ttl_days``)
while the bars must stay. So migration 2 keeps them current with materialized views on
``ticks``: OHLC at 1m/1h/1d (``ohlc_1m``, ``ohlc_1h``, ``ohlc_1d`` views over
AggregatingMergeTree state tables), the daily high and low (``daily_high_low``) and the
latest price per symbol (``latest_price``). Each state is idempotent, so a tick inserted
twice (a retry, a restart, a second replay) changes nothing: open/close are
``argMin``/``argMax`` over a total order of (ts, price), high and low are ``max``/``min``,
and the tick count is the number of distinct ticks (by the columns of ``ticks``' ORDER BY).
1h and 1d are cascaded from the 1m states (cheaper than three views on ticks). Migration 2
also adds ``ticks_ingest``, a Null table the sink writes tick batches into as JSON
(ClickHouse parses them, Python does not); its view converts and fills ``ticks``.

Migration 2 counted with a ``uniqExact`` set per bucket, which grows with the ticks (16
bytes a tick per view); migration 6 recounts a minute from ``ticks`` when it is written to
and keeps the largest count (see there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from clickhouse_connect.driver.client import Client

from sinks.schema_types import TS, Step, tick_identity_columns

log = logging.getLogger("sinks.schema")  # the schema's one logger, whichever module migrates

# A total order of ticks by (ts, price) as one Int128: open/close stay the same whatever
# the order in which states merge (ties in ts go to the lower price for open, the higher
# for close). Prices are positive, so their IEEE bits order like the numbers.
_ORDER_KEY = (
    "bitOr(bitShiftLeft(toInt128(toUnixTimestamp64Milli(t.ts)), 64), "
    "toInt128(reinterpretAsUInt64(t.price)))"
)
# A tick's identity, as in ticks' ORDER BY (the symbol is part of every group key).
_TICK_IDENTITY_ARGS = ", ".join(tick_identity_columns("t.")[1:])
OHLC_INTERVALS = {"1m": "toStartOfMinute", "1h": "toStartOfHour", "1d": "toStartOfDay"}


def analyst_views(db: str) -> tuple[str, ...]:
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


# Migration 6: the tick counts of ohlc_1m/1h/1d without a uniqExact set per bucket.
#
# The 1m view no longer accumulates a set of tick identities per minute: at each insert it
# counts, for every minute the block touches, the distinct ticks of that minute in
# ``ticks`` plus the block, and keeps the largest count seen (``max``). A minute's count
# only ever grows while its ticks are kept, so the last insert touching it leaves the exact
# number of distinct ticks, whatever came twice before (a retry, a restart, a replay) and
# whatever failed half-way (a view whose insert failed after ``ticks`` took the block is
# made whole by the next insert of those ticks). The block is counted with the table so
# the result does not depend on whether ClickHouse shows a view the part it just wrote.
# ``ticks`` is read through ``merge()``: inside a view on ``ticks``, the name ``ticks``
# means the inserted block, subqueries included (ClickHouse/ClickHouse#77327, by design).
# 1h and 1d keep each minute's count in a ``maxMap`` keyed by the minute (at most 60 and
# 1440 entries), so they merge by max too; states cost bytes per bucket, not per tick.
#
# Limits. A count never exceeds the true number of distinct ticks; it falls short when
# (1) a minute's raw ticks have expired (``ticks_ttl_days``) and a new tick of that minute
# arrives (a tick written again then is not counted twice either), or (2) two inserts of
# the same minute run concurrently and neither sees the other's part, until the next
# insert of that minute (one sink per partition, i.e. per symbol, writes sequentially).
# Cost: each insert re-reads, by primary key, the ticks of the minutes it touches, so a
# live feed inserted every second reads the current minute about 30 times over.
_MINUTES_OF_TICKS = """SELECT symbol, ts, price, size, seq FROM {db}.ticks
    UNION ALL
    SELECT symbol, ts, price, size, seq FROM merge('{db}', '^ticks$')
    WHERE (symbol, toStartOfMinute(ts)) IN (SELECT symbol, toStartOfMinute(ts) FROM {db}.ticks)"""
_OHLC_PRICES = """
    open AggregateFunction(argMin, Float64, Int128),
    high SimpleAggregateFunction(max, Float64),
    low SimpleAggregateFunction(min, Float64),
    close AggregateFunction(argMax, Float64, Int128)"""
_MINUTE_COUNTS = f"Tuple(Array({TS}), Array(UInt64))"  # (minute starts, distinct ticks)


def _ohlc_state_table(table: str, name: str) -> str:
    count = (
        "ticks SimpleAggregateFunction(max, UInt64)"
        if name == "1m"
        else f"minute_ticks SimpleAggregateFunction(maxMap, {_MINUTE_COUNTS})"
    )
    return f"""CREATE TABLE IF NOT EXISTS {table} (
        symbol LowCardinality(String),
        ts {TS} CODEC(Delta, ZSTD(1)),{_OHLC_PRICES},
        {count})
    ENGINE = AggregatingMergeTree
    PARTITION BY toYYYYMM(ts) ORDER BY (symbol, ts)"""


def _from_minutes(db: str, name: str) -> str:
    """1h or 1d states from 1m states: prices merged, each minute's count kept by minute."""
    return f"""SELECT m.symbol AS symbol, {OHLC_INTERVALS[name]}(m.ts) AS ts,
        argMinMergeState(m.open) AS open, max(m.high) AS high, min(m.low) AS low,
        argMaxMergeState(m.close) AS close,
        maxMap([m.ts], [toUInt64(m.ticks)]) AS minute_ticks
    FROM {db}.ohlc_1m_state AS m GROUP BY symbol, ts"""


def _convert_ohlc_state(db: str, name: str) -> Callable[[Client], None]:
    """A step converting ``ohlc_<name>_state`` from uniqExact sets, once; a no-op after.

    The new table is filled beside the old one and swapped in (EXCHANGE), so a crash at
    any point leaves either the old table (converted again on re-run) or the new one.
    1m counts are the old sets' exact sizes; 1h and 1d are rebuilt from the converted 1m
    states (a tick is in exactly one minute), so raw ticks are not needed.
    """
    table, staged = f"{db}.ohlc_{name}_state", f"{db}.ohlc_{name}_state_converted"

    def step(client: Client) -> None:
        client.command(f"DROP TABLE IF EXISTS {staged}")  # left by an interrupted run
        kind = str(
            client.command(
                "SELECT type FROM system.columns WHERE database = {db:String} "
                "AND table = {table:String} AND name = 'ticks'",
                parameters={"db": db, "table": f"ohlc_{name}_state"},
            )
        )
        if not kind.startswith("AggregateFunction(uniqExact"):
            client.command(_ohlc_state_table(table, name))  # new tables: nothing to convert
            return
        client.command(_ohlc_state_table(staged, name))
        if name == "1m":
            client.command(
                f"""INSERT INTO {staged} SELECT symbol, ts, argMinMergeState(open),
                    max(high), min(low), argMaxMergeState(close), uniqExactMerge(ticks)
                FROM {table} GROUP BY symbol, ts"""
            )
        else:
            client.command(f"INSERT INTO {staged} {_from_minutes(db, name)}")
        client.command(f"EXCHANGE TABLES {table} AND {staged}")
        client.command(f"DROP TABLE {staged}")
        log.info("%s: tick counts converted from uniqExact sets", table)

    return step


def small_ohlc_states(db: str) -> tuple[Step, ...]:
    """Migration 6 (see above): views stopped, states converted, views on the new states.

    The views feeding the states are dropped first so that nothing writes a state while
    it is converted; analysts' views keep their names and columns.
    """
    steps: list[Step] = [
        f"DROP VIEW IF EXISTS {db}.ohlc_{name}_mv" for name in reversed(OHLC_INTERVALS)
    ]
    steps += [_convert_ohlc_state(db, name) for name in OHLC_INTERVALS]
    identity = _TICK_IDENTITY_ARGS
    steps.append(
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ohlc_1m_mv TO {db}.ohlc_1m_state AS
        SELECT t.symbol AS symbol, toStartOfMinute(t.ts) AS ts,
            argMinState(t.price, {_ORDER_KEY}) AS open,
            max(t.price) AS high, min(t.price) AS low,
            argMaxState(t.price, {_ORDER_KEY}) AS close,
            uniqExact({identity}) AS ticks
        FROM ({_MINUTES_OF_TICKS.format(db=db)}) AS t
        GROUP BY symbol, ts"""
    )
    for name in OHLC_INTERVALS:
        if name != "1m":
            steps.append(
                f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ohlc_{name}_mv
                TO {db}.ohlc_{name}_state AS {_from_minutes(db, name)}"""
            )
    for name in OHLC_INTERVALS:
        ticks = "toUInt64(max(ticks))" if name == "1m" else "arraySum(maxMap(minute_ticks).2)"
        steps.append(
            f"""CREATE OR REPLACE VIEW {db}.ohlc_{name} AS
            SELECT symbol, ts, argMinMerge(open) AS open, max(high) AS high, min(low) AS low,
                argMaxMerge(close) AS close, {ticks} AS ticks
            FROM {db}.ohlc_{name}_state GROUP BY symbol, ts"""
        )
    return tuple(steps)
