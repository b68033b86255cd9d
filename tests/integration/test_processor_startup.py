"""A broker lost while the processor starts is waited for, not a reason to exit.

Later in its life the Kafka client waits for a broker that went away; Faust's start-up
gave up at once instead (KafkaConnectionError from the producer's bootstrap, exit 1 and a
traceback), and so did the read-back of the state. The broker here is the test's own (its
own port and storage): it is SIGKILLed at moments of the processor's start-up counted
from its first line ("created topics": the topics are new), and started again on the
same storage two seconds later. The processor must then process a published file to its
end marker, and stop with exit code 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from bench.soak import LocalBroker, free_port_pair
from producers.publisher import Publisher
from producers.replay import ReplayConfig, replay
from producers.validation import ValidationConfig, Validator
from tickstream import contracts
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gold_silver_2026-01-26.csv"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    broker = LocalBroker(free_port_pair(), tmp_path / "kafka")
    broker.up()
    try:
        yield broker
    finally:
        broker.down()


async def publish(settings: Settings, run_id: str, lines: int = 3_000) -> None:
    async def source():  # type: ignore[no-untyped-def]
        n = 0
        async for raw in replay(ReplayConfig(EXAMPLE)):
            n += 1
            if n > lines:
                return
            yield raw

    async with Publisher(settings, Validator(ValidationConfig())) as publisher:
        await publisher.publish(source())
        await publisher.end_of_input(run_id)


async def wait_for_marker(settings: Settings, run_id: str, timeout_s: float) -> None:
    """Every partition of the aggregates topic has the run's end marker: processed."""
    consumer = AIOKafkaConsumer(
        Topics(settings.namespace).aggregates,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        seen: set[int] = set()
        async with asyncio.timeout(timeout_s):
            while len(seen) < settings.partitions:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for r in records:
                        doc = orjson.loads(r.value)
                        if contracts.is_end_of_input(doc) and doc["run_id"] == run_id:
                            seen.add(r.partition)
    finally:
        await consumer.stop()


@pytest.mark.parametrize("after_s", [0.0, 0.6, 1.2])
def test_broker_lost_during_start_up_is_waited_for(
    own_broker: LocalBroker, tmp_path: Path, after_s: float
) -> None:
    settings = Settings(
        kafka_bootstrap=own_broker.bootstrap,
        namespace="st" + uuid.uuid4().hex[:10],
        clickhouse_url=f"chdb://{tmp_path / 'chdb'}",
        metrics_port=0,
    )
    log = tmp_path / "processor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "process", "--no-seed-from-clickhouse"],
            env={**os.environ, **settings.to_env()},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "created topics" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the processor did not start"
            time.sleep(0.02)
        time.sleep(after_s)
        own_broker.kill()
        time.sleep(2.0)
        own_broker.up()
        run_id = uuid.uuid4().hex
        asyncio.run(publish(settings, run_id))
        assert proc.poll() is None, f"the processor exited:\n{log.read_text()[-3000:]}"
        asyncio.run(wait_for_marker(settings, run_id, timeout_s=180))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(errors="replace")
