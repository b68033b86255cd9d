"""The Faust application: a thin shell around ProcessorCore.

The agent reads the ticks topic in batches (``take_events``), hands them to the
core, publishes what the core returns, then writes the core's snapshot (kernel
state plus the input offsets it reflects) to a compacted state topic before the
batch's offsets may be committed. On start the last snapshot is read back, and
messages already reflected in it are skipped, so a killed worker resumes exactly
where its state left off; outputs re-sent after a crash are identical and the
sink's row identities absorb them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.config import analytics_config
from processors.core import Incoming, ProcessorCore
from processors.kernels.analytics import AnalyticsConfig
from processors.kernels.records import RecordSeed
from tickstream import metrics
from tickstream.settings import Settings
from tickstream.topics import Topics

log = logging.getLogger(__name__)

STATE_KEY = b"analytics"
STATE_MAX_BYTES = 64 << 20


def create_app(
    settings: Settings, config: AnalyticsConfig | None = None, datadir: Path | None = None
) -> faust.App:
    """Build the processor app; nothing is read from the environment here."""
    topics = Topics(settings.namespace)
    config = config or analytics_config(settings)
    datadir = datadir or Path(".tickstream") / "faust" / settings.namespace
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        topics.group("processor"),
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=STATE_MAX_BYTES,
        broker_commit_interval=1.0,
        # a killed worker's partitions move to its successor in seconds, not a minute
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        stream_buffer_maxsize=16_384,
    )
    ticks = app.topic(topics.ticks, key_serializer="raw", value_serializer="raw")
    core = ProcessorCore(topics, config, settings.partitions)
    group = topics.group("processor")
    batch_size = settings.processor_batch
    within_s = settings.processor_batch_ms / 1000

    @app.agent(ticks, name="analytics", concurrency=1)
    async def analytics(stream: faust.StreamT[Any]) -> None:
        blob = await load_state(settings.kafka_bootstrap, topics.processor_state)
        if blob is not None:
            core.restore(blob)
            log.info("restored processor state (%d bytes) at offsets %s", len(blob), core.applied)
        async for events in stream.take_events(batch_size, within=within_s):
            started = time.perf_counter()
            out = core.step(
                Incoming(e.message.partition, e.message.offset, e.message.value) for e in events
            )
            for msg in out.messages:
                await app.producer.send(msg.topic, msg.key, msg.value, msg.partition, None, None)
            await app.producer.send(
                topics.processor_state, STATE_KEY, core.snapshot(), 0, None, None
            )
            await app.producer.flush()
            metrics.PROCESSOR_BATCH.observe(len(events))
            metrics.PROCESSOR_BATCH_SECONDS.observe(time.perf_counter() - started)
            report_lag(app, group, topics.ticks, core.applied)

    return app


def report_lag(app: faust.App, group: str, topic: str, applied: dict[int, int]) -> None:
    """Messages of the ticks topic not yet reflected in the state, per assigned partition."""
    consumer = app.consumer
    for tp in consumer.assignment():
        if tp.topic != topic:
            continue
        try:
            high = consumer.highwater(tp)
        except Exception:  # no fetch yet for this partition
            continue
        if high is not None:
            lag = max(0, high - applied.get(tp.partition, -1) - 1)
            metrics.CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(lag)


async def load_state(bootstrap: str, topic: str) -> bytes | None:
    """The last snapshot on the compacted state topic, or None on a first start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=STATE_MAX_BYTES,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if end == 0:
            return None
        # seek() is immediate; seek_to_beginning() is lazy and position() could still report
        # the end, so the loop below read nothing and the state was silently not restored
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        last: bytes | None = None
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000)
            for record in batches.get(tp, []):
                if record.key == STATE_KEY:
                    last = record.value
        return last
    finally:
        await consumer.stop()


def load_seeds(settings: Settings, from_clickhouse: bool) -> dict[str, RecordSeed]:
    """Record history for symbols the restored state does not know yet."""
    from processors.seeds import seeds_from_clickhouse, seeds_from_file
    from tickstream.clickhouse import ClickHouseUnavailable, connect

    if settings.record_seeds:
        seeds = seeds_from_file(Path(settings.record_seeds))
        log.info("record seeds from %s: %s", settings.record_seeds, ", ".join(seeds) or "none")
        return seeds
    if not from_clickhouse:
        return {}
    try:
        client = connect(settings)
    except ClickHouseUnavailable as exc:
        log.warning("no record seeds from ClickHouse (%s)", exc)
        return {}
    try:
        seeds = seeds_from_clickhouse(client, settings.clickhouse_database)
    except Exception as exc:  # tables not created yet on a first deployment
        log.info("no record seeds from ClickHouse yet (%s)", str(exc).splitlines()[0])
        return {}
    finally:
        client.close()
    log.info("record seeds from ClickHouse: %s", ", ".join(seeds) or "none")
    return seeds


def run_worker(
    settings: Settings, seed_from_clickhouse: bool = True, loglevel: str = "warn"
) -> None:
    """Run the processor until stopped (SIGINT/SIGTERM); exposes metrics if configured."""
    from tickstream.kafka_io import ensure_topics

    asyncio.run(ensure_topics(settings))
    seeds = load_seeds(settings, seed_from_clickhouse)
    metrics.serve_metrics(settings.metrics_port, "processor")
    app = create_app(settings, analytics_config(settings, seeds))
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # a terminal spinner only garbles logs shared with other processes
    worker.execute_from_commandline()
