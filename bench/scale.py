"""Scale-out: the processor's throughput with 1 and 2 workers, and its recovery from a kill.

    tickstream bench scale [--ticks 400000] [--groups 8] [--kafka-bootstrap 127.0.0.1:9092]

Both worker counts read the same pre-published load (``--groups`` unpaired symbols plus
gold/silver as one pair, so the symbol groups spread over the four partitions) in one run
on one machine, so their ratio means something on a shared, noisy box; on a 2-core machine
two workers compete with the broker for the same cores, so expect well under 2x here.

Recovery: with two workers caught up, one is SIGKILLed and an end-of-input marker is
published on every partition at once. A partition's marker comes out of the processor as
soon as a worker owns it: at once for the survivor's partitions, after the group rebalance
and a restore from the partition's snapshot for the ones it takes over. The figure is the
time from the kill to the marker of the last partition taken over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from bench.analytics import _eof_messages, _send_all, simulated_ticks
from bench.scratch import drop_scratch
from tickstream import contracts
from tickstream.kafka_io import ensure_topics
from tickstream.model import Tick
from tickstream.settings import Settings
from tickstream.topics import Topics

PARTITIONS = 4


def spread_over_groups(ticks: list[Tick], groups: int) -> list[Tick]:
    """Gold and silver stay a pair; every other tick goes to one of ``groups`` lone symbols."""
    out: list[Tick] = []
    for i, t in enumerate(ticks):
        if i % (groups + 1):
            out.append(dataclasses.replace(t, symbol=f"S{i % (groups + 1)}"))
        else:
            out.append(t)
    return out


def messages_of(ticks: list[Tick], per_message: int = 500) -> list[tuple[bytes, bytes, None]]:
    pending: dict[str, list[Tick]] = {}
    messages: list[tuple[bytes, bytes, None]] = []
    for t in ticks:
        rows = pending.setdefault(t.symbol, [])
        rows.append(t)
        if len(rows) == per_message:
            messages.append((t.symbol.encode(), contracts.encode_ticks(rows), None))
            pending[t.symbol] = []
    messages += [(s.encode(), contracts.encode_ticks(r), None) for s, r in pending.items() if r]
    return messages


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env()}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "-q", "process", "--no-seed-from-clickhouse"],
        env=env,
        stderr=subprocess.DEVNULL,
    )


async def markers_out(settings: Settings, run_id: str, timeout_s: float = 600) -> dict[int, float]:
    """When (perf_counter) each partition of the aggregates topic passed run_id's marker."""
    consumer = AIOKafkaConsumer(
        Topics(settings.namespace).aggregates,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen: dict[int, float] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while len(seen) < settings.partitions:
                for tp, records in (await consumer.getmany(timeout_ms=100)).items():
                    for r in records:
                        doc = orjson.loads(r.value)
                        if isinstance(doc, dict) and doc.get("run_id") == run_id:
                            seen.setdefault(tp.partition, time.perf_counter())
    finally:
        await consumer.stop()
    return seen


async def publish_marker(settings: Settings) -> str:
    run_id = uuid.uuid4().hex
    topic = Topics(settings.namespace).ticks
    await _send_all(settings.kafka_bootstrap, topic, _eof_messages(run_id, settings.partitions))
    return run_id


async def throughput(
    bootstrap: str, ticks: list[Tick], workers: int
) -> tuple[float, Settings, list[subprocess.Popen[bytes]]]:
    """Ticks/s of ``workers`` processors on the load; returns them still running, caught up."""
    settings = Settings(
        kafka_bootstrap=bootstrap,
        namespace="scale" + uuid.uuid4().hex[:8],
        partitions=PARTITIONS,
        processors=workers,
        metrics_port=0,
    )
    await ensure_topics(settings)
    procs = [start_worker(settings) for _ in range(workers)]
    # warm up: every partition owned (its marker out) before the clock starts
    warm = await publish_marker(settings)
    await markers_out(settings, warm)
    messages = messages_of(ticks)
    run = uuid.uuid4().hex
    topic = Topics(settings.namespace).ticks
    started = time.perf_counter()
    waiting = asyncio.create_task(markers_out(settings, run))
    await _send_all(bootstrap, topic, [*messages, *_eof_messages(run, settings.partitions)])
    done = await waiting
    return len(ticks) / (max(done.values()) - started), settings, procs


async def recovery(settings: Settings, procs: list[subprocess.Popen[bytes]]) -> float:
    victim = procs[-1]
    killed = time.perf_counter()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    run_id = await publish_marker(settings)
    seen = await markers_out(settings, run_id)
    return max(seen.values()) - killed


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait(timeout=60)


async def run(ticks_n: int, groups: int, bootstrap: str) -> None:
    print(f"simulating {ticks_n:,} ticks over {groups + 1} symbol groups ...", file=sys.stderr)
    ticks = spread_over_groups(simulated_ticks(ticks_n), groups)
    rates: dict[int, float] = {}
    scratch: list[Settings] = []  # deleted at the end: not while the next load runs
    try:
        for workers in (1, 2):
            print(f"{workers} worker(s) on {PARTITIONS} partitions ...", file=sys.stderr)
            rate, settings, procs = await throughput(bootstrap, ticks, workers)
            scratch.append(settings)
            rates[workers] = rate
            print(f"{f'processor, {workers} worker(s)':<44}: {rate:12,.0f} ticks/s")
            try:
                if workers == 2:
                    took = await recovery(settings, procs)
                    print(f"{'recovery: kill -> last taken-over partition':<44}: {took:12.2f} s")
            finally:
                stop(procs)
    finally:
        for settings in scratch:
            await drop_scratch(settings, Path.cwd())  # the workers' working directory
    print(f"{'2 workers / 1 worker':<44}: {rates[2] / rates[1]:12.2f}x")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=400_000)
    parser.add_argument("--groups", type=int, default=8, help="lone symbols besides XAU/XAG")
    parser.add_argument("--kafka-bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args(argv)
    asyncio.run(run(args.ticks, args.groups, args.kafka_bootstrap))


if __name__ == "__main__":
    main()
