"""Every source through validation and the publisher into the real broker.

What lands in `<ns>.ticks` and `<ns>.ticks.dlq` is read back with a plain
aiokafka consumer and compared with what the test fed in: each input ends in
exactly one of the two topics, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from producers.publisher import Publisher
from producers.records import RawTick
from producers.replay import ReplayConfig, replay
from producers.simulator import SimulatorConfig, simulate
from producers.validation import ValidationConfig, Validator
from producers.websocket_source import WebSocketSourceConfig, websocket_source
from tickstream import contracts
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka
T0 = 1_769_385_600_000


async def read_back(settings: Settings, run_id: str) -> tuple[list[list], list[dict]]:
    """Everything on ticks up to this run's end markers (one per partition), and on dlq.

    The publisher marks the end on the ticks topic only, after its dead letters were
    acknowledged, so once every marker is read the dead-letter topic is read to its end.
    """
    topics = Topics(settings.namespace)
    consumer = AIOKafkaConsumer(
        topics.ticks,
        topics.dlq,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    ticks: list[list] = []
    dlq: list[dict] = []
    markers = 0
    try:
        async with asyncio.timeout(60):
            dlq_end: dict[TopicPartition, int] = {}
            while markers < settings.partitions or any(
                [await consumer.position(tp) < end for tp, end in dlq_end.items()]
            ):
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for r in records:
                        doc = orjson.loads(r.value)
                        if contracts.is_end_of_input(doc):
                            assert tp.topic == topics.ticks
                            markers += doc["run_id"] == run_id
                        elif tp.topic == topics.ticks:
                            assert r.key == doc[0][0].encode()  # keyed by symbol
                            ticks.extend(doc)
                        else:
                            dlq.append(doc)
                if markers == settings.partitions and not dlq_end:
                    parts = [TopicPartition(topics.dlq, p) for p in range(settings.partitions)]
                    dlq_end = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    return ticks, dlq


async def publish(settings: Settings, source: AsyncIterator[RawTick]) -> tuple[list, list]:
    await ensure_topics(settings)
    run_id = uuid.uuid4().hex
    async with Publisher(settings, Validator(ValidationConfig())) as publisher:
        await publisher.publish(source)
        await publisher.end_of_input(run_id)
    return await read_back(settings, run_id)


async def test_replay_source_to_kafka(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    good = [
        f"{T0 + i * 1000},{'XAU' if i % 3 else 'XAG'},{5000 + i if i % 3 else 100 + i / 10}"
        for i in range(300)
    ]
    lines = [
        "ts,symbol,price",
        *good[:100],
        "oops",
        *good[100:200],
        f"{T0},XAU,nan",
        *good[200:],
        f"{T0 + 999_000},XAU,",
    ]
    path.write_text("\n".join(lines) + "\n")
    ticks, dlq = await publish(settings, replay(ReplayConfig(path)))
    assert sorted((t[0], t[1], t[2]) for t in ticks) == sorted(
        (s, int(ts), float(p)) for ts, s, p in (g.split(",") for g in good)
    )
    assert {(d["position"], d["reason"]) for d in dlq} == {
        ("line 102", "malformed"),
        ("line 203", "invalid_price"),
        ("line 304", "malformed"),
    }
    assert all(d["source"] == "replay:t.csv" and d["raw"] for d in dlq)


async def test_simulator_source_to_kafka(settings: Settings) -> None:
    ticks, dlq = await publish(settings, simulate(SimulatorConfig(count=2_000, seed=3)))
    assert len(ticks) == 2_000 and dlq == []
    assert Counter(t[0] for t in ticks).keys() == {"XAU", "XAG"}
    seqs = Counter((t[0], t[7]) for t in ticks)
    assert max(seqs.values()) == 1  # no tick doubled on the way


async def test_websocket_source_to_kafka(settings: Settings) -> None:
    frames = [
        orjson.dumps({"s": "XAU", "p": 5000.5, "t": T0 + 1}),
        b"{not json",
        orjson.dumps([{"s": "XAG", "p": 107.1, "t": T0 + 2}, {"s": "XAG", "p": -1, "t": T0 + 3}]),
        orjson.dumps({"s": "XAU", "p": 5001.0, "t": T0 + 4}),
    ]

    async def handler(conn: ServerConnection) -> None:
        for frame in frames:
            await conn.send(frame.decode())
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = WebSocketSourceConfig(
            f"ws://127.0.0.1:{port}",
            field_map={"s": "symbol", "p": "price", "t": "ts"},
            source="ws:test",
        )

        async def first_five() -> AsyncIterator[RawTick]:
            async with contextlib.aclosing(websocket_source(config)) as source:
                n = 0
                async for raw in source:
                    yield raw
                    n += 1
                    if n == 5:
                        return

        ticks, dlq = await publish(settings, first_five())
    assert sorted((t[0], t[1], t[2]) for t in ticks) == [
        ("XAG", T0 + 2, 107.1),
        ("XAU", T0 + 1, 5000.5),
        ("XAU", T0 + 4, 5001.0),
    ]
    assert sorted(d["reason"] for d in dlq) == ["invalid_price", "malformed"]


# one input of the property test: (kind, symbol, ts offset, price)
inputs = st.lists(
    st.tuples(
        st.sampled_from(
            ["ok", "ok", "ok", "dup", "garbage", "negative", "nan", "crossed", "spike"]
        ),
        st.sampled_from(["XAU", "XAG"]),
        st.integers(0, 5_000),
    ),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(inputs)
def test_every_input_lands_exactly_once(kafka_bootstrap: str, spec: list) -> None:
    """Any mix of valid and invalid inputs: each ends in ticks xor dlq, once."""
    base = {"XAU": 5000.0, "XAG": 107.0}
    raws: list[RawTick] = []
    clock = T0
    for n, (kind, sym, step) in enumerate(spec):
        clock += step + 1
        price = base[sym] * (1 + (n % 7) / 1000)
        fields: dict | None = {"symbol": sym, "ts": clock, "price": price}
        if kind == "dup" and raws and raws[-1].fields is not None:
            fields = dict(raws[-1].fields)
        elif kind == "garbage":
            fields = None
        elif kind == "negative":
            fields["price"] = -price
        elif kind == "nan":
            fields["price"] = math.nan
        elif kind == "crossed":
            fields.update(bid=price + 1, ask=price - 1)
        elif kind == "spike":
            fields["price"] = price * 10
        raws.append(
            RawTick(f"input {n}", "prop", f"n={n}", clock, fields, None if fields else "garbage")
        )

    async def source() -> AsyncIterator[RawTick]:
        for raw in raws:
            yield raw

    namespace = "p" + uuid.uuid4().hex[:10]
    s = Settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace, metrics_port=0, partitions=2)
    ticks, dlq = asyncio.run(publish(s, source()))
    landed_ticks = Counter((t[0], t[1], t[2]) for t in ticks)
    landed_dlq = Counter(d["position"] for d in dlq)
    assert max(landed_dlq.values(), default=1) == 1
    for n, raw in enumerate(raws):
        f = raw.fields
        in_dlq = landed_dlq[f"n={n}"]
        in_ticks = f is not None and landed_ticks[(f["symbol"], f["ts"], f["price"])] > 0
        assert in_dlq + in_ticks == 1, (n, raw, in_dlq, in_ticks)
        if in_ticks:  # consume one copy: exactly-once per input
            landed_ticks[(f["symbol"], f["ts"], f["price"])] -= 1
    assert sum(landed_ticks.values()) == 0


async def test_a_publisher_cancelled_while_it_starts_leaves_no_producer_open(
    settings: Settings,
) -> None:
    """Ctrl-C just after a run's banner cancels its simulator inside the publisher's
    ``__aenter__``, where no ``__aexit__`` follows: the producer must be stopped there
    (or aiokafka reports it unclosed as the process exits, after the run's last line)."""
    publisher = Publisher(settings, Validator(ValidationConfig()))
    entering = asyncio.create_task(publisher.__aenter__())
    await asyncio.sleep(1.0)  # the namespace has no topics yet: it waits for them
    assert not entering.done()
    entering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await entering
    assert publisher._producer._closed  # what aiokafka's __del__ checks before it reports
