"""Kill the stream processor mid-stream (SIGKILL), start it again: the tables end exactly
as after an uninterrupted run. Real broker, real Faust worker, real sink into chDB."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import clickhouse_connect
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from producers.publisher import Publisher
from producers.replay import ReplayConfig, replay
from producers.validation import ValidationConfig, Validator
from tickstream import contracts
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gold_silver_2026-01-26.csv"
TABLES = {
    "bars_1m": "symbol, ts, open, high, low, close, ticks",
    "rolling_highs": "symbol, window, ts, high, high_ts, low, low_ts",
    "record_breaks": "symbol, kind, ts, price, level, step, prev_ts, since_prev_s, first_time",
    "divergence_windows": "pair, metric, direction, opened_at, closed_at, open_value, "
    "peak_value, peak_at, close_value",
    "late_ticks": "symbol, ts, price",
    "ticks": "symbol, ts, price, bid, ask",
}


def component(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        TICKSTREAM_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        TICKSTREAM_NAMESPACE=settings.namespace,
        TICKSTREAM_CLICKHOUSE_URL=settings.clickhouse_url,
        TICKSTREAM_CLICKHOUSE_DATABASE=settings.clickhouse_database,
        TICKSTREAM_METRICS_PORT="0",
    )
    return subprocess.Popen([sys.executable, "-m", "cli", "-q", *args], env=env)


async def publish_lines(
    settings: Settings, path: Path, start_line: int, stop_line: int | None, run_id: str | None
) -> None:
    async def source():  # type: ignore[no-untyped-def]
        async for raw in replay(ReplayConfig(path, start_line=start_line)):
            if stop_line is not None and int(raw.position.split()[1]) >= stop_line:
                return
            yield raw

    async with Publisher(settings, Validator(ValidationConfig())) as publisher:
        await publisher.publish(source())
        if run_id is not None:
            await publisher.end_of_input(run_id)


async def state_offsets(settings: Settings) -> int:
    """Ticks-topic messages reflected in the processor's latest snapshot."""
    from processors.app import load_snapshots
    from processors.core import decode_state

    topic = Topics(settings.namespace).processor_state
    blobs = await load_snapshots(settings.kafka_bootstrap, topic)
    return sum(v + 1 for blob in blobs.values() for v in decode_state(blob)["applied"].values())


async def wait_until_sunk(settings: Settings, run_id: str, timeout_s: float = 120) -> None:
    """The processor passed the end marker on, and the sink committed every message."""
    topics = Topics(settings.namespace)
    consumer = AIOKafkaConsumer(
        topics.aggregates,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        seen = 0
        async with asyncio.timeout(timeout_s):
            while seen < settings.partitions:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    seen += sum(
                        contracts.is_end_of_input(orjson.loads(r.value))
                        and orjson.loads(r.value)["run_id"] == run_id
                        for r in records
                    )
        parts = [
            TopicPartition(t, p) for t in topics.sink_inputs() for p in range(settings.partitions)
        ]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                committed = await admin.list_consumer_group_offsets(topics.group("sink"))
                if all(
                    committed.get(tp) is not None and committed[tp].offset >= ends[tp]
                    for tp in parts
                    if ends[tp] > 0
                ):
                    return
                await asyncio.sleep(0.3)
    finally:
        await admin.close()


LEDGER = "signal_ledger"
"""Not compared whole (emission times differ between runs): each signal id's statuses."""


def run_pipeline(kafka_bootstrap: str, chdb: Path, kill_midway: bool) -> dict[str, list[tuple]]:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        namespace="r" + uuid.uuid4().hex[:10],
        clickhouse_url=f"chdb://{chdb}",
        clickhouse_database="tickstream",  # the tables are read as tickstream.*
        metrics_port=0,
    )
    asyncio.run(ensure_topics(settings))
    sink = component(settings, "sink")
    processor = component(settings, "process", "--no-seed-from-clickhouse")
    run_id = uuid.uuid4().hex
    try:
        asyncio.run(publish_lines(settings, EXAMPLE, 0, 4_000, None))
        if kill_midway:
            deadline = time.monotonic() + 60
            while asyncio.run(state_offsets(settings)) == 0:  # it has processed something
                assert time.monotonic() < deadline, "processor made no progress"
                time.sleep(0.2)
            processor.send_signal(signal.SIGKILL)
            processor.wait()
            asyncio.run(publish_lines(settings, EXAMPLE, 4_000, 7_000, None))
            processor = component(settings, "process", "--no-seed-from-clickhouse")
        else:
            asyncio.run(publish_lines(settings, EXAMPLE, 4_000, 7_000, None))
        asyncio.run(publish_lines(settings, EXAMPLE, 7_000, None, run_id))
        asyncio.run(wait_until_sunk(settings, run_id))
    finally:
        for proc in (processor, sink):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb}")
    try:
        tables = {
            table: sorted(client.query(f"SELECT {cols} FROM tickstream.{table} FINAL").result_rows)
            for table, cols in TABLES.items()
        }
        tables[LEDGER] = sorted(
            client.query(
                f"SELECT id, groupUniqArray(status) FROM tickstream.{LEDGER} FINAL GROUP BY id"
            ).result_rows
        )
        return tables
    finally:
        client.close()


def test_killed_processor_resumes_exactly(kafka_bootstrap: str, tmp_path: Path) -> None:
    clean = run_pipeline(kafka_bootstrap, tmp_path / "clean", kill_midway=False)
    killed = run_pipeline(kafka_bootstrap, tmp_path / "killed", kill_midway=True)
    assert len(clean["ticks"]) == 10_000
    assert clean["record_breaks"] and clean["rolling_highs"] and clean["divergence_windows"]
    for table in TABLES:
        assert killed[table] == clean[table], table
    # the desk path: no provisional id is left dangling by the kill, and the signals
    # confirmed (ids included) are exactly those of the uninterrupted run
    for run in (clean, killed):
        statuses = dict(run[LEDGER])
        assert statuses, "no desk signal at all"
        dangling = [i for i, s in statuses.items() if not {"confirmed", "retracted"} & set(s)]
        assert not dangling, f"provisional ids never confirmed nor retracted: {dangling[:5]}"
    confirmed = [{i for i, s in run[LEDGER] if "confirmed" in s} for run in (clean, killed)]
    assert confirmed[0] and confirmed[1] == confirmed[0]
