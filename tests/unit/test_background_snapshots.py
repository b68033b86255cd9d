"""Snapshots taken on the batch path, encoded and written behind it.

A capture must be the state when it was taken, whatever the core does before it is
encoded; the outbox must confirm a snapshot's outputs without waiting for the sends put
since; and the checkpoints must let batches go on while a snapshot is on its way, ack
nothing before it is confirmed, and never write it ahead of the outputs it reflects.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Generator
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from group_stream import SETTINGS, layout, ticks

from processors.checkpoints import Checkpoints, between_batches
from processors.config import analytics_config
from processors.core import Incoming, Outgoing, ProcessorCore, decode_state, finish
from processors.outbox import Outbox
from processors.partitions import PartitionCores
from tickstream import contracts
from tickstream.model import Tick
from tickstream.settings import Settings
from tickstream.topics import Topics

TOPICS = Topics("captures")
N = 4
NOW = 1_769_400_000_000
CONFIG = analytics_config(Settings(**SETTINGS, metrics_port=0))


class AckedStream:
    """The agent's noack() stream, as the checkpoints use it: it only records the acks."""

    def __init__(self) -> None:
        self.acked: list[Incoming] = []

    async def ack(self, event: Incoming) -> bool:
        self.acked.append(event)
        return True


async def delivered(msg: Outgoing) -> asyncio.Future[Any]:
    """The broker's confirmation of a send, at once."""
    delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    delivery.set_result(None)
    return delivery


async def no_snapshots(partitions: Any) -> dict[int, bytes]:
    return {}


def stream(seed: int, minutes: int = 5, symbols: set[str] | None = None) -> list[Incoming]:
    """The group market (out of order, some late ticks; each symbol about every 100 ms, so
    20 a symbol are held at a time), some ticks sent twice, as messages of up to 20 ticks
    on one partition."""
    rng = random.Random(seed)
    out: list[Incoming] = []
    pending: list[Tick] = []
    for ts, symbol, price in ticks(seed, minutes, spacing_ms=100):
        if symbols is not None and symbol not in symbols:
            continue
        pending.append(Tick(symbol, ts, price))
        if rng.random() < 0.02:
            pending.append(Tick(symbol, ts, price))  # a duplicate
        if len(pending) >= rng.randrange(1, 21):
            out.append(Incoming(0, len(out), contracts.encode_ticks(pending)))
            pending = []
    return out


@pytest.mark.parametrize("seed", range(4))
def test_a_capture_is_the_state_when_taken(seed: int) -> None:
    messages = stream(seed)
    rng = random.Random(seed)
    core = ProcessorCore(TOPICS, CONFIG, N, clock_ms=lambda: NOW)
    captures: list[tuple[bytes, Any]] = []
    i = 0
    while i < len(messages):
        size = rng.randrange(1, 60)
        core.step(messages[i : i + size])
        i += size
        if rng.random() < 0.2:
            captures.append((core.snapshot(), core.capture()))
    assert len(captures) > 3
    held = sum(
        len(clock["held"])
        for blob, _ in captures
        for clock in decode_state(blob)["analytics"]["ordering"]["clocks"].values()
    )
    assert held > 100  # the captures did hold ticks back (the part encoded later)
    for then, encoding in captures:  # encoded only now, after every later batch
        assert finish(encoding) == then


def held_deliveries(send_log: list[Outgoing], hold_topic: str) -> tuple[Any, list[Any]]:
    """A send whose deliveries for ``hold_topic`` wait for the test; others resolve at once."""
    held: list[asyncio.Future[Any]] = []

    async def send(msg: Outgoing) -> asyncio.Future[Any]:
        send_log.append(msg)
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if msg.topic == hold_topic:
            held.append(delivery)
        else:
            asyncio.get_running_loop().call_soon(delivery.set_result, None)
        return delivery

    return send, held


def test_a_mark_settles_what_was_sent_before_it_only() -> None:
    sent: list[Outgoing] = []
    send, held = held_deliveries(sent, "slow")

    async def main() -> None:
        outbox = Outbox(send)
        await outbox.put([Outgoing("fast", b"k", b"a"), Outgoing("fast", b"k", b"b")])
        mark = outbox.mark()
        await outbox.put([Outgoing("slow", b"k", b"c")])  # never confirmed in this test
        await asyncio.wait_for(outbox.delivered(mark), 5)
        await asyncio.wait_for(outbox.settle(mark), 5)
        assert len(outbox) == 1 and outbox.mark() == 3
        assert not held[0].done()

    asyncio.run(main())


def test_a_failure_before_a_mark_sends_every_pending_message_again_in_order() -> None:
    sent: list[bytes] = []

    async def send(msg: Outgoing) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if msg.value == b"a" and b"a" not in sent:
            delivery.set_exception(KafkaTimeoutError())  # a passing failure
        else:
            delivery.set_result(None)
        sent.append(msg.value)
        return delivery

    async def no_sleep(_: float) -> None:
        return None

    async def main() -> None:
        outbox = Outbox(send, sleep=no_sleep)
        await outbox.put([Outgoing("t", b"k", b"a")])
        mark = outbox.mark()
        await outbox.put([Outgoing("t", b"k", b"b")])
        await outbox.settle(mark)
        assert len(outbox) == 0 and outbox.mark() == 2  # the later one went again too

    asyncio.run(main())
    assert sent == [b"a", b"b", b"a", b"b"]  # the last copy of each is still the newest


def test_batches_go_on_while_a_snapshot_is_on_its_way() -> None:
    messages = stream(seed=7, symbols={"SPX"})  # partition 0's only group
    first, second, third = messages[:40], messages[40:80], messages[80:120]
    sent: list[Outgoing] = []
    acked: list[Incoming] = []
    send, held = held_deliveries(sent, TOPICS.processor_state)

    class Stream:
        async def ack(self, event: Incoming) -> bool:
            acked.append(event)
            return True

    async def batch(checkpoints: Checkpoints, split: PartitionCores, outbox: Outbox,
                    events: list[Incoming]) -> None:  # fmt: skip
        async with checkpoints.lock:
            await outbox.put((await split.step(events)).messages)
            await asyncio.wait_for(checkpoints.processed(events), 5)  # type: ignore[arg-type]

    async def main() -> None:
        async def load(partitions: Any) -> dict[int, bytes]:
            return {}

        split = PartitionCores(TOPICS, CONFIG, N, layout(), load, clock_ms=lambda: NOW)
        outbox = Outbox(send)
        checkpoints = Checkpoints(split, outbox, Outbox(send), Stream(), 0.0)  # type: ignore[arg-type]
        await batch(checkpoints, split, outbox, first)  # a snapshot of `first` starts
        outputs_of_first = len(sent)
        for _ in range(100):  # its encoding, between batches, and its outputs' confirmations
            await asyncio.sleep(0.01)
            if checkpoints._saving is not None and checkpoints._saving.preparing.done():
                break
        await batch(checkpoints, split, outbox, second)  # puts the snapshot, does not wait
        (snapshot,) = [m for m in sent if m.topic == TOPICS.processor_state]
        assert sent.index(snapshot) >= outputs_of_first  # behind the outputs it reflects
        assert decode_state(snapshot.value)["applied"] == {"0": first[-1].offset}
        assert acked == []  # nothing acked before the broker confirms the snapshot
        await batch(checkpoints, split, outbox, third)  # still unconfirmed: goes on
        assert acked == []
        held[0].set_result(None)
        await asyncio.sleep(0)
        await batch(checkpoints, split, outbox, [])
        assert acked == first  # confirmed: the events it reflects, and only those
        async with checkpoints.lock:
            save = asyncio.create_task(checkpoints.save())
            while not save.done():
                await asyncio.sleep(0.01)
                for delivery in held:
                    if not delivery.done():
                        delivery.set_result(None)
            await save
        assert acked == first + second + third
        last = [m for m in sent if m.topic == TOPICS.processor_state][-1]
        assert decode_state(last.value)["applied"] == {"0": third[-1].offset}

    asyncio.run(main())


def test_a_snapshot_waits_for_its_failed_outputs_to_be_sent_again() -> None:
    messages = stream(seed=3, symbols={"SPX"})[:30]
    sent: list[Outgoing] = []
    failures: list[Outgoing] = []

    async def send(msg: Outgoing) -> asyncio.Future[Any]:
        sent.append(msg)
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if msg.topic != TOPICS.processor_state and not failures:
            failures.append(msg)
            delivery.set_exception(KafkaTimeoutError())  # the first output, once
        else:
            delivery.set_result(None)
        return delivery

    async def no_sleep(_: float) -> None:
        return None

    acks = AckedStream()

    async def main() -> None:
        split = PartitionCores(TOPICS, CONFIG, N, layout(), no_snapshots, clock_ms=lambda: NOW)
        outbox = Outbox(send, sleep=no_sleep)
        checkpoints = Checkpoints(split, outbox, Outbox(send), acks, 0.0)  # type: ignore[arg-type]
        async with checkpoints.lock:
            await outbox.put((await split.step(messages)).messages)
            await checkpoints.processed(messages)  # type: ignore[arg-type]
            await asyncio.wait_for(checkpoints.save(), 5)

    asyncio.run(main())
    outputs = [m for m in sent if m.topic != TOPICS.processor_state]
    assert failures and outputs.count(failures[0]) == 2  # sent again
    (snapshot,) = [m for m in sent if m.topic == TOPICS.processor_state]
    assert sent.index(snapshot) == len(sent) - 1  # after every output, the repeats too
    assert acks.acked == messages


def test_a_stop_or_rebalance_waiting_for_acks_gets_its_snapshot_at_once() -> None:
    """With a snapshot hours off, events processed while Faust waits for the events taken
    to be acked are snapshotted and acked as they are processed, not at the interval."""
    messages = stream(seed=5, symbols={"SPX"})[:20]
    stream_ = AckedStream()
    waiting = [False]

    async def main() -> None:
        split = PartitionCores(TOPICS, CONFIG, N, layout(), no_snapshots, clock_ms=lambda: NOW)
        outbox = Outbox(delivered)
        checkpoints = Checkpoints(
            split,
            outbox,
            Outbox(delivered),
            stream_,  # type: ignore[arg-type]
            3600.0,
            hurry=lambda: waiting[0],
        )

        async def batch(events: list[Incoming]) -> None:
            async with checkpoints.lock:
                await outbox.put((await split.step(events)).messages)
                await checkpoints.processed(events)  # type: ignore[arg-type]

        await batch(messages[:10])
        for _ in range(20):
            await asyncio.sleep(0.01)
            await batch([])
        assert stream_.acked == []  # not due for an hour
        waiting[0] = True  # Faust now waits for these to be acked
        await batch(messages[10:])
        async with asyncio.timeout(5):
            while stream_.acked != messages:
                await asyncio.sleep(0.01)
                await batch([])  # the agent's next (empty) steps move the snapshot on

    asyncio.run(main())


def test_the_app_says_when_faust_waits_for_acks() -> None:
    from processors.fetching import LiveApp

    seen: list[bool] = []
    app = LiveApp("acks-test", broker="kafka://127.0.0.1:1", web_enabled=False)

    class Consumer:
        async def wait_empty(self) -> None:
            seen.append(app.waiting_for_acks())

    assert not app.waiting_for_acks()
    asyncio.run(app._consumer_wait_empty(Consumer(), app.log))  # type: ignore[arg-type]
    assert seen == [True]
    assert not app.waiting_for_acks()


def test_the_loop_runs_other_work_between_every_two_steps_of_an_encoding() -> None:
    """A snapshot's encoding runs on the processor's event loop (no thread to fight for
    the GIL): it must give way after every step, so a batch, a fetch or a send waits for
    one step at most, never for the whole encoding."""
    done_steps = [0]

    def encoding() -> Generator[None, None, str]:
        for _ in range(50):
            done_steps[0] += 1
            yield
        return "encoded"

    async def main() -> tuple[str, list[int]]:
        seen: list[int] = []  # steps done at each turn of the other task

        async def other_work() -> None:
            while True:
                seen.append(done_steps[0])
                await asyncio.sleep(0)

        other = asyncio.create_task(other_work())
        await asyncio.sleep(0)  # it has had its first turn
        result = await between_batches(encoding())
        other.cancel()
        return result, seen

    result, seen = asyncio.run(main())
    assert result == "encoded" and done_steps[0] == 50
    assert seen[0] == 0 and seen[-1] >= 49  # the other work ran all along
    assert all(b - a <= 1 for a, b in zip(seen, seen[1:], strict=False))  # one step per turn


def test_an_encoding_rests_after_every_step() -> None:
    """Its CPU spread out, not one burst that the pipeline's other processes wait behind."""
    pause_s = 0.003
    stepped_at: list[float] = []

    def encoding() -> Generator[None, None, str]:
        for _ in range(5):
            stepped_at.append(asyncio.get_running_loop().time())
            yield
        return "encoded"

    assert asyncio.run(between_batches(encoding(), lambda: pause_s)) == "encoded"
    gaps = [b - a for a, b in zip(stepped_at, stepped_at[1:], strict=False)]
    assert len(gaps) == 4 and min(gaps) >= pause_s * 0.999


class StepCores:
    """Cores whose every capture is an encoding of ``steps`` steps (and no snapshot)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def capture(self) -> Generator[None, None, list[Outgoing]]:
        for _ in range(self.steps):
            yield
        return []


def test_the_rests_of_an_encoding_do_not_space_the_snapshots_out() -> None:
    """The next snapshot is due ten times the last one's work after it, not ten times its
    rests (5 x 50 ms here, which would put it 2.5 s off)."""

    async def main() -> bool:
        checkpoints = Checkpoints(
            StepCores(steps=5), Outbox(delivered), Outbox(delivered), AckedStream(), 0.0,  # type: ignore[arg-type]
            step_pause_s=0.05,
        )  # fmt: skip
        async with checkpoints.lock:
            await checkpoints.processed([Incoming(0, 0, b"[]")])  # type: ignore[list-item]
            await asyncio.wait_for(checkpoints.save(), 5)
        await asyncio.sleep(1.0)
        return checkpoints.due()

    assert asyncio.run(main())


def test_a_snapshot_is_encoded_without_rests_while_a_stop_or_rebalance_waits() -> None:
    """Faust waits for the acks: a snapshot of 50 steps must not take 50 rests of 1 s."""

    async def main() -> None:
        checkpoints = Checkpoints(
            StepCores(steps=50), Outbox(delivered), Outbox(delivered), AckedStream(), 0.0,  # type: ignore[arg-type]
            hurry=lambda: True, step_pause_s=1.0,
        )  # fmt: skip
        async with checkpoints.lock:
            await checkpoints.processed([Incoming(0, 0, b"[]")])  # type: ignore[list-item]
            await asyncio.wait_for(checkpoints.save(), 5)

    asyncio.run(main())
