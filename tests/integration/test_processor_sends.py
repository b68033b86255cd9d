"""A send the broker refuses stops the processor, and nothing of its batch is acknowledged.

The refusal is the broker's own: the topic's ``max.message.bytes`` is lowered below any
record batch, so every produce request to it fails with MESSAGE_TOO_LARGE, as a row or a
snapshot too large for the broker would. Before the fix the delivery futures were dropped
and a flush never raised, so the worker went on, wrote its snapshot and committed the
offsets of ticks whose outputs (or snapshot) never reached Kafka: a restart skipped them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processors.app import load_snapshots
from producers.publisher import Publisher
from producers.replay import ReplayConfig, replay
from producers.validation import ValidationConfig, Validator
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gold_silver_2026-01-26.csv"


async def refuse_every_record(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": "64"})
        await admin.alter_configs([resource])
    finally:
        await admin.close()


async def publish(settings: Settings, lines: int) -> None:
    async def source():  # type: ignore[no-untyped-def]
        n = 0
        async for raw in replay(ReplayConfig(EXAMPLE)):
            n += 1
            if n > lines:
                return
            yield raw

    async with Publisher(settings, Validator(ValidationConfig())) as publisher:
        await publisher.publish(source())
        await publisher.end_of_input(uuid.uuid4().hex)


async def committed(settings: Settings) -> dict[int, int]:
    """The processor group's committed offsets on the ticks topic, by partition."""
    topics = Topics(settings.namespace)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(topics.group("processor"))
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topics.ticks and meta.offset >= 0
    }


@pytest.mark.parametrize("refusing", ["aggregates", "processor_state"])
def test_a_refused_send_stops_the_processor_unacknowledged(
    settings: Settings, tmp_path: Path, refusing: str
) -> None:
    topics = Topics(settings.namespace)
    topic = getattr(topics, refusing)
    asyncio.run(ensure_topics(settings))
    asyncio.run(refuse_every_record(settings.kafka_bootstrap, topic))
    log = tmp_path / "processor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "-q", "process", "--no-seed-from-clickhouse"],
            env={**os.environ, **settings.to_env()},
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        asyncio.run(publish(settings, 2_000))
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            state = asyncio.run(load_snapshots(settings.kafka_bootstrap, topics.processor_state))
            pytest.fail(
                f"the processor still runs although every send to {topic} fails; committed "
                f"offsets {asyncio.run(committed(settings))}, snapshots written: "
                f"{sorted(state)}\n{log.read_text(errors='replace')[-3000:]}"
            )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert code != 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text[-3000:]
    assert topic in errors[0] and "MessageSizeTooLarge" in errors[0], errors[0]
    assert asyncio.run(committed(settings)) == {}, "offsets committed past refused sends"
    if refusing == "aggregates":  # a snapshot would skip the lost outputs' ticks on restart
        state = asyncio.run(load_snapshots(settings.kafka_bootstrap, topics.processor_state))
        assert state == {}, "snapshot written although outputs before it were refused"
