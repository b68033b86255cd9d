"""The Faust application: a thin shell around the processor cores.

The agent reads the ticks topic in batches (``processors.batching``), hands them to the
core of their partition (``processors.partitions``: workers of one consumer group share
the partitions, each holding only its partitions' state) and publishes what the cores
return at once, through an outbox that keeps every send until the broker has confirmed it
(``processors.outbox``). The cores' snapshots are written to a compacted state topic
behind those outputs, and the input is acked only once the snapshots are confirmed too
(``processors.checkpoints``); a partition's core is restored from its last snapshot
before its first event is processed (``processors.state_store``), and messages already
reflected in it are skipped, so a killed worker's successor resumes exactly where its
state left off. A partition lost in a rebalance is snapshotted and dropped. Running the
app as a process, with its broker-loss restarts, is ``processors.worker``.

This module only wires those together, so that the agent's body stays a short loop:
take a batch, step the core, send, count. It also re-exports the names those modules
hold, which callers have always imported from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from processors.batching import batches
from processors.broker_errors import BROKER_RETURN_WAIT_S
from processors.checkpoints import Checkpoints
from processors.config import analytics_config, state_settings
from processors.core import Incoming, Outgoing
from processors.fetching import LiveApp
from processors.kernels.analytics import AnalyticsConfig
from processors.outbox import (
    SEND_ATTEMPTS,
    SEND_BACKOFF_S,
    SEND_MAX_BACKOFF_S,
    Outbox,
    Send,
    SendFailed,
    retriable,
)
from processors.partitions import PartitionCores, loader
from processors.state_store import STATE_KEY, STATE_MAX_BYTES, load_snapshots, state_key
from processors.worker import load_seeds, run_worker, topics_ready
from tickstream import metrics
from tickstream.groups import GroupLayout
from tickstream.service_runtime import PacedCollections
from tickstream.settings import ConfigError, Settings
from tickstream.topics import Topics

__all__ = [
    "BROKER_RETURN_WAIT_S",
    "SEND_ATTEMPTS",
    "SEND_BACKOFF_S",
    "SEND_MAX_BACKOFF_S",
    "STATE_KEY",
    "STATE_MAX_BYTES",
    "Outbox",
    "Send",
    "SendFailed",
    "batches",
    "create_app",
    "load_seeds",
    "load_snapshots",
    "report_lag",
    "retriable",
    "run_worker",
    "state_key",
    "topics_ready",
]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    config: AnalyticsConfig | None = None,
    datadir: Path | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> faust.App:
    """Build the processor app; nothing is read from the environment here.

    ``on_fatal`` is told why the agent cannot go on (a send refused for good, a bug): it
    must stop the worker. Left to Faust, a failed agent is restarted in place and the
    events the failed one had taken, unacked, are never seen again. Without it, the error
    is raised (to Faust).
    """
    topics = Topics(settings.namespace)
    config = config or analytics_config(settings)
    datadir = datadir or Path(".tickstream") / "faust" / settings.namespace
    datadir.mkdir(parents=True, exist_ok=True)
    app = LiveApp(
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
        # no Faust tables, so nothing to stand by for; a standby replica would only make
        # the assignor keep up to ceil(partitions / workers) each where they are, and a
        # worker joining a running group could be left idle (seen: 3 workers, 4
        # partitions, 2/2/0). With none, each keeps down to floor(...) and all work.
        table_standby_replicas=0,
    )
    ticks = app.topic(topics.ticks, key_serializer="raw", value_serializer="raw")
    cores = PartitionCores(
        topics,
        config,
        settings.partitions,
        GroupLayout.from_settings(settings),
        loader(settings.kafka_bootstrap, topics.processor_state),
        state_settings=state_settings(settings),
    )
    running: list[Checkpoints] = []  # the agent's, once it runs: rebalances release through it
    collect_when_due = PacedCollections()
    group = topics.group("processor")
    batch_size = settings.processor_batch
    within_s = settings.processor_batch_ms / 1000

    def describe(msg: Outgoing) -> str:
        if msg.topic == topics.processor_state:
            return f"the state snapshot for topic {msg.topic}"
        return f"an output message for topic {msg.topic}"

    @app.on_partitions_revoked.connect
    async def release(_app: faust.App, revoked: set[Any], **_: Any) -> None:
        """Partitions this worker may lose: their state is snapshotted, then dropped (a
        partition assigned again is restored from its snapshot, which another worker
        may have moved on meanwhile)."""
        lost = {tp.partition for tp in revoked if tp.topic == topics.ticks}
        if not (lost and running):
            return
        try:
            dropped = await running[0].release(lost)
        except SendFailed as exc:  # nothing acked: the next owner redoes it all
            if on_fatal is None:
                raise
            on_fatal(f"{exc}; the input since the last snapshot was not acknowledged")
            return
        if dropped:
            log.info("released ticks partitions %s", dropped)

    @app.agent(ticks, name="analytics", concurrency=1)
    async def analytics(stream: faust.StreamT[Any]) -> None:
        try:
            await process(stream)
        except Exception as exc:
            if on_fatal is None:
                raise
            if isinstance(exc, SendFailed):
                on_fatal(f"{exc}; the input since the last snapshot was not acknowledged")
            elif isinstance(exc, ConfigError):  # state of another layout: says what to do
                on_fatal(f"bad setting {exc}")
            else:  # a bug: its traceback is wanted
                log.exception("the processor failed")
                on_fatal(f"{type(exc).__name__}: {exc}")

    def send(m: Outgoing) -> Awaitable[asyncio.Future[Any]]:
        return app.producer.send(m.topic, m.key, m.value, m.partition, None, None)

    async def process(stream: faust.StreamT[Any]) -> None:
        manual = stream.noack()  # acked by the checkpoints, once a snapshot reflects them
        outbox = Outbox(send, describe)
        states = Outbox(send, describe)
        checkpoints = Checkpoints(
            cores, outbox, states, manual, within_s, hurry=app.waiting_for_acks
        )
        running[:] = [checkpoints]
        try:
            async with checkpoints.saving_when_quiet():
                async for events in batches(manual, batch_size, within_s, app.consumer.highwater):
                    async with checkpoints.lock:
                        started = time.perf_counter()
                        out = await cores.step(incoming(events))
                        await outbox.put(out.messages)
                        await checkpoints.processed(events)  # and a snapshot written, if due
                        metrics.PROCESSOR_BATCH.observe(len(events))
                        metrics.PROCESSOR_BATCH_SECONDS.observe(time.perf_counter() - started)
                    report_lag(app, group, topics.ticks, cores.applied)
                    collect_when_due()
        finally:
            # Faust's stop waits until every event taken is acked or forgotten (a weak set):
            # a failed agent's unacked events must not outlive it here
            running.clear()

    return app


def incoming(events: Iterable[faust.EventT[Any]]) -> Iterator[Incoming]:
    """A batch's events as the core takes them."""
    return (Incoming(e.message.partition, e.message.offset, e.message.value) for e in events)


_LAG_REPORTED: dict[tuple[str, str], set[int]] = {}  # (group, topic) -> partitions with a gauge


def report_lag(app: faust.App, group: str, topic: str, applied: dict[int, int]) -> None:
    """Messages of the ticks topic not yet reflected in the state, per assigned partition.

    A partition that moved to another worker loses its gauge here: its new owner reports
    it, and a stale copy would be summed with that one (the lag alerts sum by topic).
    """
    consumer = app.consumer
    reported = _LAG_REPORTED.setdefault((group, topic), set())
    owned = {tp.partition for tp in consumer.assignment() if tp.topic == topic}
    for partition in reported - owned:
        with contextlib.suppress(KeyError):
            metrics.CONSUMER_LAG.remove(group, topic, str(partition))
    reported &= owned
    for partition in owned:
        try:
            high = consumer.highwater(TP(topic, partition))
        except Exception:  # no fetch yet for this partition
            continue
        if high is not None:
            lag = max(0, high - applied.get(partition, -1) - 1)
            metrics.CONSUMER_LAG.labels(group, topic, str(partition)).set(lag)
            reported.add(partition)
