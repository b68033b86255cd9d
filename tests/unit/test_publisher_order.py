"""The publisher keeps each symbol's ticks in the order validation accepted them.

A fake broker takes the place of aiokafka: it records, per partition, the messages of
every batch it takes, in the order it takes them (aiokafka keeps that order per
partition), and makes the publisher wait (yields to the event loop) or refuses a batch
for now (``KafkaTimeoutError``, the retry path) on a drawn schedule. Several sources are
published concurrently through one publisher, with many symbols, tiny messages and
batches, so the linger task, full messages and retries interleave in every way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import producers.publisher as publisher_module
from producers.publisher import Publisher
from producers.records import RawTick, Rejection
from producers.validation import Row, ValidationConfig, Validator
from tickstream.contracts import decode_ticks_message
from tickstream.settings import Settings
from tickstream.topics import Topics

T0 = 1_767_225_600_000
PARTITIONS = 4


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.values: list[bytes] = []
        self.capacity = capacity
        self.closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: Any) -> object | None:
        if self.closed or len(self.values) >= self.capacity:
            return None
        self.values.append(value)
        return object()

    def record_count(self) -> int:
        return len(self.values)

    def close(self) -> None:
        self.closed = True


class FakeBroker:
    """``schedule``: per send_batch call, n >= 0 yields then take the batch; n < 0 yields
    then refuse it for now (a broker away). Acknowledgements come ``ack_yields`` later."""

    def __init__(self, schedule: list[int], capacity: int, ack_yields: int) -> None:
        self.log: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        self.schedule = itertools.cycle([*schedule, 0])
        self.capacity = capacity
        self.ack_yields = ack_yields
        self.refused = 0

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        action = next(self.schedule)
        for _ in range(abs(action)):
            await asyncio.sleep(0)
        if action < 0:
            self.refused += 1
            raise KafkaTimeoutError()
        assert batch.closed, "a batch is closed before it is sent"
        self.log[(topic, partition)].extend(batch.values)
        done = asyncio.get_running_loop().create_future()

        async def ack() -> None:
            for _ in range(self.ack_yields):
                await asyncio.sleep(0)
            done.set_result(None)

        asyncio.get_running_loop().create_task(ack())
        return done

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class RecordingValidator(Validator):
    """Notes, per symbol, the order in which validation accepted rows."""

    def __init__(self) -> None:
        super().__init__(ValidationConfig(spike_filter=False), now_ms=lambda: T0 + 10**9)
        self.order: dict[str, list[int]] = defaultdict(list)

    def feed_row(self, raw: RawTick, accepted: list[Row], rejected: list[Rejection]) -> Row | None:
        before = len(accepted)
        row = super().feed_row(raw, accepted, rejected)
        for r in [*accepted[before:], *([row] if row is not None else [])]:
            self.order[r[0]].append(r[7])
        return row


async def source(
    name: str, picks: list[tuple[int, bool]], seqs: itertools.count[int]
) -> AsyncIterator[RawTick]:
    for symbol, pause in picks:
        if pause:
            await asyncio.sleep(0)
        n = next(seqs)
        fields = {"symbol": f"S{symbol}", "ts": T0 + n, "price": 100.0 + n % 7, "seq": n}
        yield RawTick("", name, f"n={n}", T0 + n, fields)


def published(broker: FakeBroker, topic: str) -> dict[str, list[int]]:
    """Per symbol, the seq of every tick on the ticks topic, in partition order."""
    out: dict[str, list[int]] = defaultdict(list)
    for (t, _), values in sorted(broker.log.items()):
        if t != topic:
            continue
        for value in values:
            for tick in decode_ticks_message(value).ticks:
                out[tick.symbol].append(tick.seq)  # type: ignore[arg-type]
    return out


async def run(
    sources: list[list[tuple[int, bool]]],
    schedule: list[int],
    capacity: int,
    ack_yields: int,
    ticks_per_message: int,
    max_in_flight: int,
    linger_ms: int,
) -> tuple[RecordingValidator, FakeBroker, str]:
    broker = FakeBroker(schedule, capacity, ack_yields)
    validator = RecordingValidator()
    settings_ = Settings(namespace="order", metrics_port=0)
    original = publisher_module.make_producer
    publisher_module.make_producer = lambda *_a, **_k: broker  # type: ignore[assignment]
    try:
        publisher = Publisher(
            settings_,
            validator,
            ticks_per_message=ticks_per_message,
            max_in_flight=max_in_flight,
            linger_ms=linger_ms,
        )
    finally:
        publisher_module.make_producer = original
    seqs = itertools.count()
    async with publisher:
        await asyncio.gather(
            *(publisher.publish(source(f"src{i}", picks, seqs)) for i, picks in enumerate(sources))
        )
    return validator, broker, Topics(settings_.namespace).ticks


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "RETRY_FIRST_S", 0.0, raising=False)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sources=st.lists(
        st.lists(st.tuples(st.integers(0, 59), st.booleans()), max_size=250),
        min_size=1,
        max_size=4,
    ),
    schedule=st.lists(st.integers(-2, 4), max_size=12),
    capacity=st.integers(1, 4),
    ack_yields=st.integers(0, 3),
    ticks_per_message=st.integers(1, 6),
    max_in_flight=st.integers(1, 4),
    linger_ms=st.sampled_from([0, 1]),
)
def test_each_symbol_keeps_its_accepted_order(
    sources, schedule, capacity, ack_yields, ticks_per_message, max_in_flight, linger_ms
) -> None:  # type: ignore[no-untyped-def]
    validator, broker, topic = asyncio.run(
        run(sources, schedule, capacity, ack_yields, ticks_per_message, max_in_flight, linger_ms)
    )
    assert published(broker, topic) == validator.order


def test_an_inversion_the_old_linger_task_made() -> None:
    """Many symbols, a broker that makes every batch wait: the linger task, shipping a
    swapped buffer symbol by symbol, used to let a full message of a symbol it had not
    shipped yet overtake that symbol's older ticks."""
    rnd = random.Random(7)
    picks = [(rnd.randrange(200), rnd.random() < 0.01) for _ in range(3_000)]
    validator, broker, topic = asyncio.run(run([picks], [], 3, 0, 2, 4, 1))
    assert published(broker, topic) == validator.order


class GatedBroker(FakeBroker):
    """The first send waits at a gate (a broker slow to take a batch)."""

    def __init__(self) -> None:
        super().__init__([], capacity=2, ack_yields=0)
        self.sending = asyncio.Event()
        self.gate = asyncio.Event()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        if not self.sending.is_set():
            self.sending.set()
            await self.gate.wait()
        return await super().send_batch(batch, topic, partition=partition)


def test_a_sender_cancelled_mid_send_loses_and_reorders_nothing() -> None:
    """The linger task is cancelled (the publisher closing) while aiokafka has not taken its
    batch yet: that batch is sent by the next flush, before anything queued after it."""

    async def scenario() -> tuple[RecordingValidator, FakeBroker, str]:
        broker = GatedBroker()
        validator = RecordingValidator()
        settings_ = Settings(namespace="order", metrics_port=0)
        original = publisher_module.make_producer
        publisher_module.make_producer = lambda *_a, **_k: broker  # type: ignore[assignment]
        try:
            publisher = Publisher(settings_, validator, ticks_per_message=2, linger_ms=0)
        finally:
            publisher_module.make_producer = original
        resume = asyncio.Event()

        async def feed() -> AsyncIterator[RawTick]:
            seqs = itertools.count()
            async for raw in source("a", [(n % 3, False) for n in range(5)], seqs):
                yield raw
            await resume.wait()
            async for raw in source("a", [(n % 3, False) for n in range(40)], seqs):
                yield raw

        async with publisher:
            publishing = asyncio.create_task(publisher.publish(feed()))
            await broker.sending.wait()
            linger = publisher._linger_task
            assert linger is not None
            linger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await linger
            broker.gate.set()
            resume.set()
            await publishing
        return validator, broker, Topics(settings_.namespace).ticks

    validator, broker, topic = asyncio.run(scenario())
    assert published(broker, topic) == validator.order
