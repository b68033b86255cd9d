"""The processor's consumer never sends a fetch that leaves a partition out, even while
Faust holds that partition's records (as it does while its stream's buffer is full): such
a fetch would make the partition's next records wait for the long poll of the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from processors.app import create_app
from processors.config import analytics_config
from tests.kafka_fetches import record_fetches
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka


async def test_records_held_back_never_leave_their_partition_out_of_a_fetch(
    kafka_bootstrap: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the app's data directory
    settings = Settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace, metrics_port=0)
    await ensure_topics(settings)
    topic = Topics(namespace).ticks
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    held, others = tps[0], set(tps[1:])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0)
    await producer.start()

    async def publish(partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            await producer.send_and_wait(topic, b"[]", partition=tp.partition)

    app = create_app(settings, analytics_config(settings, {}))
    thread = app.consumer._new_consumer_thread()
    await thread.on_start()  # builds and starts the consumer as the processor does
    consumer = thread._consumer
    fetched = record_fetches(consumer)
    try:
        await publish(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(30):
            while not await consumer.getmany(*others, timeout_ms=100):
                pass  # until a fetch has returned records, the held partition's among them
            # only the others' records are taken for a while, as Faust does with a
            # partition whose buffer is full: well past aiokafka's prefetch backoff
            for _ in range(10):
                await publish(list(others))
                await consumer.getmany(*others, timeout_ms=50)
            taken = await consumer.getmany(held, timeout_ms=1000)
        assert taken.get(held), "the held partition's records were lost"
        assert fetched and all(parts == {tp.partition for tp in tps} for parts in fetched), fetched
    finally:
        await consumer.stop()
        await producer.stop()
