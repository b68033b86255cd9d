"""One core per ticks partition: the same rows as one core of the whole topic, however the
partitions move between workers; state of another group layout refused."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from typing import Any

import orjson
import pytest
from group_stream import SETTINGS, layout, ticks

import processors.partitions
import processors.state_store
from processors.checkpoints import Checkpoints
from processors.config import analytics_config
from processors.core import Incoming, LayoutChanged, Outgoing, ProcessorCore
from processors.outbox import Outbox
from processors.partitions import PartitionCores, check_state
from processors.state_store import STATE_KEY, LegacyState, load_snapshots, state_key
from tickstream import contracts
from tickstream.groups import GroupLayout
from tickstream.model import Tick
from tickstream.settings import Settings
from tickstream.topics import Topics

TOPICS = Topics("cores")
N = 4
NOW = 1_769_400_000_000
CONFIG = analytics_config(Settings(**SETTINGS, metrics_port=0))


def partition_streams(minutes: int = 40) -> dict[int, list[Incoming]]:
    """The group stream as the publisher lays it out: each symbol on its group's partition,
    messages of up to 30 ticks in arrival order, the run's end marker last on each."""
    groups = layout()
    pending: dict[int, list[Tick]] = {p: [] for p in range(N)}
    out: dict[int, list[Incoming]] = {p: [] for p in range(N)}

    def ship(p: int) -> None:
        if pending[p]:
            out[p].append(Incoming(p, len(out[p]), contracts.encode_ticks(pending[p])))
            pending[p] = []

    for ts, symbol, price in ticks(minutes=minutes):
        p = groups.partition_of(symbol, N)
        pending[p].append(Tick(symbol, ts, price))
        if len(pending[p]) == 30:
            ship(p)
    for p in range(N):
        ship(p)
        out[p].append(Incoming(p, len(out[p]), contracts.encode_end_of_input("run", p, N)))
    return out


def batches(streams: dict[int, list[Incoming]], seed: int) -> list[list[Incoming]]:
    """The partitions interleaved at random (each in its order), cut into random batches."""
    rng = random.Random(seed)
    queues = {p: list(msgs) for p, msgs in streams.items()}
    merged: list[Incoming] = []
    while any(queues.values()):
        p = rng.choice([p for p, q in queues.items() if q])
        merged.append(queues[p].pop(0))
    cut: list[list[Incoming]] = []
    while merged:
        size = rng.randrange(1, 40)
        cut.append(merged[:size])
        merged = merged[size:]
    return cut


def no_store() -> Any:
    async def load(partitions: Collection[int]) -> dict[int, bytes]:
        return {}

    return load


def store_of(blobs: dict[int, bytes]) -> Any:
    async def load(partitions: Collection[int]) -> dict[int, bytes]:
        return {p: blobs[p] for p in partitions if p in blobs}

    return load


def cores(load: Any, groups: GroupLayout | None = None) -> PartitionCores:
    return PartitionCores(TOPICS, CONFIG, N, groups or layout(), load, clock_ms=lambda: NOW)


def rows(messages: list[Outgoing]) -> list[tuple[str, bytes, bytes]]:
    return [
        (m.topic, m.key, m.value)
        for m in messages
        if not contracts.is_end_of_input(orjson.loads(m.value))
    ]


def whole_run(streams: dict[int, list[Incoming]]) -> list[Outgoing]:
    core = ProcessorCore(TOPICS, CONFIG, N, clock_ms=lambda: NOW)
    out: list[Outgoing] = []
    for batch in batches(streams, seed=1):
        out += core.step(batch).messages
    return out


@pytest.fixture(scope="module")
def streams() -> dict[int, list[Incoming]]:
    return partition_streams()


@pytest.fixture(scope="module")
def whole(streams: dict[int, list[Incoming]]) -> list[Outgoing]:
    return whole_run(streams)


def test_a_core_per_partition_computes_what_one_core_does(
    streams: dict[int, list[Incoming]], whole: list[Outgoing]
) -> None:
    split = cores(no_store())
    out: list[Outgoing] = []
    for batch in batches(streams, seed=2):  # other cuts, another interleaving
        out += asyncio.run(split.step(batch)).messages
    assert sorted(rows(out)) == sorted(rows(whole))
    pairs = {
        doc["pair"]
        for _, _, v in rows(out)
        if isinstance(doc := orjson.loads(v), dict) and doc.get("kind") == "divergence_window"
    }
    assert pairs == {"XAU/XAG", "XPT/XPD"}, "each pair met: its group shared a core"
    # everything a core derives goes to its own partition of every output topic, the
    # end marker last: so the marker on output partition p covers ticks partition p
    groups = layout()
    for m in out:
        doc = orjson.loads(m.value)
        if isinstance(doc, list):  # late ticks
            symbol = doc[0][0]
        elif contracts.is_end_of_input(doc):
            continue
        else:  # a symbol, a sync group "XAU+XAG" or a pair "XAU/XAG": a member's group
            symbol = (doc.get("symbol") or doc["pair"]).replace("/", "+").split("+")[0]
        assert m.partition == groups.partition_of(symbol, N), (m.topic, doc)
    for topic in TOPICS.processor_outputs():
        for p in range(N):
            on_p = [m for m in out if m.topic == topic and m.partition == p]
            markers = [m for m in on_p if contracts.is_end_of_input(orjson.loads(m.value))]
            assert len(markers) == 1 and on_p[-1] is markers[0], (topic, p)


def test_partitions_moving_between_workers_change_no_row(
    streams: dict[int, list[Incoming]], whole: list[Outgoing]
) -> None:
    """Worker A snapshots, processes on (work lost with it), then loses partitions 2 and 3;
    worker B restores their snapshots and is redelivered them from offset 0."""
    saved: dict[int, bytes] = {}
    a = cores(no_store())
    out: list[Outgoing] = []
    cut = batches(streams, seed=3)
    third = len(cut) // 3
    for batch in cut[:third]:
        out += asyncio.run(a.step(batch)).messages
    saved.update({int(m.key.rsplit(b"/", 1)[1]): m.value for m in a.snapshots()})
    for batch in cut[third : 2 * third]:  # processed, never snapshotted: redone by B
        out += asyncio.run(a.step(batch)).messages
    assert a.drop({2, 3}) == [2, 3]
    b = cores(store_of(saved))
    moved = [m for p in (2, 3) for m in streams[p]]  # from an older committed offset
    for i in range(0, len(moved), 25):
        out += asyncio.run(b.step(moved[i : i + 25])).messages
    assert sorted(b.cores) == [2, 3]
    for batch in cut[2 * third :]:
        kept = [m for m in batch if m.partition in (0, 1)]
        out += asyncio.run(a.step(kept)).messages
    assert set(rows(out)) == set(rows(whole))
    markers = {
        (m.topic, m.partition) for m in out if contracts.is_end_of_input(orjson.loads(m.value))
    }
    assert markers == {(t, p) for t in TOPICS.processor_outputs() for p in range(N)}


def test_state_of_another_group_layout_is_refused(streams: dict[int, list[Incoming]]) -> None:
    before = cores(no_store())
    asyncio.run(before.step(streams[1][:3]))
    blobs = {1: before.snapshots()[0].value}
    other = GroupLayout.of([("XAU", "XAG"), ("XPT", "BTC")])
    after = cores(store_of(blobs), other)
    with pytest.raises(LayoutChanged) as refused:
        asyncio.run(after.step(streams[1][3:5]))
    message = str(refused.value)
    assert message.startswith("--divergence-pairs / TICKSTREAM_DIVERGENCE_PAIRS: ")
    assert "BTC+XPT" in message and "XPD+XPT" in message and "new --namespace" in message


def test_start_up_refuses_state_of_another_layout_or_an_older_processor(
    streams: dict[int, list[Incoming]], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = cores(no_store())
    asyncio.run(old.step(streams[3][:2]))
    blob = old.snapshots()[0].value

    async def snapshots(bootstrap: str, topic: str) -> dict[int, bytes]:
        return {3: blob}

    monkeypatch.setattr(processors.partitions, "load_snapshots", snapshots)
    same = Settings(**SETTINGS, namespace="cores", metrics_port=0)
    assert asyncio.run(check_state(same)) == 1
    other = Settings(**{**SETTINGS, "divergence_pairs": "XAU/XAG"}, metrics_port=0)
    with pytest.raises(LayoutChanged, match="set both settings back, or start a new"):
        asyncio.run(check_state(other))

    async def legacy(bootstrap: str, topic: str) -> dict[bytes, bytes]:
        return {STATE_KEY: b"{}", state_key(0): blob}

    monkeypatch.setattr(processors.state_store, "_read_state", legacy)
    with pytest.raises(LegacyState, match="start a new --namespace and replay"):
        asyncio.run(load_snapshots("127.0.0.1:1", "cores.processor.state"))


def test_a_lost_partition_is_snapshotted_acked_then_dropped(
    streams: dict[int, list[Incoming]],
) -> None:
    sent: list[Outgoing] = []
    acked: list[object] = []

    class Stream:
        async def ack(self, event: object) -> bool:
            acked.append(event)
            return True

    async def scenario() -> None:
        async def send(m: Outgoing) -> asyncio.Future[Any]:
            sent.append(m)
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        split = cores(no_store())
        outbox = Outbox(send)
        checkpoints = Checkpoints(split, outbox, Outbox(send), Stream(), 3600.0)  # type: ignore[arg-type]
        batch = [streams[p][0] for p in range(N)]
        async with checkpoints.lock:
            await outbox.put((await split.step(batch)).messages)
            await checkpoints.processed(batch)  # type: ignore[arg-type]
        assert acked == []  # no snapshot due yet
        assert await checkpoints.release({2, 3}) == [2, 3]
        assert sorted(split.cores) == [0, 1]
        states = [m.key for m in sent if m.topic == TOPICS.processor_state]
        assert states == [state_key(p) for p in range(N)]  # the lost ones' last state too
        assert acked == batch
        sent.clear()
        async with checkpoints.lock:
            more = [streams[p][1] for p in (0, 1)]
            await outbox.put((await split.step(more)).messages)
            await checkpoints.processed(more)  # type: ignore[arg-type]
            await checkpoints.save()
        states = [m.key for m in sent if m.topic == TOPICS.processor_state]
        assert states == [state_key(0), state_key(1)]  # never a partition it lost

    asyncio.run(scenario())
