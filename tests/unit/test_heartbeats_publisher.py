"""The publisher's clock heartbeats (producers/heartbeats.py): when, stamped how, where.

``QuietClocks`` with a fake clock: due after heartbeat_ms of quiet, stamped with the
quiet time, repeated, ended at newest + lateness. The Publisher with a
fake broker (real time, short settings): heartbeats on the symbol's partition after its
ticks, not counted as ticks, none with heartbeat_ms 0, none while the broker refuses.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError

import producers.publisher as publisher_module
from producers.heartbeats import QuietClocks
from producers.publisher import Publisher
from producers.records import RawTick
from producers.validation import ValidationConfig, Validator
from tickstream.contracts import Heartbeat, decode_ticks_message
from tickstream.settings import Settings
from tickstream.topics import Topics

N = 1_769_385_600_000


def test_due_after_quiet_stamped_with_the_quiet_time_until_lateness_passed() -> None:
    clocks = QuietClocks(250, 1_000, {"XAG": 0})
    clocks.shipped("XAU", N, 10_000.0)
    assert clocks.next_due() == 10_250.0
    assert clocks.due(10_249.9) == []
    sent = []
    for now in (10_250.0, 10_400.0, 10_500.0, 10_760.0, 11_010.0, 11_260.0, 11_600.0):
        sent += clocks.due(now)
    # every 250 ms of wall time, stamped N + quiet time, the last at N + 1000 (lateness)
    assert sent == [("XAU", N + 250), ("XAU", N + 500), ("XAU", N + 760), ("XAU", N + 1_000)]
    assert clocks.next_due() is None and "XAU" not in clocks
    clocks.shipped("XAU", N + 7, 20_000.0)  # a tick: a new spell
    assert clocks.due(20_250.0) == [("XAU", N + 257)]


def test_a_late_look_claims_no_more_than_the_lateness() -> None:
    clocks = QuietClocks(250, 1_000, {"XAG": 0, "XPT": 100})
    clocks.shipped("XAU", N, 0.0)
    clocks.shipped("XAG", N + 3, 0.0)  # lateness 0: its tick confirmed everything already
    clocks.shipped("XPT", N + 5, 0.0)
    assert clocks.due(60_000.0) == [("XAU", N + 1_000), ("XPT", N + 105)]
    assert clocks.due(120_000.0) == []
    assert "XAG" not in clocks


def test_busy_symbols_and_stalls() -> None:
    clocks = QuietClocks(100, 1_000)
    clocks.shipped("XAU", N, 0.0)
    assert clocks.due(150.0, busy={"XAU"}) == []  # ticks taken, not queued: not quiet
    clocks.restart(500.0)  # the broker was away until 500: quiet time counts from there
    assert clocks.due(550.0) == []
    assert clocks.due(600.0) == [("XAU", N + 100)]
    with pytest.raises(ValueError):
        QuietClocks(0, 1_000)


# -- the publisher, against a fake broker ----------------------------------------------------


class FakeBatch:
    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: Any) -> object:
        self.items.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.items)

    def close(self) -> None:
        pass


class FakeBroker:
    def __init__(self, refuse: int = 0) -> None:
        self.log: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
        self.refuse = refuse  # refuse this many send_batch calls first (a broker away)

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        if self.refuse > 0:
            self.refuse -= 1
            await asyncio.sleep(0.05)
            raise KafkaTimeoutError()
        self.log[(topic, partition)].extend(batch.items)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(4))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def quiet_source(stamps: list[int], quiet_s: float) -> AsyncIterator[RawTick]:
    for i, ts in enumerate(stamps):
        fields = {"symbol": "XAU", "ts": ts, "price": 5_000.0 + i}
        yield RawTick("", "live", f"n={i}", ts, fields)
        await asyncio.sleep(0.001)
    await asyncio.sleep(quiet_s)  # a live source waiting for its next input


def run(
    broker: FakeBroker,
    heartbeat_ms: int,
    quiet_s: float,
    monkeypatch: pytest.MonkeyPatch,
    stamps: tuple[int, ...] = (N - 20, N - 10, N),
    ticks_per_message: int = 500,
) -> tuple[Publisher, list[Any], int]:
    settings = Settings(
        namespace="beats", metrics_port=0, heartbeat_ms=heartbeat_ms, allowed_lateness_ms=200
    )
    monkeypatch.setattr(publisher_module, "make_producer", lambda *_a, **_k: broker)
    monkeypatch.setattr(publisher_module, "RETRY_FIRST_S", 0.05)
    validator = Validator(ValidationConfig(spike_filter=False), now_ms=lambda: N)
    publisher = Publisher(settings, validator, linger_ms=1, ticks_per_message=ticks_per_message)

    async def go() -> None:
        async with publisher:
            await publisher.publish(quiet_source(list(stamps), quiet_s))

    asyncio.run(go())
    topic = Topics("beats").ticks
    (partition,) = {p for (t, p), items in broker.log.items() if t == topic and items}
    items = []
    for key, value in broker.log[(topic, partition)]:
        assert key == b"XAU"  # the ticks' key, so the ticks' partition
        decoded = decode_ticks_message(value)
        items += decoded.ticks or [decoded.control]
    return publisher, items, partition


def test_heartbeats_follow_the_ticks_on_their_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = FakeBroker()
    publisher, items, partition = run(broker, 50, 0.6, monkeypatch)
    assert [t.ts_ms for t in items[:3]] == [N - 20, N - 10, N]
    beats = items[3:]
    assert beats and all(isinstance(b, Heartbeat) and b.symbol == "XAU" for b in beats)
    stamps = [b.ts_ms for b in beats]
    assert stamps == sorted(set(stamps)) and stamps[0] >= N + 50
    assert stamps[-1] == N + 200  # the lateness: then no more
    assert 2 <= len(beats) <= 5
    assert publisher.report.accepted == 3  # heartbeats are not published ticks
    assert publisher.heartbeats is not None and publisher.heartbeats.sent == len(beats)


def test_no_heartbeats_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    publisher, items, _ = run(FakeBroker(), 0, 0.4, monkeypatch)
    assert [t.ts_ms for t in items] == [N - 20, N - 10, N]
    assert publisher.heartbeats is None


def test_no_heartbeat_claims_the_time_the_broker_was_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker refuses the first batches for ~0.5 s (the source is not read
    meanwhile): the quiet time counts only from its return, so the first heartbeat is
    stamped about heartbeat_ms past the tick, not the whole stall past it."""
    broker = FakeBroker(refuse=3)
    stamps = (N - 20, N - 10, N, N + 10)  # one message each: the source waits on the broker
    _, items, _ = run(broker, 50, 0.8, monkeypatch, stamps, ticks_per_message=1)
    assert [t.ts_ms for t in items if not isinstance(t, Heartbeat)] == list(stamps)
    beats = [b for b in items if isinstance(b, Heartbeat)]
    assert len(beats) >= 2 and beats[0].ts_ms < N + 200 and beats[-1].ts_ms == N + 10 + 200
    # no tick comes after a heartbeat that makes it late (lateness 200)
    clock = 0
    for item in items:
        if isinstance(item, Heartbeat):
            clock = max(clock, item.ts_ms)
        else:
            assert item.ts_ms >= clock - 200, "a heartbeat claimed time the broker was away"
    assert orjson.loads(beats[0].encode())["control"] == "heartbeat"
