"""The processor's batch step without Faust: restore-and-skip, end markers, bad messages."""

from __future__ import annotations

import zlib

import orjson

from processors.core import PIECES, Incoming, ProcessorCore, decode_state
from processors.kernels.analytics import AnalyticsConfig
from tickstream import contracts
from tickstream.model import Tick
from tickstream.topics import Topics

T0 = 1_769_385_600_000
TOPICS = Topics("core")


def messages(partition: int, n: int, symbol: str = "XAU") -> list[Incoming]:
    """n messages of 50 ticks each, 1 s apart, prices creeping up."""
    out = []
    for offset in range(n):
        ticks = [
            Tick(symbol, T0 + (offset * 50 + i) * 1000, 5000.0 + offset + i / 100)
            for i in range(50)
        ]
        out.append(Incoming(partition, offset, contracts.encode_ticks(ticks)))
    return out


def eof(run: str, partition: int, partitions: int, offset: int) -> Incoming:
    return Incoming(partition, offset, contracts.encode_end_of_input(run, partition, partitions))


def rows(out) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [(m.topic, -1 if m.partition is None else m.partition, m.value) for m in out.messages]


def test_restored_core_skips_what_its_state_reflects() -> None:
    batch = messages(0, 6)
    whole = ProcessorCore(TOPICS, AnalyticsConfig(), 2, clock_ms=lambda: T0)
    expected = rows(whole.step(batch)) + rows(whole.step([eof("r", 0, 1, 6)]))

    first = ProcessorCore(TOPICS, AnalyticsConfig(), 2, clock_ms=lambda: T0)
    got = rows(first.step(batch[:3]))
    second = ProcessorCore(TOPICS, AnalyticsConfig(), 2, clock_ms=lambda: T0)
    second.restore(first.snapshot())
    # the broker redelivers from an older committed offset: 1 and 2 are already in the state
    got += rows(second.step(batch[1:])) + rows(second.step([eof("r", 0, 1, 6)]))
    # the same rows, each once (their order across kernels follows the batch cuts)
    assert sorted(got) == sorted(expected)
    assert len(set(got)) == len(got)
    assert second.applied == {0: 6}


def test_flush_waits_for_every_partitions_marker() -> None:
    core = ProcessorCore(TOPICS, AnalyticsConfig(), 2, clock_ms=lambda: T0)
    core.step(messages(0, 2, "XAU") + messages(1, 2, "XAG"))
    out = core.step([eof("run1", 0, 2, 2)])
    assert out.messages == []  # partition 1 has not finished yet
    out = core.step([eof("run1", 1, 2, 2)])
    docs = [orjson.loads(m.value) for m in out.messages]
    bars = [d for d in docs if d.get("kind") == "bar_1m"]
    assert {b["symbol"] for b in bars} == {"XAU", "XAG"}  # open bars flushed as final
    markers = [
        (m.topic, m.partition)
        for m, d in zip(out.messages, docs, strict=True)
        if contracts.is_end_of_input(d)
    ]
    assert sorted(markers) == sorted(
        (topic, p) for topic in TOPICS.processor_outputs() for p in range(2)
    )
    assert docs[-1]["control"] == "eof"  # markers come after every row they cover


def test_undecodable_message_is_counted_and_skipped() -> None:
    core = ProcessorCore(TOPICS, AnalyticsConfig(), 1, clock_ms=lambda: T0)
    good = messages(0, 2)
    out = core.step(
        [
            good[0],
            Incoming(0, 1, b"{not json"),
            Incoming(0, 2, b'"a string"'),
            Incoming(0, 3, good[1].value),
        ]
    )
    assert core.applied == {0: 3}
    assert out.ticks == 100
    letters = [orjson.loads(m.value) for m in out.messages if m.topic == TOPICS.dlq]
    assert [(d["position"], d["reason"]) for d in letters] == [
        ("partition 0 offset 1", "undecodable"),
        ("partition 0 offset 2", "bad_shape"),
    ]


def test_ticks_of_the_wrong_types_are_dead_lettered_and_never_reach_the_state() -> None:
    """Other producers may write the ticks topic: a null price or a text time must neither
    crash a batch nor sit in the ordering stage's state (where it crashed every restart)."""
    core = ProcessorCore(TOPICS, AnalyticsConfig(), 1, clock_ms=lambda: T0)
    hostile = [
        b'[["XAU", 1769385600000, null]]',
        b'[["XAU", "1769385600000", 5000.0]]',
        b'[["XAU", 1769385600000, 5000.0, null, null, null, null, 18446744073709551616]]',
        b'[["X\\u0007AU", 1769385600000, 5000.0]]',
        b'{"symbol": "XAU", "ts_ms": 1769385600000, "price": "5000"}',
    ]
    good = messages(0, 1)[0].value
    batch = [Incoming(0, i, v) for i, v in enumerate([good, *hostile])]
    out = core.step(batch)
    assert out.ticks == 50
    letters = [orjson.loads(m.value) for m in out.messages if m.topic == TOPICS.dlq]
    assert [d["position"] for d in letters] == [f"partition 0 offset {i}" for i in range(1, 6)]
    assert {d["reason"] for d in letters} == {"bad_value"}
    # the state holds only good ticks: it survives a snapshot, a restore and more batches
    again = ProcessorCore(TOPICS, AnalyticsConfig(), 1, clock_ms=lambda: T0)
    again.restore(core.snapshot())
    again.step([Incoming(0, 6, messages(0, 2)[1].value), eof("r", 0, 1, 7)])


def test_a_single_json_tick_per_message_is_processed() -> None:
    """The usual shape of other producers: one JSON object per message."""
    core = ProcessorCore(TOPICS, AnalyticsConfig(), 1, clock_ms=lambda: T0)
    values = [
        orjson.dumps({"symbol": "XAG", "ts": T0 + i * 20_000, "price": 100.0 + i}) for i in range(7)
    ]
    sent = core.step([Incoming(0, i, v) for i, v in enumerate(values)]).messages
    sent += core.step([eof("r", 0, 1, 7)]).messages
    docs = [orjson.loads(m.value) for m in sent if m.topic == TOPICS.aggregates]
    bars = [(d["ts_ms"], d["ticks"]) for d in docs if d.get("kind") == "bar_1m"]
    assert bars == [(T0, 3), (T0 + 60_000, 3), (T0 + 120_000, 1)]


def test_a_snapshot_is_deflated_and_one_written_before_still_restores() -> None:
    config = AnalyticsConfig(allowed_lateness_ms=3_600_000)
    core = ProcessorCore(TOPICS, config, 2, clock_ms=lambda: T0)
    core.step(messages(0, 8))  # 400 ticks, 1 s apart, an hour of lateness: all still held
    blob = core.snapshot()
    state = decode_state(blob)
    plain = orjson.dumps(state)
    assert blob.startswith(PIECES) and len(blob) * 5 < len(plain)  # held ticks deflate well
    assert sum(len(c["held"]) for c in state["analytics"]["ordering"]["clocks"].values()) == 400
    # as written before: one zlib stream of the whole JSON, and plain JSON before that
    for written in (blob, zlib.compress(plain, 1), plain):
        again = ProcessorCore(TOPICS, config, 2)
        again.restore(written)
        assert decode_state(again.snapshot()) == state


def test_each_snapshot_is_exact_though_held_ticks_are_reused() -> None:
    """Ticks still held from one snapshot to the next are taken from the last one's
    chunks; released ones leave, new ones join, and a restored core starts afresh."""
    config = AnalyticsConfig(allowed_lateness_ms=100_000)  # ~100 ticks held, 50 move a step
    core = ProcessorCore(TOPICS, config, 2, clock_ms=lambda: T0)
    for message in messages(0, 8):
        core.step([message])
        plain = orjson.loads(orjson.dumps(core.analytics.snapshot()))
        assert decode_state(core.snapshot())["analytics"] == plain
    again = ProcessorCore(TOPICS, config, 2, clock_ms=lambda: T0)
    again.restore(core.snapshot())
    again.step(messages(0, 10)[8:])
    assert decode_state(again.snapshot())["analytics"] == orjson.loads(
        orjson.dumps(again.analytics.snapshot())
    )
