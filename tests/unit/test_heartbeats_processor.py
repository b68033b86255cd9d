"""A quiet symbol's held ticks are released by a heartbeat, not only by its next tick.

The contract (tickstream.contracts.control), the ordering stage's rule (ordering.py),
the processor core (dead letters, counts, snapshot) and the routing of a heartbeat to
its partition's core (partitions.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import orjson
import pytest

from processors.core import Incoming, ProcessorCore
from processors.kernels.analytics import AnalyticsConfig
from processors.kernels.ordering import Reorderer
from processors.kernels.records import RecordConfig
from processors.partitions import PartitionCores
from tickstream.contracts import (
    EndOfInput,
    Heartbeat,
    decode_control,
    decode_ticks_message,
    encode_end_of_input,
    encode_heartbeat,
    encode_ticks,
    is_heartbeat,
)
from tickstream.groups import GroupLayout
from tickstream.model import Tick
from tickstream.settings import Settings
from tickstream.topics import Topics

T0 = 1_769_385_600_000  # 2026-01-26T00:00:00Z
TOPICS = Topics("beats")


# -- the contract ---------------------------------------------------------------------------


def test_a_heartbeat_round_trips_and_is_no_end_of_input() -> None:
    beat = Heartbeat("XAU", T0)
    assert orjson.loads(beat.encode()) == {"control": "heartbeat", "symbol": "XAU", "ts_ms": T0}
    assert encode_heartbeat("XAU", T0) == beat.encode()
    assert decode_control(orjson.loads(beat.encode())) == beat
    assert is_heartbeat(orjson.loads(beat.encode()))
    decoded = decode_ticks_message(beat.encode())
    assert (decoded.ticks, decoded.bad, decoded.control) == ([], [], beat)
    assert isinstance(decode_control(orjson.loads(encode_end_of_input("r", 0, 1))), EndOfInput)


MALFORMED = [
    (b'{"control": "heartbeat", "symbol": "XAU"}', "ts_ms"),
    (b'{"control": "heartbeat", "ts_ms": 1769385600000}', "symbol"),
    (b'{"control": "heartbeat", "symbol": "XAU", "ts_ms": "1769385600000"}', "ts_ms"),
    (b'{"control": "heartbeat", "symbol": "XAU", "ts_ms": 1769385600000.5}', "ts_ms"),
    (b'{"control": "heartbeat", "symbol": "XAU", "ts_ms": true}', "ts_ms"),
    (b'{"control": "heartbeat", "symbol": "XAU", "ts_ms": -1}', "ts_ms"),
    (b'{"control": "heartbeat", "symbol": "XAU", "ts_ms": 99999999999999999}', "ts_ms"),
    (b'{"control": "heartbeat", "symbol": "XAU/XAG", "ts_ms": 1769385600000}', "symbol"),
    (b'{"control": "heartbeat", "symbol": null, "ts_ms": 1769385600000}', "symbol"),
    (b'{"control": "heartbeat", "symbol": "XAU", "ts_ms": 1769385600000, "price": 1}', "unknown"),
    (b'{"control": "heartbeats", "symbol": "XAU", "ts_ms": 1769385600000}', "unknown control"),
]


@pytest.mark.parametrize(("value", "why"), MALFORMED)
def test_a_malformed_heartbeat_is_refused_with_a_reason(value: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_control(orjson.loads(value))
    decoded = decode_ticks_message(value)
    assert decoded.control is None and decoded.ticks == []
    assert [b.reason for b in decoded.bad] == ["bad_shape"] and why in decoded.bad[0].detail


def test_the_core_dead_letters_malformed_heartbeats_and_goes_on() -> None:
    core = ProcessorCore(TOPICS, AnalyticsConfig(allowed_lateness_ms=1_000), 1)
    ticks = [Tick("XAU", T0 + i * 100, 5_000.0) for i in range(5)]
    batch = [Incoming(0, 0, encode_ticks(ticks))]
    batch += [Incoming(0, 1 + i, value) for i, (value, _) in enumerate(MALFORMED)]
    batch.append(Incoming(0, 99, encode_heartbeat("XAU", T0 + 1_400)))
    out = core.step(batch)
    letters = [orjson.loads(m.value) for m in out.messages if m.topic == TOPICS.dlq]
    assert [d["position"] for d in letters] == [
        f"partition 0 offset {1 + i}" for i in range(len(MALFORMED))
    ]
    assert {d["reason"] for d in letters} == {"bad_shape"}
    assert all(d["source"] == "processor" for d in letters)
    assert core.heartbeats == {"advanced": 1}
    assert core.analytics.ordering.watermarks() == {"XAU": T0 + 400}


# -- the ordering stage ---------------------------------------------------------------------


def test_a_heartbeat_releases_a_quiet_symbols_held_ticks() -> None:
    r = Reorderer(2_000)
    ticks = [Tick("XAU", T0 + i * 500, 5_000.0 + i) for i in range(6)]  # up to T0 + 2500
    assert r.push(ticks) == (ticks[:2], [])  # watermark T0 + 500
    assert r.heartbeat("XAU", T0 + 3_000) == "advanced"
    assert r.release() == ticks[2:3]  # watermark T0 + 1000
    assert r.heartbeat("XAU", T0 + 4_500) == "advanced"
    assert r.release() == ticks[3:]  # watermark T0 + 2500: all of them
    assert r.newest("XAU") == T0 + 4_500
    assert r.release() == []


def test_a_heartbeat_that_changes_nothing() -> None:
    r = Reorderer(2_000, max_jump_ms=60_000)
    assert r.heartbeat("XAU", T0) == "no_clock"  # never saw XAU
    r.push([Tick("XAU", T0 + 290_000, 5_000.0)])  # a first tick: no clock yet
    assert r.heartbeat("XAU", T0 + 290_500) == "no_clock"
    r.push([Tick("XAG", T0 - 100, 100.0), Tick("XAG", T0, 100.0)])  # a clock: T0
    assert r.heartbeat("XAG", T0) == "behind"
    assert r.heartbeat("XAG", T0 - 5) == "behind"
    assert r.heartbeat("XAG", T0 + 60_001) == "beyond_jump"
    assert r.watermarks()["XAG"] == T0 - 2_000
    assert r.heartbeat("XAG", T0 + 60_000) == "advanced"  # the jump limit itself is in reach
    unchecked = Reorderer(2_000, max_jump_ms=0)
    unchecked.push([Tick("XAG", T0, 100.0)])
    assert unchecked.heartbeat("XAG", T0 + 3_600_000) == "advanced"


def test_nothing_is_late_after_a_heartbeat_that_would_not_be_after_a_tick_there() -> None:
    base = [Tick("XAU", T0 + i * 100, 5_000.0) for i in range(10)]  # newest T0 + 900
    stragglers = [Tick("XAU", T0 + ts, 5_001.0) for ts in (900, 950, 1_000, 1_500, 2_999, 3_100)]
    with_beat = Reorderer(2_000)
    with_beat.push(base)
    with_beat.heartbeat("XAU", T0 + 3_000)
    with_tick = Reorderer(2_000)
    with_tick.push([*base, Tick("XAU", T0 + 3_000, 5_000.0)])
    for t in stragglers:
        assert with_beat.push([t])[1] == with_tick.push([t])[1]
    assert with_beat.watermarks() == with_tick.watermarks() == {"XAU": T0 + 1_100}


def test_a_tick_behind_a_heartbeat_moves_the_clock_no_backwards() -> None:
    r = Reorderer(1_000)
    r.push([Tick("XAU", T0 - 100, 5_000.0), Tick("XAU", T0, 5_000.0)])
    assert r.heartbeat("XAU", T0 + 5_000) == "advanced"
    assert len(r.release()) == 2
    assert r.push([Tick("XAU", T0 + 3_000, 5_000.0)]) == ([], [Tick("XAU", T0 + 3_000, 5_000.0)])
    kept = Tick("XAU", T0 + 4_500, 5_000.0)
    assert r.push([kept]) == ([], [])
    assert r.newest("XAU") == T0 + 5_000
    assert r.heartbeat("XAU", T0 + 5_500) == "advanced"
    assert r.release() == [kept]


def test_an_advancing_heartbeat_refutes_the_candidates() -> None:
    r = Reorderer(2_000, max_jump_ms=60_000, jump_confirm_ticks=1)
    r.push([Tick("XAU", T0 - 100, 5_000.0), Tick("XAU", T0, 5_000.0)])
    r.push([Tick("XAU", T0 + 290_000, 5_000.0)])  # a candidate
    r.heartbeat("XAU", T0 + 1_000)  # the feed is where the clock was
    r.push([Tick("XAU", T0 + 290_500, 5_000.0)])  # would have confirmed it
    assert r.newest("XAU") == T0 + 1_000  # only a candidate itself now


def test_the_clock_a_heartbeat_moved_survives_a_restore_and_a_flush() -> None:
    r = Reorderer(2_000)
    r.push([Tick("XAU", T0, 5_000.0), Tick("XAU", T0 + 1_000, 5_000.0)])
    r.heartbeat("XAU", T0 + 2_500)
    again = Reorderer(2_000)
    again.restore(orjson.loads(orjson.dumps(r.snapshot())))
    assert again.watermarks() == {"XAU": T0 + 500} and again.newest("XAU") == T0 + 2_500
    again.flush()
    assert again.newest("XAU") == T0 + 2_500  # a flush never moves a clock back


# -- the processor core ----------------------------------------------------------------------


def level_config(lateness: int) -> AnalyticsConfig:
    return AnalyticsConfig(
        allowed_lateness_ms=lateness,
        records=RecordConfig(level_steps={"XAU": (100.0,)}),
    )


def events(out_messages: list, status: str) -> list[dict]:
    docs = [orjson.loads(m.value) for m in out_messages if m.topic == TOPICS.signals]
    return [d for d in docs if isinstance(d, dict) and d.get("status") == status]


def test_provisional_signals_of_a_quiet_market_are_confirmed_by_heartbeats() -> None:
    """A level crossed, then silence: the heartbeats alone confirm it, and what they
    confirm is what a later tick would have confirmed."""
    ticks = [Tick("XAU", T0 + i * 200, p) for i, p in enumerate([4_990.0, 4_995.0, 5_010.0])]
    core = ProcessorCore(TOPICS, level_config(2_000), 1, clock_ms=lambda: T0)
    first = core.step([Incoming(0, 0, encode_ticks(ticks))])
    announced = {e["id"] for e in events(first.messages, "provisional")}
    assert announced, "a crossing of 5000 is announced on arrival"
    assert events(first.messages, "confirmed") == []
    beats = [Incoming(0, 1 + i, encode_heartbeat("XAU", T0 + 400 + k)) for i, k in
             enumerate(range(250, 2_501, 250))]  # fmt: skip
    confirmed: list[dict] = []
    for beat in beats:
        confirmed += events(core.step([beat]).messages, "confirmed")
    assert {e["id"] for e in confirmed} >= announced
    assert events(core.step([]).messages, "retracted") == []
    # the same as a later tick would have confirmed
    other = ProcessorCore(TOPICS, level_config(2_000), 1, clock_ms=lambda: T0)
    other.step([Incoming(0, 0, encode_ticks(ticks))])
    later = other.step([Incoming(0, 1, encode_ticks([Tick("XAU", T0 + 2_900, 5_011.0)]))])
    assert {e["id"] for e in events(later.messages, "confirmed")} == {e["id"] for e in confirmed}
    assert core.heartbeats["advanced"] == len(beats)


def test_a_heartbeat_reaches_its_partitions_core() -> None:
    settings = Settings(namespace="beats", metrics_port=0, partitions=4)
    groups = GroupLayout.from_settings(settings)
    p = groups.partition_of("XAU", 4)

    async def load(partitions: Collection[int]) -> dict[int, bytes]:
        return {}

    cores = PartitionCores(TOPICS, AnalyticsConfig(allowed_lateness_ms=1_000), 4, groups, load)
    ticks = [Tick("XAU", T0 + i * 100, 5_000.0) for i in range(5)]
    asyncio.run(cores.step([Incoming(p, 0, encode_ticks(ticks))]))
    asyncio.run(cores.step([Incoming(p, 1, encode_heartbeat("XAU", T0 + 1_400))]))
    assert cores.cores[p].heartbeats == {"advanced": 1}
    assert cores.cores[p].analytics.ordering.watermarks() == {"XAU": T0 + 400}
    assert set(cores.cores) == {p}
