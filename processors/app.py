"""The Faust application: a thin shell around ProcessorCore.

The agent reads the ticks topic in batches, hands them to the core and publishes
what the core returns at once. A batch closes as soon as no further message is
waiting (so a lone tick is processed when it arrives), or when it holds
``processor_batch`` messages, or ``processor_batch_ms`` after its first message;
under load the messages that arrive while one batch is processed make the next,
so batches grow with the load by themselves (``batches``).

At most every ``processor_batch_ms`` (and that long after the last batch at the
latest; less often when the state is big, so that writing it takes at most about a
tenth of the time) the core's snapshot (kernel state plus the input offsets it
reflects) is written to a compacted state topic, and only once it is acknowledged are
the messages it reflects acked, so no offset is committed ahead of the state. On start
the last snapshot is read back, and messages already reflected in it are skipped,
so a killed worker resumes exactly where its state left off; outputs re-sent after
a crash are identical and the sink's row identities absorb them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
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
        manual = stream.noack()  # acked by ``save``, once the state reflecting them is written
        lock = asyncio.Lock()  # a batch and a snapshot never interleave
        unsaved: list[faust.EventT[Any]] = []  # processed, not yet in a written snapshot
        saved_at = time.monotonic()
        save_every = within_s  # longer when the state is big: writing it takes <= ~10%

        async def save() -> None:
            """Write the snapshot; once it and every output before it are acknowledged, ack."""
            nonlocal saved_at, save_every
            began = time.monotonic()
            await app.producer.send(
                topics.processor_state, STATE_KEY, core.snapshot(), 0, None, None
            )
            await app.producer.flush()
            saved_at = time.monotonic()
            save_every = max(within_s, 10 * (saved_at - began))
            done = unsaved[:]
            unsaved.clear()
            for event in done:
                await manual.ack(event)

        async def save_when_quiet() -> None:
            while True:
                await asyncio.sleep(within_s)
                async with lock:
                    if unsaved and time.monotonic() - saved_at >= save_every:
                        await save()

        saver = asyncio.create_task(save_when_quiet())
        try:
            async for events in batches(manual, batch_size, within_s, app.consumer.highwater):
                if saver.done():  # it failed: fail the worker as a failed batch would
                    saver.result()
                async with lock:
                    started = time.perf_counter()
                    out = core.step(
                        Incoming(e.message.partition, e.message.offset, e.message.value)
                        for e in events
                    )
                    for msg in out.messages:
                        await app.producer.send(
                            msg.topic, msg.key, msg.value, msg.partition, None, None
                        )
                    unsaved.extend(events)
                    if time.monotonic() - saved_at >= save_every:
                        await save()
                    metrics.PROCESSOR_BATCH.observe(len(events))
                    metrics.PROCESSOR_BATCH_SECONDS.observe(time.perf_counter() - started)
                report_lag(app, group, topics.ticks, core.applied)
        finally:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver

    return app


async def batches(
    stream: faust.StreamT[Any],
    max_events: int,
    within_s: float,
    highwater: Callable[[Any], int | None] = lambda tp: None,
) -> AsyncIterator[list[faust.EventT[Any]]]:
    """The stream's events in batches that close as soon as they have caught up.

    A batch closes when no further event is waiting, neither in the stream's buffers nor
    in Kafka as far as the last fetch knows (``highwater``: a partition's high watermark,
    None if unknown); or when it has ``max_events``; or ``within_s`` after its first
    event. So a lone event leaves at once, while a backlog (a replay, a restart) is taken
    in batches of up to ``within_s`` as before. Events are not acked here.

    A task moves events from the stream into a bounded queue of its own, so that a batch
    can close on time even when no event comes (a rebalance suspends the stream, and
    waits for the events taken so far to be acked).
    """
    buffered = stream.channel.queue  # what Faust has fetched for this stream, not yet taken
    queue: asyncio.Queue[faust.EventT[Any]] = asyncio.Queue(maxsize=max_events)
    taken: dict[Any, int] = {}  # partition -> offset of the last event taken from the stream

    async def pump() -> None:
        async for event in stream.events():
            await queue.put(event)

    def more_coming() -> bool:
        if not queue.empty() or not buffered.empty():
            return True
        for tp, offset in taken.items():
            with contextlib.suppress(Exception):  # a partition no longer assigned
                high = highwater(tp)
                if high is not None and high - 1 > offset:
                    return True
        return False

    async def take(timeout: float | None) -> faust.EventT[Any] | None:
        """The next event; None after ``timeout`` seconds without one, or at the end."""
        if queue.empty():
            getting = asyncio.ensure_future(queue.get())
            await asyncio.wait(
                {getting, pumping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not getting.done():
                getting.cancel()
                if pumping.done():
                    pumping.result()  # the stream failed: so does this
                return None
            event = getting.result()
        else:
            event = queue.get_nowait()
        taken[event.message.tp] = event.message.offset
        return event

    pumping = asyncio.create_task(pump())
    try:
        while not pumping.done() or not queue.empty():
            first = await take(None)
            if first is None:  # the stream ended
                return
            batch = [first]
            deadline = time.monotonic() + within_s
            while len(batch) < max_events and more_coming():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                event = await take(left)
                if event is None:
                    break
                batch.append(event)
            yield batch
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping


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
