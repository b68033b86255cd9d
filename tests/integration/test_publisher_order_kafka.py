"""Per-symbol order through the real broker: many symbols, tiny messages, two sources.

The unit property (tests/unit/test_publisher_order.py) drives the publisher against a fake
broker; this is the same check once against aiokafka and Kafka, read back per partition.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from producers.publisher import Publisher
from producers.records import RawTick, Rejection, wall_ms
from producers.validation import Row, ValidationConfig, Validator
from tickstream import contracts
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka


class RecordingValidator(Validator):
    def __init__(self) -> None:
        super().__init__(ValidationConfig(spike_filter=False))
        self.order: dict[str, list[int]] = defaultdict(list)

    def feed_row(self, raw: RawTick, accepted: list[Row], rejected: list[Rejection]) -> Row | None:
        before = len(accepted)
        row = super().feed_row(raw, accepted, rejected)
        for r in [*accepted[before:], *([row] if row is not None else [])]:
            self.order[r[0]].append(r[7])
        return row


async def source(name: str, seed: int, seqs: itertools.count[int]) -> AsyncIterator[RawTick]:
    rnd = random.Random(seed)
    now = wall_ms() - 60_000
    for _ in range(6_000):
        if rnd.random() < 0.02:
            await asyncio.sleep(0)
        n = next(seqs)
        fields = {"symbol": f"S{rnd.randrange(300)}", "ts": now + n, "price": 100.0, "seq": n}
        yield RawTick("", name, f"n={n}", now, fields)


async def read_ticks(settings: Settings, run_id: str) -> dict[str, list[int]]:
    consumer = AIOKafkaConsumer(
        Topics(settings.namespace).ticks,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    order: dict[str, list[int]] = defaultdict(list)
    markers = 0
    try:
        async with asyncio.timeout(60):
            while markers < settings.partitions:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:  # one partition's records, in offset order
                        doc = orjson.loads(r.value)
                        if contracts.is_end_of_input(doc):
                            markers += doc["run_id"] == run_id
                            continue
                        for tick in contracts.decode_ticks_message(r.value).ticks:
                            order[tick.symbol].append(tick.seq)  # type: ignore[arg-type]
    finally:
        await consumer.stop()
    return order


async def test_each_symbol_keeps_its_order_on_the_broker(settings: Settings) -> None:
    await ensure_topics(settings)
    validator = RecordingValidator()
    seqs = itertools.count()
    async with Publisher(settings, validator, ticks_per_message=3, linger_ms=1) as publisher:
        await asyncio.gather(
            publisher.publish(source("a", 1, seqs)), publisher.publish(source("b", 2, seqs))
        )
        await publisher.end_of_input("order")
    assert await read_ticks(settings, "order") == validator.order
