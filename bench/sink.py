"""Sink throughput into chDB through the real broker, beside a bare insert of the same rows.

    python bench/sink.py [--ticks 1000000] [--batch-rows 50000] [--rounds 3]
                         [--kafka-bootstrap 127.0.0.1:9092]

Each round pre-publishes the ticks (messages of 500 ticks of one symbol, the
publisher's wire format) plus end markers to a fresh namespace, then times the
sink draining them: from its first fetched message until the last insert is
acknowledged and its offsets committed (group join excluded; printed apart).
The bare side inserts the very same rows with clickhouse-connect in the same
process, column-oriented, in batches of the same size with deduplication
tokens, into a database with the same schema (same materialized views), which
is the floor of what any Python sink can do. Figures are printed, never asserted.
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

from producers.publisher import make_producer
from sinks.clickhouse_sink import ClickHouseSink
from sinks.rows import TABLES
from sinks.schema import migrate
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kafka-bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args()
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
        if started_broker:
            kafka_local.broker("down", int(bootstrap.rsplit(":", 1)[1]), check=False)


if __name__ == "__main__":
    asyncio.run(main())
