"""Analytics throughput: pure kernels, the Faust processor on a real broker, a naive agent.

    tickstream bench analytics [--ticks 1000000] [--kafka-bootstrap 127.0.0.1:9092]

All three figures come from one run on the same machine, so their ratios mean
something on a shared, noisy 2-core box:
- pure: ``Analytics.update`` (event-time ordering + every kernel) in batches;
- faust: the real processor (``tickstream process``) reading pre-published ticks
  (batches of 500 per message) until its end-of-input marker comes out;
- naive: a per-event Faust agent (bench/naive_agent.py, one tick per message)
  doing only a running max, timed the same way.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from bench.scratch import drop_scratch
from processors.kernels.analytics import Analytics, AnalyticsConfig
from producers.publisher import make_producer
from producers.simulator import SimulatorConfig, generate
from producers.validation import parse_tick
from tickstream import contracts
from tickstream.groups import GroupLayout
from tickstream.kafka_io import ensure_topics
from tickstream.model import Tick
from tickstream.settings import Settings, envvar
from tickstream.topics import Topics

ROOT = Path(__file__).resolve().parent.parent


def simulated_ticks(n: int, seed: int = 11) -> list[Tick]:
    return [parse_tick(r.fields, r.recv_ms) for r in generate(SimulatorConfig(count=n, seed=seed))]  # type: ignore[arg-type]


def bench_pure(ticks: list[Tick], batch: int = 5_000) -> float:
    analytics = Analytics(AnalyticsConfig())
    started = time.perf_counter()
    for i in range(0, len(ticks), batch):
        analytics.update(ticks[i : i + batch])
    analytics.flush()
    return len(ticks) / (time.perf_counter() - started)


async def _send_all(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes | None, int | None]]
) -> None:
    producer = make_producer(Settings(kafka_bootstrap=bootstrap, metrics_port=0))
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        groups = GroupLayout.from_settings(Settings(metrics_port=0))  # the worker's: defaults
        futures = []
        for key, value, partition in messages:
            # keyed by group as the publisher does: a pair's ticks meet in one core
            group = groups.group_of(key.decode()).encode()
            p = partition if partition is not None else partitioner(group, partitions, partitions)
            futures.append(await producer.send(topic, value, key=key, partition=p))
        for f in futures:
            await f
    finally:
        await producer.stop()


async def _wait_for(
    bootstrap: str, topic: str, predicate, expected: int, timeout_s: float = 600
) -> None:  # type: ignore[no-untyped-def]
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen = 0
    try:
        async with asyncio.timeout(timeout_s):
            while seen < expected:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    seen += sum(1 for r in records if predicate(orjson.loads(r.value)))
    finally:
        await consumer.stop()


def _eof_messages(run_id: str, partitions: int) -> list[tuple[bytes, bytes | None, int | None]]:
    eof = contracts.encode_end_of_input
    return [(b"", eof(run_id, p, partitions), p) for p in range(partitions)]


async def bench_faust(settings: Settings, ticks: list[Tick]) -> float:
    await ensure_topics(settings)
    topics = Topics(settings.namespace)
    env = dict(os.environ)
    for name in ("kafka_bootstrap", "namespace", "partitions"):
        env[envvar(name)] = str(getattr(settings, name))
    env[envvar("metrics_port")] = "0"
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli", "-q", "process", "--no-seed-from-clickhouse"], env=env
    )
    try:
        is_eof = lambda run: lambda d: isinstance(d, dict) and d.get("run_id") == run  # noqa: E731
        warm = uuid.uuid4().hex
        await _send_all(
            settings.kafka_bootstrap,
            topics.ticks,
            [
                (b"XAU", contracts.encode_ticks(ticks[:10]), None),
                *_eof_messages(warm, settings.partitions),
            ],
        )
        await _wait_for(
            settings.kafka_bootstrap, topics.aggregates, is_eof(warm), settings.partitions
        )
        by_symbol: dict[str, list[Tick]] = {}
        messages: list[tuple[bytes, bytes | None, int | None]] = []
        for t in ticks[10:]:
            rows = by_symbol.setdefault(t.symbol, [])
            rows.append(t)
            if len(rows) == 500:
                messages.append((t.symbol.encode(), contracts.encode_ticks(rows), None))
                by_symbol[t.symbol] = []
        encode = contracts.encode_ticks
        messages += [(s.encode(), encode(r), None) for s, r in by_symbol.items() if r]
        run = uuid.uuid4().hex
        started = time.perf_counter()
        await _send_all(
            settings.kafka_bootstrap,
            topics.ticks,
            messages + _eof_messages(run, settings.partitions),
        )
        await _wait_for(
            settings.kafka_bootstrap, topics.aggregates, is_eof(run), settings.partitions
        )
        return (len(ticks) - 10) / (time.perf_counter() - started)
    finally:
        _stop(worker, "the processor")


def _stop(worker: subprocess.Popen[bytes], what: str, timeout_s: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within ``timeout_s`` (and say so)."""
    worker.terminate()
    try:
        worker.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"{what} did not stop within {timeout_s:.0f} s of SIGTERM: killed", file=sys.stderr)
        worker.kill()
        worker.wait()


async def bench_naive(bootstrap: str, ticks: list[Tick], partitions: int = 3) -> float:
    base = "naive" + uuid.uuid4().hex[:8]
    source, out = f"{base}.in", f"{base}.out"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(source, partitions, 1), NewTopic(out, 1, 1)])
    await admin.close()
    await asyncio.sleep(1)
    datadir = tempfile.TemporaryDirectory(prefix="tickstream-naive-")  # Faust's, in its cwd
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "naive_agent.py"), bootstrap, source, out],
        cwd=datadir.name,
    )
    try:
        is_done = lambda run: lambda d: d.get("done") == run  # noqa: E731
        warm = uuid.uuid4().hex
        await _send_all(bootstrap, source, _eof_messages(warm, partitions))
        await _wait_for(bootstrap, out, is_done(warm), partitions)
        run = uuid.uuid4().hex
        messages = [(t.symbol.encode(), contracts.encode_ticks([t])[1:-1], None) for t in ticks]
        started = time.perf_counter()
        await _send_all(bootstrap, source, messages + _eof_messages(run, partitions))
        await _wait_for(bootstrap, out, is_done(run), partitions)
        return len(ticks) / (time.perf_counter() - started)
    finally:
        _stop(worker, "the naive agent")
        datadir.cleanup()
        # its topics and Faust's own (named after the app, "<base>.in.naive...")
        await drop_scratch(Settings(kafka_bootstrap=bootstrap, namespace=base))


async def run(ticks_n: int, bootstrap: str, naive_n: int) -> None:
    print(f"simulating {ticks_n:,} ticks ...", file=sys.stderr)
    ticks = simulated_ticks(ticks_n)
    pure = bench_pure(ticks)
    print(f"pure kernels (ordering + all analytics), 1 core : {pure:12,.0f} ticks/s")
    settings = Settings(
        kafka_bootstrap=bootstrap, namespace="bench" + uuid.uuid4().hex[:8], metrics_port=0
    )
    try:
        faust_rate = await bench_faust(settings, ticks[: min(len(ticks), 500_000)])
        print(f"tickstream processor (Faust, batched), broker   : {faust_rate:12,.0f} ticks/s")
        naive = await bench_naive(bootstrap, ticks[:naive_n])
    finally:  # not before: the broker would delete its files while the naive agent runs
        await drop_scratch(settings, Path.cwd())  # the processor's working directory
    print(f"naive per-event Faust agent (running max only)  : {naive:12,.0f} ticks/s")
    print(f"processor / naive                               : {faust_rate / naive:12.1f}x")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--naive-ticks", type=int, default=60_000)
    parser.add_argument("--kafka-bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args(argv)
    asyncio.run(run(args.ticks, args.kafka_bootstrap, args.naive_ticks))


if __name__ == "__main__":
    main()
