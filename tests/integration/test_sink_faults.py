"""The ClickHouse sink under faults, on the real broker and chDB.

(a) ``tickstream sink`` is SIGKILLed while it inserts and started again: the tables end
    exactly as those of an uninterrupted run into another chDB directory.
(b) ClickHouse refuses inserts for a while (failures before writing, a lost
    acknowledgement after writing, a time window of failures), injected at the client
    boundary: the sink retries with backoff, counts the retries, commits no offset before
    the insert landed, takes no messages while failing, recovers by itself, and the tables
    equal an uninterrupted run's (no row lost, none doubled).
(c) ClickHouse refuses rows for their data (a value the client cannot convert, a time
    DateTime64 cannot hold, a constraint the server enforces on ticks): the good rows of
    each block land, each refused row is on the quarantine topic with its reason and source
    offset, the metric counts it, every offset is committed; a split block sent again
    doubles nothing; only errors certainly about the data are classified as such.

Inputs are published straight to the namespace's topics in the wire formats (tick batches
on ticks and late, rejection documents on the DLQ, ``kind`` rows on aggregates/signals)
with end markers, so the sink runs alone, without a processor.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sinks.clickhouse_sink import Block, ClickHouseSink, Inserter
from sinks.rows import TABLES
from sinks.schema import migrate
from tickstream import contracts, metrics
from tickstream.clickhouse import ClickHouse
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka

START_MS = 1_769_385_600_000  # 2026-01-26T00:00:00Z
TICKS_PER_MESSAGE = 250
ANALYST_VIEWS = ("ohlc_1m", "ohlc_1h", "ohlc_1d", "daily_high_low", "latest_price")


# ---------------------------------------------------------------- inputs


def make_inputs(ticks_per_symbol: int, seed: int = 11) -> dict[str, list[tuple[bytes, bytes]]]:
    """Messages per topic suffix: tick batches, late ticks, rejections, rows of every kind.

    Ticks cross a month boundary (January into February) so several partitions are
    written; some carry bid/ask/size/venue/seq, some not. Some bars and divergence
    windows come in two versions (the later one must win).
    """
    rng = random.Random(seed)
    out: dict[str, list[tuple[bytes, bytes]]] = {
        "ticks": [],
        "late": [],
        "dlq": [],
        "aggregates": [],
        "signals": [],
    }
    month_end = 1_769_904_000_000 - 30 * 60_000  # 2026-01-31T23:30:00Z
    for s_index, (symbol, price) in enumerate((("XAU", 4_990.0), ("XAG", 105.0), ("XPT", 2_300.0))):
        ts = (START_MS if s_index else month_end) + s_index * 7
        rows: list[list[Any]] = []
        for i in range(ticks_per_symbol):
            ts += rng.randint(50, 2_000)
            price = round(price * (1 + rng.gauss(0, 0.0005)), 4)
            full = i % 3 == 0
            rows.append(
                [
                    symbol,
                    ts,
                    price,
                    round(price - 0.1, 4) if full else None,
                    round(price + 0.1, 4) if full else None,
                    float(rng.randint(1, 9)) if full else None,
                    "venue-a" if full else None,
                    i if full else None,
                    ts + rng.randint(1, 400),
                ]
            )
        for i in range(0, len(rows), TICKS_PER_MESSAGE):
            out["ticks"].append((symbol.encode(), orjson.dumps(rows[i : i + TICKS_PER_MESSAGE])))
        for row in rows[:: max(1, len(rows) // 7)]:  # a few late copies, shifted back
            late = [row[0], row[1] - 600_000, row[2], None, None, None, None, None, row[8]]
            out["late"].append((symbol.encode(), orjson.dumps([late])))
        minutes = sorted({r[1] - r[1] % 60_000 for r in rows})
        for n, minute in enumerate(minutes):
            bar = {
                "kind": "bar_1m",
                "symbol": symbol,
                "ts_ms": minute,
                "open": price,
                "high": price + 1,
                "low": price - 1,
                "close": price + 0.5,
                "ticks": 5,
            }
            out["aggregates"].append((symbol.encode(), orjson.dumps(bar)))
            if n % 4 == 0:  # a later, fuller version of the same bar
                out["aggregates"].append(
                    (symbol.encode(), orjson.dumps(bar | {"ticks": 9, "close": price + 0.75}))
                )
            if n % 10 == 0:
                rolling = {
                    "kind": "rolling_high",
                    "symbol": symbol,
                    "window": "1h",
                    "ts_ms": minute,
                    "high": price + 2,
                    "high_ts_ms": minute + 1,
                    "low": price - 2,
                    "low_ts_ms": minute + 2,
                }
                out["aggregates"].append((symbol.encode(), orjson.dumps(rolling)))
            if n % 25 == 0:
                record = {
                    "kind": "record_break",
                    "record": "level_up",
                    "symbol": symbol,
                    "ts_ms": minute + 5,
                    "price": price,
                    "level": float(n * 10),
                    "step": 10.0,
                    "prev_ts_ms": minute - 60_000 if n else None,
                    "since_prev_s": 60.0 if n else None,
                    "first_time": n % 2 == 0,
                }
                out["signals"].append((symbol.encode(), orjson.dumps(record)))
    for n in range(12):
        opened = START_MS + n * 3_600_000
        window = {
            "kind": "divergence_window",
            "pair": "XAU/XAG",
            "metric": "ratio_z",
            "direction": 1 if n % 2 else -1,
            "opened_at_ms": opened,
            "closed_at_ms": None,
            "open_value": 2.1,
            "peak_value": 2.5 + n,
            "peak_at_ms": opened + 60_000,
            "close_value": None,
        }
        out["signals"].append((b"XAU/XAG", orjson.dumps(window)))
        if n % 3:
            closed = window | {"closed_at_ms": opened + 1_800_000, "close_value": 0.9}
            out["signals"].append((b"XAU/XAG", orjson.dumps(closed)))
    for n in range(30):
        rejection = {
            "raw": f"bad line {n}",
            "source": "replay:test.csv",
            "position": f"line {n + 2}",
            "reason": "malformed" if n % 2 else "invalid_price",
            "detail": "injected",
            "recv_ms": START_MS + n,
            "symbol": None if n % 2 else "XAU",
        }
        out["dlq"].append((b"replay", orjson.dumps(rejection)))
    return out


def expected_ticks(inputs: dict[str, list[tuple[bytes, bytes]]]) -> list[tuple[Any, ...]]:
    """Every published tick, as (symbol, ts_ms, price, bid, ask, size, venue, seq, recv_ms)."""
    return sorted(
        (tuple(row) for _key, value in inputs["ticks"] for row in orjson.loads(value)),
        key=repr,
    )


async def publish(settings: Settings, inputs: dict[str, list[tuple[bytes, bytes]]]) -> str:
    """Publish the inputs and an end marker on every partition of every sink input."""
    await ensure_topics(settings)
    topics = Topics(settings.namespace)
    names = {
        "ticks": topics.ticks,
        "late": topics.late,
        "dlq": topics.dlq,
        "aggregates": topics.aggregates,
        "signals": topics.signals,
    }
    run_id = uuid.uuid4().hex
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        futures = []
        for suffix, messages in inputs.items():
            for key, value in messages:
                futures.append(await producer.send(names[suffix], value, key=key))
        await asyncio.gather(*futures)
        n = settings.partitions
        for topic in topics.sink_inputs():
            for p in range(n):
                marker = contracts.encode_end_of_input(run_id, p, n)
                await producer.send_and_wait(topic, marker, partition=p)
    finally:
        await producer.stop()
    return run_id


async def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in Topics(settings.namespace).sink_inputs()
            for p in range(settings.partitions)
        ]
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def committed(settings: Settings) -> dict[TopicPartition, int]:
    """The sink group's committed offsets (0 where none), read without joining the group."""
    topics = Topics(settings.namespace)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=topics.group("sink"),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        out = {}
        for topic in topics.sink_inputs():
            for p in range(settings.partitions):
                tp = TopicPartition(topic, p)
                out[tp] = await consumer.committed(tp) or 0
        return out
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- table contents


def table_contents(client: Any, db: str, final: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """Every row table (minus its insert-time column) and every analyst view, sorted."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in TABLES:
        cols = ", ".join(TABLES[table].columns)
        sql = f"SELECT {cols} FROM {db}.{table}" + (" FINAL" if final else "")
        out[table] = sorted(map(tuple, client.query(sql).result_rows), key=repr)
    for view in ANALYST_VIEWS:
        out[view] = sorted(
            map(tuple, client.query(f"SELECT * FROM {db}.{view}").result_rows), key=repr
        )
    return out


def ms(value: Any) -> int:
    from datetime import UTC

    return round(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000)


def ticks_as_published(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            (s, ms(t), p, b, a, z, v, q, None if r is None else ms(r))
            for s, t, p, b, a, z, v, q, r in rows
        ),
        key=repr,
    )


def read_dir(chdb_dir: Path, optimize: bool = False) -> dict[str, Any]:
    """Contents of a chDB directory (FINAL, and plain after OPTIMIZE ... FINAL)."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_dir}")
    try:
        final = table_contents(client, "tickstream", final=True)
        plain_before = sum(
            int(client.command(f"SELECT count() FROM tickstream.{t}")) for t in TABLES
        )
        if optimize:
            for table in TABLES:
                client.command(f"OPTIMIZE TABLE tickstream.{table} FINAL")
        plain = table_contents(client, "tickstream", final=False)
        return {"final": final, "plain": plain, "plain_rows_before_merge": plain_before}
    finally:
        client.close()


# ---------------------------------------------------------------- (a) kill and restart


def sink_process(settings: Settings, chdb_dir: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        TICKSTREAM_METRICS_PORT="0",
        TICKSTREAM_SINK_BATCH_ROWS="400",
        TICKSTREAM_SINK_FLUSH_MS="100",
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "sink",
            "--kafka-bootstrap",
            settings.kafka_bootstrap,
            "--namespace",
            settings.namespace,
            "--partitions",
            str(settings.partitions),
            "--clickhouse-url",
            f"chdb://{chdb_dir}",
            "--clickhouse-database",  # read_dir reads tickstream.*, whatever the namespace
            "tickstream",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_committed(
    settings: Settings,
    proc: subprocess.Popen[bytes],
    fraction: float,
    ends: dict[TopicPartition, int],
    deadline_s: float = 120.0,
) -> dict[TopicPartition, int]:
    """Poll the group's offsets until ``fraction`` of all messages are committed."""
    total = sum(ends.values())
    give_up = time.monotonic() + deadline_s
    while True:
        done = await committed(settings)
        if sum(done.values()) >= fraction * total:
            return done
        if proc.poll() is not None:
            raise AssertionError(f"sink exited early: {proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        if time.monotonic() > give_up:
            raise AssertionError(f"sink made no progress: committed {sum(done.values())}/{total}")
        await asyncio.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def test_sigkill_mid_run_then_restart_equals_uninterrupted_run(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    inputs = make_inputs(ticks_per_symbol=12_000)
    ref = Settings(kafka_bootstrap=kafka_bootstrap, namespace="t" + uuid.uuid4().hex[:10])
    test = Settings(kafka_bootstrap=kafka_bootstrap, namespace="t" + uuid.uuid4().hex[:10])
    await publish(ref, inputs)
    await publish(test, inputs)
    ref_dir, test_dir = tmp_path / "uninterrupted", tmp_path / "killed"

    # uninterrupted run
    ends = await end_offsets(ref)
    proc = sink_process(ref, ref_dir)
    try:
        await wait_committed(ref, proc, 1.0, ends)
    finally:
        stop(proc)

    # killed while inserting (some offsets committed, many not), then restarted
    ends = await end_offsets(test)
    proc = sink_process(test, test_dir)
    try:
        at_kill = await wait_committed(test, proc, 0.25, ends)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert sum(at_kill.values()) < sum(ends.values()), "the sink finished before the kill"
    proc = sink_process(test, test_dir)
    try:
        await wait_committed(test, proc, 1.0, ends)
    finally:
        stop(proc)
    assert await committed(test) == ends

    want = read_dir(ref_dir, optimize=True)
    got = read_dir(test_dir, optimize=True)
    for table in want["final"]:
        assert got["final"][table] == want["final"][table], f"{table} differs (FINAL)"
        assert got["plain"][table] == want["plain"][table], f"{table} differs after merges"
    assert ticks_as_published(got["final"]["ticks"]) == expected_ticks(inputs)
    print(
        f"rows before merges: uninterrupted {want['plain_rows_before_merge']}, "
        f"killed+restarted {got['plain_rows_before_merge']} (re-sent rows absorbed by FINAL)"
    )


# ---------------------------------------------------------------- (b) ClickHouse failures


class FaultyInserter(Inserter):
    """Fails at the client boundary: attempts 2-6 before writing (ClickHouse down), the first
    ticks insert from attempt 9 on after writing (acknowledgement lost), then every attempt
    for 0.6 s (an outage window). Records every attempt and every backoff pause."""

    def __init__(self, ch: ClickHouse, database: str) -> None:
        super().__init__(ch, database, max_backoff_s=0.4, initial_backoff_s=0.05)
        self.lock = threading.Lock()
        self.attempts: list[tuple[int, str, str, str, int]] = []  # n, table, token, outcome, recs
        # ("attempt", (token, span, ok)) | ("commit", offsets)
        self.events: list[tuple[str, Any]] = []
        self.delays: list[tuple[str, float]] = []
        self.stats: Any = None
        self.lost_ack_done = False
        self.window_until: float | None = None
        self.failures = 0

    def _note(self, block: Block, outcome: str) -> None:
        with self.lock:
            n = len(self.attempts) + 1
            self.attempts.append((n, block.table, block.token, outcome, self.stats.records))
            self.events.append(("attempt", (block.token, block.span, outcome == "ok")))
            if outcome != "ok":
                self.failures += 1

    def _insert(self, block: Block) -> None:
        n = len(self.attempts) + 1
        if 2 <= n <= 6:
            self._note(block, "down")
            raise ConnectionRefusedError("injected: ClickHouse is down")
        if self.window_until is not None and time.monotonic() < self.window_until:
            self._note(block, "window")
            raise ConnectionResetError("injected: outage window")
        super()._insert(block)
        if n >= 9 and block.table == "ticks" and not self.lost_ack_done:
            self.lost_ack_done = True
            self.window_until = time.monotonic() + 0.6  # the outage starts after the lost ack
            self._note(block, "lost_ack")
            raise TimeoutError("injected: the insert landed but its acknowledgement was lost")
        self._note(block, "ok")

    async def _sleep(self, seconds: float) -> None:
        self.delays.append((self.attempts[-1][2], seconds))
        await asyncio.sleep(seconds)


async def run_sink_until_drained(
    settings: Settings,
    ch: ClickHouse,
    run_id: str,
    inserter: FaultyInserter | None = None,
    before_merge: Callable[[], None] | None = None,
) -> ClickHouseSink:
    factory = (lambda c, db: inserter) if inserter is not None else None
    sink = ClickHouseSink(settings, ch=ch, inserter_factory=factory)
    await sink.start()
    if inserter is not None:
        inserter.stats = sink.stats
        consumer = sink._consumer
        assert consumer is not None
        commit = consumer.commit

        async def recording_commit(offsets: dict[TopicPartition, Any]) -> None:
            await commit(offsets)
            with inserter.lock:
                inserter.events.append(("commit", {tp: o.offset for tp, o in offsets.items()}))

        consumer.commit = recording_commit  # type: ignore[method-assign]
    task = asyncio.create_task(sink.run())
    try:
        waiter = asyncio.create_task(sink.wait_drained(run_id))
        done, _ = await asyncio.wait({waiter, task}, timeout=120, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()
        assert waiter in done, "the sink did not drain"
        if before_merge is not None:
            await ch.run(before_merge)  # on the ClickHouse thread: one thread at a time
        await sink.merge_touched()
    finally:
        await sink.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return sink


@pytest.fixture
def chdb_client(tmp_path: Path) -> Iterator[ClickHouse]:
    ch = ClickHouse(clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'chdb'}"))
    try:
        yield ch
    finally:
        ch.close()


def retries_total() -> float:
    return metrics.SINK_RETRIES._value.get()  # type: ignore[attr-defined]


async def test_clickhouse_failures_retried_with_backoff_nothing_lost_or_doubled(
    kafka_bootstrap: str, chdb_client: ClickHouse
) -> None:
    inputs = make_inputs(ticks_per_symbol=3_000)
    batch_rows = 1_000

    def settings(db: str) -> Settings:
        return Settings(
            kafka_bootstrap=kafka_bootstrap,
            namespace="t" + uuid.uuid4().hex[:10],
            clickhouse_url="chdb:///unused",  # the client is passed in
            clickhouse_database=db,
            metrics_port=0,
            sink_batch_rows=batch_rows,
            sink_flush_ms=100,
        )

    ref, test = settings("reference"), settings("tickstream")
    ref_run, test_run = await publish(ref, inputs), await publish(test, inputs)
    await run_sink_until_drained(ref, chdb_client, ref_run)

    client = chdb_client.client
    migrate(client, "tickstream")
    client.command("SYSTEM STOP MERGES tickstream.ticks")  # plain counts show every copy
    faulty = FaultyInserter(chdb_client, "tickstream")
    retries_before = retries_total()
    ends = await end_offsets(test)

    def before_merge() -> None:
        # merges stopped so far: every copy ever written is still there to be counted
        plain = int(client.command("SELECT count() FROM tickstream.ticks"))
        assert plain == len(expected_ticks(inputs)), "a retried insert doubled rows"
        client.command("SYSTEM START MERGES tickstream.ticks")

    sink = await run_sink_until_drained(test, chdb_client, test_run, faulty, before_merge)

    outcomes = [a[3] for a in faulty.attempts]
    assert outcomes[1:6] == ["down"] * 5
    assert outcomes.count("lost_ack") == 1 and outcomes.count("window") >= 2

    # retried with backoff: doubling from 0.05 s, capped at 0.4 s, jitter within +-50%
    burst = [d for token, d in faulty.delays if token == faulty.attempts[1][2]]
    assert len(burst) == 5
    for k, delay in enumerate(burst):
        base = min(0.05 * 2**k, 0.4)
        assert 0.5 * base <= delay <= 1.5 * base, (k, delay)
    assert retries_total() - retries_before == faulty.failures

    # an offset is committed only once every insert holding rows of messages before it landed
    spans: dict[str, list[tuple[str, int, int]]] = {}  # token -> [(topic, partition, end)]
    landed_at: dict[str, int] = {}  # token -> index of its successful attempt
    commit_events = []
    for index, (kind, detail) in enumerate(faulty.events):
        if kind == "commit":
            commit_events.append((index, detail))
            continue
        token, span, ok = detail
        spans[token] = [
            (t, int(p), int(r.split("-")[1]))
            for t, p, r in (part.rsplit(":", 2) for part in span.split(","))
        ]
        if ok:
            landed_at.setdefault(token, index)
    assert set(landed_at) == set(spans), "an insert never landed"
    for index, offsets in commit_events:
        for token, parts in spans.items():
            if any(offsets.get(TopicPartition(t, p), 0) >= end for t, p, end in parts):
                assert landed_at[token] < index, "offsets committed before the insert landed"
    assert commit_events and await committed(test) == ends

    # while failing, no message is taken: the count of consumed messages is frozen from the
    # third failed attempt of the outage on (the loop notices after at most one more poll)
    burst_attempts = faulty.attempts[1:7]  # five failures and the success
    assert len({a[4] for a in burst_attempts[2:]}) == 1
    # bounded memory: one batch in flight plus at most one being filled (+ one message)
    assert sink.stats.max_pending_rows <= 2 * batch_rows + TICKS_PER_MESSAGE

    want = table_contents(client, "reference", final=True)
    got = table_contents(client, "tickstream", final=True)
    for table in want:
        assert got[table] == want[table], f"{table} differs (FINAL)"
    want_plain = table_contents(client, "reference", final=False)
    got_plain = table_contents(client, "tickstream", final=False)
    for table in want_plain:
        assert got_plain[table] == want_plain[table], f"{table} differs (plain, after merge)"
    assert ticks_as_published(got["ticks"]) == expected_ticks(inputs)


async def test_unparseable_tick_rows_are_dropped_not_retried_forever(
    kafka_bootstrap: str, chdb_client: ClickHouse
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        namespace="t" + uuid.uuid4().hex[:10],
        clickhouse_url="chdb:///unused",
        clickhouse_database="tickstream",  # the test reads tickstream.*
        metrics_port=0,
        sink_flush_ms=100,
    )

    def tick(i: int, **wrong: Any) -> list[Any]:
        row = ["XAU", START_MS + i * 1000, 5000.0 + i, None, None, None, None, None, None]
        for index, value in wrong.items():
            row[int(index[1:])] = value
        return row

    good = [tick(i) for i in range(10)]
    bad = [tick(10, c1="2026-01-26 00:00:10"), tick(11, c2="5011"), tick(12, c7=1.5)]
    mixed = [tick(13), bad[0], tick(14), bad[1], bad[2], tick(15)]
    inputs: dict[str, list[tuple[bytes, bytes]]] = {
        "ticks": [
            (b"XAU", orjson.dumps(good[:5])),
            (b"XAU", orjson.dumps(mixed)),
            (b"XAU", b"this is not JSON"),
            (b"XAU", orjson.dumps(good[5:])),
        ]
    }
    run_id = await publish(settings, inputs)
    invalid = metrics.SINK_ERRORS.labels("ticks", "invalid_row")
    before = invalid._value.get()  # type: ignore[attr-defined]
    await run_sink_until_drained(settings, chdb_client, run_id)
    rows = chdb_client.client.query(
        "SELECT symbol, ts, price, bid, ask, size, venue, seq, recv_ts FROM tickstream.ticks FINAL"
    ).result_rows
    want = [tuple(r) for r in good + [tick(13), tick(14), tick(15)]]
    assert ticks_as_published([tuple(r) for r in rows]) == sorted(want, key=repr)
    assert invalid._value.get() - before == len(bad)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- (c) rows ClickHouse refuses


def quarantine_count(table: str, reason_class: str) -> float:
    return metrics.SINK_QUARANTINED.labels(table, reason_class)._value.get()  # type: ignore[attr-defined]


def plain_settings(kafka_bootstrap: str) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        namespace="t" + uuid.uuid4().hex[:10],
        clickhouse_url="chdb:///unused",  # the client is passed in
        clickhouse_database="tickstream",  # the tests read tickstream.*
        metrics_port=0,
        sink_flush_ms=100,
    )


async def read_quarantine(settings: Settings, expected: int, wait_s: float = 2.0) -> list[Any]:
    """Every record on the quarantine topic (waits a little for more than ``expected``)."""
    consumer = AIOKafkaConsumer(
        Topics(settings.namespace).quarantine,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            batches = await consumer.getmany(timeout_ms=200)
            records += [orjson.loads(r.value) for rs in batches.values() for r in rs]
            if len(records) >= expected:
                give_up = min(give_up, time.monotonic() + wait_s)
    finally:
        await consumer.stop()
    return records


async def message_at(settings: Settings, topic: str, partition: int, offset: int) -> bytes:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(), 30)
        assert record.offset == offset
        return record.value  # type: ignore[no-any-return]
    finally:
        await consumer.stop()


def rows(client: Any, table: str) -> list[tuple[Any, ...]]:
    cols = ", ".join(TABLES[table].columns)
    return sorted(
        map(tuple, client.query(f"SELECT {cols} FROM tickstream.{table} FINAL").result_rows),
        key=repr,
    )


async def check_quarantined(
    settings: Settings, records: list[Any], want: dict[tuple[str, str, str], Any]
) -> None:
    """Each record names its table, row, reason and source message; ``want`` maps
    (table, column, reason_class) to the bad value that row holds in that column."""
    found = {}
    now_ms = time.time() * 1000
    for record in records:
        assert set(record) >= {"table", "row", "reason", "reason_class", "topic", "partition"}
        assert {"offset", "sink_ms"} <= set(record)
        assert record["reason"] and len(record["reason"]) <= 2_100
        assert now_ms - 120_000 < record["sink_ms"] <= now_ms
        for (table, column, reason_class), value in want.items():
            if record["table"] == table and record["row"].get(column) == value:
                assert record["reason_class"] == reason_class, record
                found[(table, column, reason_class)] = record
        # the record points at the message that held the row
        value = await message_at(settings, record["topic"], record["partition"], record["offset"])
        doc = orjson.loads(value)
        bad = record["row"]
        if isinstance(doc, list):  # a batch of tick rows: the row is at its index
            assert list(bad.values()) == doc[record["index"]]
        else:
            assert any(v in doc.values() for v in bad.values())
    assert set(found) == set(want), f"not quarantined: {set(want) - set(found)}"


async def test_rows_clickhouse_refuses_are_quarantined_the_rest_flow(
    kafka_bootstrap: str, chdb_client: ClickHouse
) -> None:
    """Good and bad rows share each block: a rolling high whose time DateTime64 cannot hold
    (ClickHouse would store it and fail every later read: refused before the insert), a
    record break whose level is text, a late tick whose seq is 2^63 (the issue's stall).
    Good rows land, each bad one is on the quarantine topic with its reason, the sink
    commits everything, the metric counts the rows."""
    settings = plain_settings(kafka_bootstrap)
    minute = START_MS

    def rolling(n: int, **wrong: Any) -> dict[str, Any]:
        ts = minute + n * 60_000
        doc = {
            "kind": "rolling_high", "symbol": "XAU", "window": "1h", "ts_ms": ts,
            "high": 5_000.0 + n, "high_ts_ms": ts - 1, "low": 4_900.0, "low_ts_ms": ts - 2,
        }  # fmt: skip
        return doc | wrong

    def record(n: int, **wrong: Any) -> dict[str, Any]:
        doc = {
            "kind": "record_break", "record": "level_up", "symbol": "XAU",
            "ts_ms": minute + n * 60_000, "price": 5_000.0 + n, "level": 5_000.0 + n,
            "step": 1.0, "prev_ts_ms": None, "since_prev_s": None, "first_time": 1,
        }  # fmt: skip
        return doc | wrong

    def late(n: int, seq: int | None = None) -> list[Any]:
        return ["XAU", minute + n, 5_000.0, None, None, None, None, seq, None]

    bad_rolling = rolling(3, high_ts_ms=10**18)  # year 31 million
    bad_record = record(2, level="abc")
    bad_late = late(5, seq=2**63)
    aggregates = [rolling(n) for n in range(3)] + [bad_rolling] + [rolling(n) for n in (4, 5)]
    signals = [record(0), record(1), bad_record, record(3)]
    inputs: dict[str, list[tuple[bytes, bytes]]] = {
        "aggregates": [(b"XAU", orjson.dumps(doc)) for doc in aggregates],
        "signals": [(b"XAU", orjson.dumps(doc)) for doc in signals],
        "late": [(b"XAU", orjson.dumps([late(4), bad_late, late(6)]))],
    }
    run_id = await publish(settings, inputs)
    ends = await end_offsets(settings)
    classes = [(t, c) for t in TABLES for c in ("conversion", "range")]
    before = {tc: quarantine_count(*tc) for tc in classes}
    sink = await run_sink_until_drained(settings, chdb_client, run_id)

    client = chdb_client.client
    assert [r[3] for r in rows(client, "rolling_highs")] == [5_000.0 + n for n in (0, 1, 2, 4, 5)]
    assert [r[3] for r in rows(client, "record_breaks")] == [5_000.0 + n for n in (0, 1, 3)]
    assert [ms(r[1]) - minute for r in rows(client, "late_ticks")] == [4, 6]
    assert await committed(settings) == ends
    assert sink.stats.rows_quarantined == 3

    records = await read_quarantine(settings, 3)
    assert len(records) == 3, records
    await check_quarantined(
        settings,
        records,
        {
            ("rolling_highs", "high_ts", "range"): 10**18,
            ("record_breaks", "level", "conversion"): "abc",
            ("late_ticks", "seq", "conversion"): 2**63,
        },
    )
    reasons = {r["table"]: r["reason"] for r in records}
    assert "high_ts" in reasons["rolling_highs"] and "DateTime64" in reasons["rolling_highs"]
    assert "could not convert string to float" in reasons["record_breaks"]
    assert "seq" in reasons["late_ticks"]
    after = {tc: quarantine_count(*tc) for tc in classes}
    assert {tc: after[tc] - before[tc] for tc in classes if after[tc] != before[tc]} == {
        ("rolling_highs", "range"): 1,
        ("record_breaks", "conversion"): 1,
        ("late_ticks", "conversion"): 1,
    }


async def test_rows_of_wrong_type_do_not_crash_loop_the_sink(
    kafka_bootstrap: str, chdb_client: ClickHouse
) -> None:
    """Rows that decode but whose values the client cannot convert (a list for a count, a
    null for a non-nullable price, a number for a text column): quarantined, the sink runs
    on, every offset is committed (a restart would not meet them again)."""
    settings = plain_settings(kafka_bootstrap)

    def bar(n: int, **wrong: Any) -> dict[str, Any]:
        doc = {
            "kind": "bar_1m", "symbol": "XAG", "ts_ms": START_MS + n * 60_000,
            "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "ticks": 5 + n,
        }  # fmt: skip
        return doc | wrong

    def rejection(n: int, **wrong: Any) -> dict[str, Any]:
        doc = {
            "raw": f"bad line {n}", "source": "replay:x.csv", "position": f"line {n}",
            "reason": "malformed", "detail": "", "recv_ms": START_MS + n, "symbol": None,
        }  # fmt: skip
        return doc | wrong

    inputs: dict[str, list[tuple[bytes, bytes]]] = {
        "aggregates": [
            (b"XAG", orjson.dumps(d))
            for d in (bar(0), bar(1, ticks=[1]), bar(2), bar(3, high=None), bar(4))
        ],
        "dlq": [(b"r", orjson.dumps(d)) for d in (rejection(0), rejection(1, position=17))],
    }
    run_id = await publish(settings, inputs)
    ends = await end_offsets(settings)
    sink = await run_sink_until_drained(settings, chdb_client, run_id)  # re-raises a crash

    client = chdb_client.client
    assert [r[6] for r in rows(client, "bars_1m")] == [5, 7, 9]
    assert [r[2] for r in rows(client, "rejected_ticks")] == ["line 0"]
    assert await committed(settings) == ends
    assert sink.stats.rows_quarantined == 3
    records = await read_quarantine(settings, 3)
    assert len(records) == 3, records
    await check_quarantined(
        settings,
        records,
        {
            ("bars_1m", "ticks", "conversion"): [1],
            ("bars_1m", "high", "conversion"): None,
            ("rejected_ticks", "position", "conversion"): 17,
        },
    )


def sane_price(client: Any) -> None:
    """A constraint ClickHouse enforces on ticks (through ticks_ingest's view): a tick the
    contract accepts can still be refused by the server, as data (VIOLATED_CONSTRAINT)."""
    migrate(client, "tickstream")
    client.command(
        "ALTER TABLE tickstream.ticks ADD CONSTRAINT IF NOT EXISTS sane_price CHECK price < 1e6"
    )


async def test_tick_block_refused_is_split_by_message_then_row(
    kafka_bootstrap: str, chdb_client: ClickHouse
) -> None:
    settings = plain_settings(kafka_bootstrap)
    await chdb_client.run(sane_price, chdb_client.client)

    def tick(i: int, price: float = 5_000.0) -> list[Any]:
        return ["XAU", START_MS + i * 1000, price + i, None, None, None, None, i, None]

    messages = [
        [tick(i) for i in range(0, 5)],
        [tick(5), tick(6), tick(7, price=5e6), tick(8)],  # the third row is refused
        [tick(i) for i in range(9, 14)],
        [tick(14, price=7e6), tick(15)],
    ]
    inputs = {"ticks": [(b"XAU", orjson.dumps(m)) for m in messages]}
    run_id = await publish(settings, inputs)
    ends = await end_offsets(settings)
    before = quarantine_count("ticks", "range")
    await run_sink_until_drained(settings, chdb_client, run_id)

    got = ticks_as_published(rows(chdb_client.client, "ticks"))
    good = [tuple(t) for m in messages for t in m if t[2] < 1e6]
    assert got == sorted(good, key=repr)
    assert await committed(settings) == ends
    records = await read_quarantine(settings, 2)
    assert len(records) == 2, records
    await check_quarantined(settings, records, {("ticks", "price", "range"): 5e6 + 7})
    assert sorted(r["row"]["price"] for r in records) == [5e6 + 7, 7e6 + 14]
    assert sorted(r["index"] for r in records) == [0, 2]
    assert all("VIOLATED_CONSTRAINT" in r["reason"] for r in records)
    assert quarantine_count("ticks", "range") - before == 2


def _block(table: str) -> Block:
    return Block(table, columns=[[] for _ in TABLES[table].columns])


async def test_split_block_sent_again_is_a_no_op(chdb_client: ClickHouse) -> None:
    """A crash after a split block landed but before the commit: the same block (same span,
    same token) is sent again; its sub-blocks carry the same tokens, so nothing doubles."""
    client = chdb_client.client
    await chdb_client.run(sane_price, client)
    await chdb_client.run(client.command, "SYSTEM STOP MERGES tickstream.rolling_highs")
    await chdb_client.run(client.command, "SYSTEM STOP MERGES tickstream.ticks")
    inserter = Inserter(chdb_client, "tickstream", initial_backoff_s=0.01)

    def blocks() -> list[Block]:
        highs = _block("rolling_highs")
        for n in range(9):
            ts = START_MS + n * 60_000
            high = "n/a" if n in (2, 7) else 1.0 + n  # the client cannot make it a Float64
            highs.add_row(["XAU", "1h", ts, high, ts, 0.5, ts], ("t.aggregates", 0, n, 0))
        ticks = Block("ticks", json=[])
        for m in range(4):
            batch = [
                ["XAU", START_MS + (m * 3 + i) * 1000, 5e6 if (m, i) == (2, 1) else 5e3 + i]
                + [None] * 6
                for i in range(3)
            ]
            ticks.add_message(orjson.dumps(batch), len(batch), ("t.ticks", 1, 40 + m, 0))
        for block in (highs, ticks):
            block.span = "t.aggregates:0:0-9,t.ticks:1:40-44"
            block.token = hashlib.sha1(f"{block.table}|{block.span}".encode()).hexdigest()
        return [highs, ticks]

    for attempt in range(2):
        refused = [await inserter.insert(block) for block in blocks()]
        assert [len(r) for r in refused] == [2, 1], attempt
        assert [r.source for r in refused[0]] == [
            ("t.aggregates", 0, 2, 0),
            ("t.aggregates", 0, 7, 0),
        ]
        assert refused[1][0].source == ("t.ticks", 1, 42, 1)
    count = client.command
    assert await chdb_client.run(count, "SELECT count() FROM tickstream.rolling_highs") == 7
    assert await chdb_client.run(count, "SELECT count() FROM tickstream.ticks") == 11


def test_insert_errors_are_classified_conservatively() -> None:
    """Only errors positively about the data are quarantined; the rest is retried."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    from sinks.clickhouse_sink import data_error_class

    def raised_by_client() -> Exception:
        import clickhouse_connect.driver.common as common

        try:
            common.write_array("q", ["x"], bytearray(), "col")  # a real conversion failure
        except Exception as real:
            return real
        raise AssertionError("the client converted text to Int64")

    assert data_error_class(ConnectionRefusedError("down")) is None
    assert data_error_class(TimeoutError("slow")) is None
    assert data_error_class(OperationalError("Error executing HTTP request")) is None
    assert data_error_class(DatabaseError("Code: 252. TOO_MANY_PARTS", code=252)) is None
    assert data_error_class(DatabaseError("Code: 241. MEMORY_LIMIT_EXCEEDED", code=241)) is None
    assert data_error_class(DatabaseError("Code: 60. UNKNOWN_TABLE", code=60)) is None
    assert data_error_class(DatabaseError("Code: 27. CANNOT_PARSE_INPUT", code=27)) == "parse"
    assert data_error_class(DatabaseError("Code: 53. (TYPE_MISMATCH)")) == "type"
    assert data_error_class(OperationalError("x", code=321)) == "range"
    assert data_error_class(raised_by_client()) == "conversion"
    # the same Python exception types raised outside the client are not about the data
    assert data_error_class(ValueError("a bug of ours")) is None
    assert data_error_class(TypeError("a bug of ours")) is None
