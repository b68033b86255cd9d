"""The publisher ships a live tick when its source pauses, yet a busy source fills messages.

Both run with a linger far longer than the test, so only the pause detection can ship
early (nothing here times the broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from producers.publisher import Publisher
from producers.records import RawTick, wall_ms
from producers.validation import ValidationConfig, Validator
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka
LONG_LINGER_MS = 600_000


def tick(n: int, symbol: str = "XAU") -> RawTick:
    now = wall_ms()
    fields = {"symbol": symbol, "ts": now, "price": 5000.0 + n % 7, "seq": n}
    return RawTick("", "test", f"n={n}", now, fields)


async def messages_on_ticks(settings: Settings, expected_ticks: int) -> list[list[list]]:
    consumer = AIOKafkaConsumer(
        Topics(settings.namespace).ticks,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    messages: list[list[list]] = []
    try:
        async with asyncio.timeout(30):
            while sum(len(m) for m in messages) < expected_ticks:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    messages.extend(orjson.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return messages


async def test_a_tick_after_a_quiet_spell_leaves_when_the_source_pauses(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    arrived = asyncio.Event()

    async def live() -> AsyncIterator[RawTick]:
        yield tick(1)
        await arrived.wait()  # a live source waiting for its venue's next frame
        yield tick(2)

    async with Publisher(
        settings, Validator(ValidationConfig()), linger_ms=LONG_LINGER_MS
    ) as publisher:
        publishing = asyncio.create_task(publisher.publish(live()))
        messages = await messages_on_ticks(settings, 1)  # long before the linger is up
        arrived.set()
        await publishing
    assert [[row[2] for row in m] for m in messages] == [[5001.0]]


async def test_a_busy_source_still_fills_its_messages(settings: Settings) -> None:
    await ensure_topics(settings)

    async def fast() -> AsyncIterator[RawTick]:
        for n in range(5_000):
            if n % 100 == 0:
                await asyncio.sleep(0)  # yields now and then, as a fast replay does
            yield tick(n, "XAU" if n % 2 else "XAG")

    async with Publisher(
        settings, Validator(ValidationConfig()), linger_ms=LONG_LINGER_MS
    ) as publisher:
        await publisher.publish(fast())
    messages = await messages_on_ticks(settings, 5_000)
    # 500 ticks a message: 5 per symbol (a tick per yield would have made 50 or more)
    assert len(messages) <= 12


async def test_each_shipment_is_followed_by_a_paced_collection(settings: Settings) -> None:
    """The linger loop is where the publisher offers its collector a turn (between
    shipments, when no batch is being built): see ``PacedCollections``."""
    await ensure_topics(settings)
    offered: list[int] = []

    async def paced() -> AsyncIterator[RawTick]:
        for n in range(3):
            yield tick(n)
            await asyncio.sleep(0.05)  # a quiet spell: each tick leaves on its own

    async with Publisher(
        settings,
        Validator(ValidationConfig()),
        linger_ms=1,
        collect_when_due=lambda: offered.append(len(offered)),
    ) as publisher:
        await publisher.publish(paced())
    await messages_on_ticks(settings, 3)
    assert len(offered) >= 3
