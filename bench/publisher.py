"""Publisher throughput to the local broker beside raw aiokafka send_batch, in one run.

    python bench/publisher.py [--ticks 200000] [--kafka-bootstrap 127.0.0.1:9092]

Both sides send the same simulated ticks with the same producer settings
(idempotent, acks=all) to fresh topics. The raw side is the floor of what any
Python publisher can do: pre-encoded messages, one per tick, appended straight
into aiokafka batches. The publisher side includes everything a real source
pays: validation (spike filter, duplicates), packing and metrics. A last run feeds the
same ticks stamped to the second, 2,000 of them in each second (a coarse vendor feed:
thousands of ticks share an event time, which duplicate detection must not pay for
tick by tick).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

import orjson
from aiokafka.partitioner import DefaultPartitioner

from bench.scratch import drop_scratch
from producers.publisher import Publisher, make_producer
from producers.records import RawTick, Rejection, Verdicts
from producers.simulator import SimulatorConfig, generate
from producers.validation import Row, ValidationConfig, Validator
from tickstream.kafka_io import ensure_topics
from tickstream.model import Tick
from tickstream.settings import Settings
from tickstream.topics import Topics


async def raw_send_batch(settings: Settings, values: list[tuple[bytes, bytes]]) -> float:
    producer = make_producer(settings)
    await producer.start()
    topic = Topics(settings.namespace).ticks
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    started = time.perf_counter()
    batches: dict[int, object] = {}
    futures = []
    for key, value in values:
        p = partitioner(key, partitions, partitions)
        batch = batches.get(p)
        if batch is None:
            batch = batches[p] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # type: ignore[attr-defined]
            futures.append(await producer.send_batch(batch, topic, partition=p))
            batch = batches[p] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)  # type: ignore[attr-defined]
    for p, batch in batches.items():
        futures.append(await producer.send_batch(batch, topic, partition=p))
    for f in futures:
        await f
    elapsed = time.perf_counter() - started
    await producer.stop()
    return elapsed


class _PassThrough(Validator):
    """Accepts every input unchecked: isolates the publisher's transport cost."""

    def feed_row(self, raw: RawTick, accepted: list[Row], rejected: list[Rejection]) -> Row:
        f = raw.fields
        assert f is not None
        return (
            f["symbol"],
            f["ts"],
            f["price"],
            f.get("bid"),
            f.get("ask"),
            f.get("size"),
            f.get("venue"),
            f.get("seq"),
            raw.recv_ms,
        )

    def feed(self, raw: RawTick) -> Verdicts:
        return Verdicts([Tick(*self.feed_row(raw, [], []))], [])


async def publisher_run(settings: Settings, raws: list[RawTick], validate: bool = True) -> float:
    async def source() -> AsyncIterator[RawTick]:
        for n, raw in enumerate(raws):
            if n % 5000 == 0:
                await asyncio.sleep(0)
            yield raw

    validator = Validator(ValidationConfig()) if validate else _PassThrough()
    async with Publisher(settings, validator) as publisher:
        started = time.perf_counter()
        report = await publisher.publish(source())
        elapsed = time.perf_counter() - started
    assert report.accepted + report.rejected == len(raws), report
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--kafka-bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raws = list(generate(SimulatorConfig(count=args.ticks, seed=7)))
    values = [(r.fields["symbol"].encode(), orjson.dumps(r.fields)) for r in raws]  # type: ignore[index]
    coarse = _stamped_to_the_second(raws)
    print(f"{args.ticks:,} simulated ticks, broker {args.kafka_bootstrap}, {args.rounds} rounds")
    best = dict.fromkeys(("raw", "transport", "publisher", "coarse"), float("inf"))
    scratch: list[Settings] = []  # deleted once every round is timed
    try:
        for round_ in range(args.rounds):
            for name in best:
                settings = Settings(
                    kafka_bootstrap=args.kafka_bootstrap,
                    metrics_port=0,
                    namespace=f"bench{uuid.uuid4().hex[:8]}",
                )
                await ensure_topics(settings)
                scratch.append(settings)
                if name == "raw":
                    t = await raw_send_batch(settings, values)
                else:
                    ticks = coarse if name == "coarse" else raws
                    t = await publisher_run(settings, ticks, validate=name != "transport")
                best[name] = min(best[name], t)
                print(f"  round {round_ + 1} {name:9s} {args.ticks / t:12,.0f} ticks/s")
    finally:
        for settings in scratch:
            await drop_scratch(settings)
    rate = {name: args.ticks / t for name, t in best.items()}
    print(f"raw aiokafka send_batch          : {rate['raw']:10,.0f} ticks/s (best round)")
    print(
        f"publisher, validation off        : {rate['transport']:10,.0f} ticks/s "
        f"({rate['transport'] / rate['raw']:.0%} of raw)"
    )
    print(
        f"publisher, full validation       : {rate['publisher']:10,.0f} ticks/s "
        f"({rate['publisher'] / rate['raw']:.0%} of raw)"
    )
    print(
        f"  the same, stamped to the second: {rate['coarse']:10,.0f} ticks/s "
        f"({rate['coarse'] / rate['raw']:.0%} of raw)"
    )


COARSE_PER_S = 2_000


def _stamped_to_the_second(raws: list[RawTick]) -> list[RawTick]:
    """The ticks as a feed with one-second timestamps sends them, COARSE_PER_S a second."""
    first_s = raws[0].fields["ts"] // 1000  # type: ignore[index]
    return [
        dataclasses.replace(raw, fields={**raw.fields, "ts": (first_s + n // COARSE_PER_S) * 1000})  # type: ignore[dict-item]
        for n, raw in enumerate(raws)
    ]


if __name__ == "__main__":
    asyncio.run(main())
