"""Sink throughput and the storage each table costs per tick, on chDB.

    python bench/sink.py [--ticks 1000000] [--batch-rows 50000] [--schema-version N]
    python bench/sink.py --broker [--ticks 1000000] [--batch-rows 50000] [--rounds 3]
                         [--kafka-bootstrap 127.0.0.1:9092]

Default (no broker needed): the ticks, as messages of 500 ticks of one symbol (the
publisher's wire format), go through the sink's own insert path (``Inserter`` with
JSON blocks of ``--batch-rows`` rows, deduplication tokens derived as the sink derives
them) into a fresh chDB database with the full schema, so every materialized view runs
as in production. Printed: ticks/s, then, after OPTIMIZE FINAL of every table, the bytes
on disk per tick of each table (what a year of ticks will cost), and a check that the
OHLC views count every tick once. ``--schema-version 5`` measures the schema as it was
before the OHLC states stopped keeping a set of tick identities.

``--broker``: each round pre-publishes the ticks plus end markers to a fresh namespace,
then times the sink draining them: from its first fetched message until the last insert
is acknowledged and its offsets committed (group join excluded; printed apart). The bare
side inserts the very same rows with clickhouse-connect in the same process,
column-oriented, in batches of the same size with deduplication tokens, into a database
with the same schema (same materialized views), which is the floor of what any Python
sink can do. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import clickhouse_connect
import orjson

from bench.scratch import drop_scratch
from cli.progress import progress_printer
from producers.publisher import make_producer
from sinks.clickhouse_sink import Block, ClickHouseSink, Inserter
from sinks.rows import TABLES
from sinks.schema import OHLC_INTERVALS, migrate, table_sizes
from tickstream import contracts, kafka_local
from tickstream.clickhouse import ClickHouse
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

START_MS = 1_769_385_600_000  # 2026-01-26T00:00:00Z
TICKS_PER_MESSAGE = 500


def make_ticks(n: int, seed: int = 7) -> list[list[object]]:
    """Rows in the wire/table column order: symbol, ts, price, bid, ask, size, venue, seq, recv."""
    rng = random.Random(seed)
    price = {"XAU": 4_990.0, "XAG": 105.0}
    clock = dict.fromkeys(price, START_MS)
    rows: list[list[object]] = []
    for i in range(n):
        sym = "XAU" if i % 3 else "XAG"
        clock[sym] += rng.randint(5, 400)
        p = price[sym] = round(price[sym] * (1 + rng.gauss(0, 0.0002)), 4)
        rows.append(
            [
                sym,
                clock[sym],
                p,
                p - 0.05,
                p + 0.05,
                1.0,
                "bench",
                i,
                clock[sym] + rng.randint(1, 50),
            ]
        )
    return rows


def messages(rows: list[list[object]]) -> list[tuple[bytes, bytes]]:
    by_symbol: dict[str, list[list[object]]] = {}
    for row in rows:
        by_symbol.setdefault(row[0], []).append(row)  # type: ignore[arg-type]
    out = []
    for sym, sym_rows in by_symbol.items():
        for i in range(0, len(sym_rows), TICKS_PER_MESSAGE):
            out.append((sym.encode(), orjson.dumps(sym_rows[i : i + TICKS_PER_MESSAGE])))
    return out


async def prepublish(settings: Settings, values: list[tuple[bytes, bytes]], run_id: str) -> None:
    await ensure_topics(settings)
    topics = Topics(settings.namespace)
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topics.ticks, value, key=key) for key, value in values]
        n = settings.partitions
        for topic in topics.sink_inputs():
            for p in range(n):
                futures.append(
                    await producer.send(
                        topic, contracts.encode_end_of_input(run_id, p, n), partition=p
                    )
                )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def sink_round(settings: Settings, ch: ClickHouse, run_id: str) -> tuple[float, float]:
    sink = ClickHouseSink(settings, ch=ch)
    await sink.start()
    started = time.monotonic()
    task = asyncio.create_task(sink.run())
    try:
        await asyncio.wait_for(sink.wait_drained(run_id), timeout=600)
    finally:
        await sink.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    done = sink.stats.last_commit_at
    assert done is not None and sink.stats.first_record_at is not None
    return done - sink.stats.first_record_at, sink.stats.first_record_at - started


def bare_round(
    client: clickhouse_connect.driver.Client, db: str, rows: list[list[object]], batch: int
) -> float:
    """Column-oriented inserts of prepared columns (preparation not timed)."""
    names = list(TABLES["ticks"].columns)
    blocks = [
        [list(c) for c in zip(*rows[i : i + batch], strict=True)]
        for i in range(0, len(rows), batch)
    ]
    started = time.perf_counter()
    for i, columns in enumerate(blocks):
        token = hashlib.sha1(f"bare|{db}|{i}".encode()).hexdigest()
        client.insert(
            f"{db}.ticks",
            columns,
            column_names=names,
            column_oriented=True,
            settings={"insert_deduplication_token": token},
        )
    return time.perf_counter() - started


def sink_blocks(rows: list[list[object]], batch_rows: int) -> list[Block]:
    """Tick blocks as the sink builds them from Kafka: whole messages (500 ticks of one
    symbol) until ``batch_rows`` rows, tokens derived from the offsets they hold. Messages
    are in time order across symbols, as a live feed's partitions are read together."""
    values = sorted(messages(rows), key=lambda kv: orjson.loads(kv[1])[0][1])
    blocks: list[Block] = []
    block: Block | None = None
    first = 0
    for offset, (_key, value) in enumerate(values):
        if block is None:
            block, first = Block("ticks", json=[]), offset
        block.add_message(value, len(orjson.loads(value)), ("bench.ticks", 0, offset, 0))
        if block.rows >= batch_rows or offset == len(values) - 1:
            block.span = f"bench.ticks:0:{first}-{offset + 1}"
            block.token = hashlib.sha1(f"ticks|{block.span}".encode()).hexdigest()
            blocks.append(block)
            block = None
    return blocks


async def storage_run(args: argparse.Namespace) -> None:
    """The sink's insert path alone (no broker): ticks/s, then bytes per tick per table."""
    workdir = Path(tempfile.mkdtemp(prefix="tickstream-bench-sink-"))
    client = clickhouse_connect.get_client(dsn=f"chdb://{workdir / 'chdb'}")
    ch = ClickHouse(client)
    db = "tickstream"
    try:
        version = migrate(client, db, until=args.schema_version)
        rows = make_ticks(args.ticks)
        blocks = sink_blocks(rows, args.batch_rows)
        print(
            f"{args.ticks:,} ticks, {len(blocks):,} inserts of up to {args.batch_rows:,} rows "
            f"through the sink's Inserter into chDB {workdir} (schema version {version})"
        )
        inserter = Inserter(ch, db)
        report = progress_printer(args.ticks, "inserted")
        done = 0
        started = time.perf_counter()
        for block in blocks:
            refused = await inserter.insert(block)
            assert not refused, refused[0].reason
            done += block.rows
            report(done)
        seconds = time.perf_counter() - started
        print(f"sink insert path : {args.ticks / seconds:12,.0f} ticks/s ({seconds:.1f}s)")
        sizes = await ch.run(table_sizes, client, db, optimize=True)
        print(f"on disk after OPTIMIZE FINAL, per tick inserted ({args.ticks:,}):")
        print(f"  {'table':24s} {'rows':>12s} {'bytes':>14s} {'bytes/tick':>11s}")
        for table, (n_rows, n_bytes) in sorted(sizes.items(), key=lambda kv: -kv[1][1]):
            print(f"  {table:24s} {n_rows:12,d} {n_bytes:14,d} {n_bytes / args.ticks:11.3f}")
        ohlc = [f"ohlc_{name}_state" for name in OHLC_INTERVALS]
        states = sum(sizes.get(t, (0, 0))[1] for t in ohlc)
        ticks_bytes = sizes["ticks"][1]
        print(
            f"  OHLC states together: {states / args.ticks:.3f} bytes/tick, "
            f"{states / ticks_bytes:.1%} of ticks"
        )
        counts = [
            int(client.command(f"SELECT sum(ticks) FROM {db}.ohlc_{name}"))
            for name in OHLC_INTERVALS
        ]
        status = "ok" if counts == [args.ticks] * len(counts) else "WRONG"
        print(f"  ticks counted by ohlc_1m/1h/1d: {counts} ({status})")
    finally:
        ch.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument(
        "--schema-version", type=int, default=None, help="stop migrations there (a before)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="--broker only")
    parser.add_argument("--kafka-bootstrap", default="127.0.0.1:9092", help="--broker only")
    parser.add_argument(
        "--broker", action="store_true", help="Kafka -> sink rounds beside a bare insert"
    )
    args = parser.parse_args()
    if not args.broker:
        await storage_run(args)
        return
    bootstrap = args.kafka_bootstrap
    started_broker = False
    if not kafka_local.reachable(bootstrap):
        if not kafka_local.is_loopback(bootstrap):
            sys.exit(f"no Kafka broker at {bootstrap}")
        print(f"no broker at {bootstrap}: starting the local one", file=sys.stderr)
        kafka_local.broker("up", int(bootstrap.rsplit(":", 1)[1]))
        started_broker = True
    workdir = Path(tempfile.mkdtemp(prefix="tickstream-bench-sink-"))
    client = clickhouse_connect.get_client(dsn=f"chdb://{workdir / 'chdb'}")
    ch = ClickHouse(client)
    scratch: list[Settings] = []  # each round's namespace, deleted at the end
    try:
        rows = make_ticks(args.ticks)
        values = messages(rows)
        print(
            f"{args.ticks:,} ticks in {len(values):,} messages, batches of {args.batch_rows:,} "
            f"rows, broker {bootstrap}, chDB {workdir}, {args.rounds} rounds"
        )
        best = {"sink": float("inf"), "bare": float("inf")}
        for round_ in range(args.rounds):
            tag = uuid.uuid4().hex[:8]
            settings = Settings(
                kafka_bootstrap=bootstrap,
                namespace=f"benchsink{tag}",
                clickhouse_url=f"chdb://{workdir / 'chdb'}",
                clickhouse_database=f"sink_{tag}",
                metrics_port=0,
                sink_batch_rows=args.batch_rows,
            )
            scratch.append(settings)
            run_id = uuid.uuid4().hex
            await prepublish(settings, values, run_id)
            bare_db = f"bare_{tag}"
            migrate(client, bare_db)
            order = ("sink", "bare") if round_ % 2 == 0 else ("bare", "sink")
            for name in order:
                if name == "sink":
                    seconds, join = await sink_round(settings, ch, run_id)
                    extra = f" (group join {join:.2f}s not counted)"
                    db = settings.clickhouse_database
                else:
                    seconds = await ch.run(bare_round, client, bare_db, rows, args.batch_rows)
                    extra = ""
                    db = bare_db
                count = int(client.command(f"SELECT count() FROM {db}.ticks FINAL"))
                assert count == args.ticks, (name, count)
                best[name] = min(best[name], seconds)
                print(
                    f"  round {round_ + 1} {name:4s} {args.ticks / seconds:12,.0f} rows/s "
                    f"in {seconds:.2f}s{extra}"
                )
        sink_rate, bare_rate = args.ticks / best["sink"], args.ticks / best["bare"]
        print(f"bare clickhouse-connect insert : {bare_rate:12,.0f} rows/s (best round)")
        print(f"sink, Kafka -> chDB            : {sink_rate:12,.0f} rows/s (best round)")
        print(f"sink / bare                    : {sink_rate / bare_rate:12.0%}")
    finally:
        ch.close()
        shutil.rmtree(workdir, ignore_errors=True)
        for settings in scratch:
            await drop_scratch(settings)
        if started_broker:
            kafka_local.broker("down", int(bootstrap.rsplit(":", 1)[1]), check=False)


if __name__ == "__main__":
    asyncio.run(main())
