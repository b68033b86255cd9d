"""OHLC states that stay small and still count every tick once (schema migration 6), on chDB.

Ticks go in through the sink's own insert path (``Inserter``, JSON blocks into
``ticks_ingest`` with deduplication tokens derived as the sink derives them), with
duplicates of every kind the pipeline produces: the same tick twice in one batch, a tick
again in a later batch, a retried batch (same token), the whole stream replayed (new
tokens), copies that differ outside the tick's identity. Expected bars are computed here in
Python by brute force; the views must equal them exactly. The migration from a database
that an older tickstream (schema 5, ``uniqExact`` sets) filled must leave the analysts'
views as they were, interrupted or not. Storage is compared on disk after OPTIMIZE FINAL,
as a ratio with a wide margin, never as a timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import pytest

from sinks.clickhouse_sink import Block, Inserter
from sinks.schema import OHLC_INTERVALS, Migration, migrate, migrations, table_sizes
from tickstream.clickhouse import ClickHouse

DB = "tickstream"
START_MS = 1_769_464_800_000  # 2026-01-26T22:00:00Z: the stream crosses midnight
BUCKET_MS = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
SYMBOLS = {"XAU": 4_990.0, "XAG": 105.0, "EURUSD": 1.08}
OLD_VERSION = 5  # the last schema with uniqExact sets in the OHLC states


def _ohlc_migration() -> Migration:
    """The migration that converted the OHLC states (later ones are about other tables)."""
    return next(m for m in migrations(DB) if m.version == OLD_VERSION + 1)


Row = list[Any]


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[ClickHouse]:
    wrapped = ClickHouse(clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'chdb'}"))
    try:
        yield wrapped
    finally:
        wrapped.close()


# ------------------------------------------------------------------ streams


def random_ticks(rng: random.Random, n: int, start_ms: int = START_MS) -> list[Row]:
    """Ticks in the wire's column order, per symbol in time order: some share a millisecond
    (a tie broken by price), some have no size or seq (identity columns that are null)."""
    clock = dict.fromkeys(SYMBOLS, start_ms)
    price = dict(SYMBOLS)
    rows: list[Row] = []
    for i in range(n):
        symbol = rng.choice(list(SYMBOLS))
        if rng.random() > 0.1:  # else the same millisecond as this symbol's previous tick
            clock[symbol] += rng.choice((rng.randint(1, 900), rng.randint(1_000, 240_000)))
        p = price[symbol] = round(price[symbol] * (1 + rng.gauss(0, 3e-4)), 5)
        ts = clock[symbol]
        size = None if rng.random() < 0.2 else float(rng.randint(1, 5))
        seq = None if rng.random() < 0.3 else i
        rows.append([symbol, ts, p, p * 0.9999, p * 1.0001, size, "v1", seq, ts + 3])
    return rows


def messages_with_duplicates(rng: random.Random, rows: list[Row]) -> list[list[Row]]:
    """The publisher's messages (one symbol each, up to 40 ticks) with duplicates: a tick
    twice in its message, an earlier message's ticks again, copies whose fields outside
    the identity differ (another bid, venue and receipt time)."""
    by_symbol: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_symbol[row[0]].append(row)
    messages: list[list[Row]] = []
    for symbol_rows in by_symbol.values():
        i = 0
        while i < len(symbol_rows):
            size = rng.randint(1, 40)
            messages.append([list(r) for r in symbol_rows[i : i + size]])
            i += size
    rng.shuffle(messages)
    out: list[list[Row]] = []
    for message in messages:
        if rng.random() < 0.2:  # a tick twice within the message
            message.insert(rng.randrange(len(message) + 1), list(rng.choice(message)))
        out.append(message)
        if out and rng.random() < 0.15:  # an earlier message's ticks again, altered
            again = [list(r) for r in rng.choice(out)]
            for r in again:
                r[3], r[6], r[8] = r[3] - 0.01, "v2", r[8] + 999
            out.append(again)
    return out


def blocks_of(rng: random.Random, messages: list[list[Row]], run: str) -> list[Block]:
    """Sink blocks of a few messages each, tokens derived from their span as the sink does
    (``run`` stands for the topic: a replay into a new namespace gets new tokens)."""
    blocks: list[Block] = []
    i = 0
    while i < len(messages):
        n = rng.randint(1, 12)
        block = Block("ticks", json=[])
        for offset in range(i, min(i + n, len(messages))):
            value = orjson.dumps(messages[offset])
            block.add_message(value, len(messages[offset]), (run, 0, offset, 0))
        block.span = f"{run}:0:{i}-{i + n}"
        block.token = hashlib.sha1(f"ticks|{block.span}".encode()).hexdigest()
        blocks.append(block)
        i += n
    return blocks


def insert_blocks(ch: ClickHouse, blocks: list[Block], db: str = DB) -> None:
    async def go() -> None:
        inserter = Inserter(ch, db)
        for block in blocks:
            refused = await inserter.insert(block)
            assert not refused, refused[0].reason

    asyncio.run(go())


def insert_stream_with_duplicates(
    ch: ClickHouse, rng: random.Random, rows: list[Row], db: str = DB
) -> None:
    """The stream with duplicates in and across batches, some batches retried with the
    same token, then the whole stream replayed (new tokens, another batching)."""
    messages = messages_with_duplicates(rng, rows)
    blocks = blocks_of(rng, messages, "replay-1")
    retried = rng.sample(blocks, k=max(1, len(blocks) // 10))
    insert_blocks(ch, blocks + retried, db)
    insert_blocks(ch, blocks_of(rng, messages_with_duplicates(rng, rows), "replay-2"), db)


# ------------------------------------------------------------------ brute force


def identity(row: Row) -> tuple[Any, ...]:
    symbol, ts, price, _bid, _ask, size, _venue, seq, _recv = row
    return (symbol, ts, price, -1 if size is None else size, -1 if seq is None else seq)


def expected_bars(rows: list[Row], interval: str) -> list[tuple[Any, ...]]:
    """(symbol, bucket ms, open, high, low, close, distinct ticks), by symbol and bucket."""
    width = BUCKET_MS[interval]
    buckets: dict[tuple[str, int], set[tuple[Any, ...]]] = defaultdict(set)
    for row in rows:
        buckets[(row[0], row[1] - row[1] % width)].add(identity(row))
    out = []
    for (symbol, start), ticks in sorted(buckets.items()):
        by_time = sorted(ticks, key=lambda t: (t[1], t[2]))
        prices = [t[2] for t in ticks]
        out.append(
            (symbol, start, by_time[0][2], max(prices), min(prices), by_time[-1][2], len(ticks))
        )
    return out


def view_bars(ch: ClickHouse, interval: str, db: str = DB) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in ch.client.query(
            f"SELECT symbol, toUnixTimestamp64Milli(ts), open, high, low, close, ticks "
            f"FROM {db}.ohlc_{interval} ORDER BY symbol, ts"
        ).result_rows
    ]


def all_views(ch: ClickHouse, db: str = DB) -> dict[str, list[tuple[Any, ...]]]:
    views = {name: view_bars(ch, name, db) for name in OHLC_INTERVALS}
    views["daily_high_low"] = [
        tuple(r)
        for r in ch.client.query(
            f"SELECT symbol, day, high, low FROM {db}.daily_high_low ORDER BY symbol, day"
        ).result_rows
    ]
    return views


def describe_views(ch: ClickHouse) -> dict[str, list[tuple[str, str]]]:
    views = [f"ohlc_{name}" for name in OHLC_INTERVALS] + ["daily_high_low"]
    return {
        view: [(r[0], r[1]) for r in ch.client.query(f"DESCRIBE {DB}.{view}").result_rows]
        for view in views
    }


def assert_exact(ch: ClickHouse, rows: list[Row], db: str = DB) -> None:
    for name in OHLC_INTERVALS:
        assert view_bars(ch, name, db) == expected_bars(rows, name), f"ohlc_{name}"


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("seed", [1, 2])
def test_views_count_each_tick_once_whatever_came_twice(ch: ClickHouse, seed: int) -> None:
    rng = random.Random(seed)
    migrate(ch.client, DB)
    rows = random_ticks(rng, 2_500)
    insert_stream_with_duplicates(ch, rng, rows)
    assert_exact(ch, rows)
    # more ticks in the same minutes and later ones, with copies of the first ones
    more = random_ticks(rng, 800, start_ms=START_MS + 3_600_000)
    insert_stream_with_duplicates(ch, rng, more + rng.sample(rows, 300))
    assert_exact(ch, rows + more)
    ch.client.command(f"OPTIMIZE TABLE {DB}.ohlc_1m_state FINAL")  # merged states: the same
    assert_exact(ch, rows + more)


@pytest.mark.parametrize("interrupted_after", [None, 3, 5, "exchange"])
def test_migration_from_uniqexact_states_keeps_every_view(
    ch: ClickHouse, interrupted_after: int | str | None
) -> None:
    """A database filled under schema 5, then migrated (maybe interrupted part-way and
    migrated again at the next start-up): the views are what they were, the states are
    converted, and ticks written afterwards, copies of old ones included, count once."""
    rng = random.Random(11)
    assert migrate(ch.client, DB, until=OLD_VERSION) == OLD_VERSION
    rows = random_ticks(rng, 2_000)
    insert_stream_with_duplicates(ch, rng, rows)
    before = all_views(ch)
    assert before["1m"] == expected_bars(rows, "1m")  # the old schema was exact too
    columns = describe_views(ch)

    steps = _ohlc_migration().statements
    if interrupted_after == "exchange":  # crashed after EXCHANGE, before dropping the old
        ch.client.command(f"CREATE TABLE {DB}.ohlc_1m_state_converted AS {DB}.ohlc_1m_state")
    elif interrupted_after is not None:
        for step in steps[:interrupted_after]:
            step(ch.client) if callable(step) else ch.client.command(step)
    assert migrate(ch.client, DB) == migrations(DB)[-1].version

    assert all_views(ch) == before
    assert describe_views(ch) == columns  # analysts' queries see the same names and types
    types = dict(
        ch.client.query(
            f"SELECT table, type FROM system.columns WHERE database = '{DB}' "
            f"AND table LIKE 'ohlc_%_state' AND name IN ('ticks', 'minute_ticks')"
        ).result_rows
    )
    minute_counts = "SimpleAggregateFunction(maxMap, Tuple(Array(DateTime64(3, 'UTC')), "
    assert types == {
        "ohlc_1m_state": "SimpleAggregateFunction(max, UInt64)",
        "ohlc_1h_state": minute_counts + "Array(UInt64)))",
        "ohlc_1d_state": minute_counts + "Array(UInt64)))",
    }
    leftovers = ch.client.command(
        f"SELECT count() FROM system.tables WHERE database = '{DB}' AND name LIKE '%converted'"
    )
    assert leftovers == 0

    more = random_ticks(rng, 600, start_ms=START_MS + 1_800_000)
    insert_stream_with_duplicates(ch, rng, more + rng.sample(rows, 400))
    assert_exact(ch, rows + more)

    for step in steps:  # the migration run once more over a converted database: a no-op
        step(ch.client) if callable(step) else ch.client.command(step)
    assert_exact(ch, rows + more)


def test_states_cost_a_small_fraction_of_the_old_sets(ch: ClickHouse) -> None:
    """The same busy stream (about 10 ticks a second per symbol) into a schema-5 database
    and a current one: identical bars, and OHLC states far smaller, on disk after merges."""
    rng = random.Random(5)
    rows: list[Row] = []
    clock = dict.fromkeys(SYMBOLS, START_MS)
    for i in range(60_000):
        symbol = ("XAU", "XAG")[i % 2]
        clock[symbol] += rng.randint(1, 200)
        rows.append([symbol, clock[symbol], round(100 + rng.random(), 4)] + [None] * 4 + [i, None])
    messages = [rows[i : i + 500] for i in range(0, len(rows), 500)]
    sizes = {}
    for db, version in (("old", OLD_VERSION), ("new", None)):
        migrate(ch.client, db, until=version)
        insert_blocks(ch, blocks_of(random.Random(1), messages, db), db)
        sizes[db] = table_sizes(ch.client, db, optimize=True)
        assert_exact(ch, rows, db)
    ohlc = [f"ohlc_{name}_state" for name in OHLC_INTERVALS]
    old = sum(sizes["old"][t][1] for t in ohlc)
    new = sum(sizes["new"][t][1] for t in ohlc)
    ticks = sizes["new"]["ticks"][1]
    print(
        f"OHLC states per tick: {old / len(rows):.2f} bytes before, {new / len(rows):.3f} "
        f"after; ticks {ticks / len(rows):.2f} bytes per tick"
    )
    assert new * 20 < old, (old, new)
    assert new * 5 < ticks, (new, ticks)


def test_a_minute_missed_by_its_view_is_made_whole_when_its_ticks_come_again(
    ch: ClickHouse,
) -> None:
    """``ticks`` took a batch but the states did not (a view whose insert failed, a crash
    between the two): the sink sends the batch again after a restart (another token), and
    the bars of every minute it touches are exact again."""
    rng = random.Random(7)
    migrate(ch.client, DB)
    rows = random_ticks(rng, 1_500)
    first, lost = rows[:1_000], rows[1_000:]
    insert_blocks(ch, blocks_of(rng, [first], "a"))
    create_1m_view = next(
        s for s in _ohlc_migration().statements if isinstance(s, str) and ".ohlc_1m_mv TO" in s
    )
    ch.client.command(f"DROP VIEW {DB}.ohlc_1m_mv")
    insert_blocks(ch, blocks_of(rng, [lost], "a-lost"))
    ch.client.command(create_1m_view)
    assert view_bars(ch, "1m") != expected_bars(rows, "1m")
    insert_blocks(ch, blocks_of(rng, [lost], "a-again"))
    assert_exact(ch, rows)


def test_ticks_written_again_after_they_expired_are_not_counted_twice(ch: ClickHouse) -> None:
    """Raw ticks expire (``ticks_ttl_days``) while bars stay; a replay of the same file
    afterwards leaves the bars as they were."""
    rng = random.Random(9)
    migrate(ch.client, DB)
    rows = random_ticks(rng, 1_000)
    insert_stream_with_duplicates(ch, rng, rows)
    ch.client.command(f"TRUNCATE TABLE {DB}.ticks")  # what the TTL does, all at once
    insert_stream_with_duplicates(ch, rng, rows)
    assert_exact(ch, rows)
