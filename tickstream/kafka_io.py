"""Kafka plumbing shared by every component: topic creation and client settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from tickstream.settings import ConfigError, Settings
from tickstream.topics import Topics

log = logging.getLogger(__name__)

LIVE_FETCH_WAIT_MS = 10
"""``fetch_max_wait_ms`` of the consumers on the desk path (processor, gateway).

aiokafka sends at most one fetch request to a broker at a time, and a partition whose
records were just consumed is not in the one in flight: its next records wait until that
request returns, which a long poll on quiet partitions holds for the whole
``fetch_max_wait_ms`` (aiokafka's 500 ms, Faust's 1,500 ms). Measured as stalls of
1.5 s in the desk latency at 5,000 ticks/s and a processor falling behind at 20,000 with
its CPU mostly idle. A short poll bounds that wait; its price is an idle consumer asking
the broker a hundred times a second."""

BULK_FETCH_MIN_BYTES = 16 << 10
BULK_FETCH_WAIT_MS = 5
"""The gateway's fetches of ticks and aggregates: at least 16 KB, or whatever 5 ms gave.

With ``fetch_min_bytes=1`` the broker answers a fetch as soon as one message is there, so
under load the gateway fetched without pause: writing fetch requests was a fifth of its
profile at 20,000 ticks/s, and its signals shared those fetches. Signals have a consumer of
their own that keeps the live poll, so this costs ticks at most 5 ms (and an idle gateway
asks the broker two hundred times a second for ticks). Measured
in alternating runs: the gateway hop's p99 at 20,000 ticks/s went from 36-48 ms to 18-23
(45 in one run on a much busier machine); two consumers that both kept the live poll gave
31-38 ms."""


async def ensure_topics(settings: Settings, attempts: int = 30) -> None:
    """Create tickstream's topics when missing (idempotent, safe to race)."""
    topics = Topics(settings.namespace)
    data = [NewTopic(name, settings.partitions, 1) for name in topics.sink_inputs()]
    wanted = [
        *data,
        NewTopic(
            topics.processor_state,
            1,
            1,
            topic_configs={
                "cleanup.policy": "compact",
                "min.cleanable.dirty.ratio": "0.1",
                "max.message.bytes": str(64 << 20),
                # compaction never touches the active segment: rolled every 10 minutes, the
                # topic a worker reads back on every partition it gains stays near one
                # snapshot per partition instead of growing for days
                "segment.ms": str(600_000),
            },
        ),
        # rows ClickHouse refused (written by the sink, read by people): few, kept 30 days
        NewTopic(topics.quarantine, 1, 1, topic_configs={"retention.ms": str(30 * 86_400_000)}),
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await _connect(admin, settings.kafka_bootstrap, attempts)
    try:
        existing = set(await admin.list_topics())
        await _check_partitions(admin, settings, [t.name for t in data if t.name in existing])
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
            await _wait_for_leaders(admin, [t.name for t in missing])
    finally:
        await admin.close()


async def delete_namespace_topics(settings: Settings) -> list[str]:
    """Delete every topic of the namespace (those of ``Topics`` and Faust's own, all named
    ``<namespace>.*``); returns their names. For scratch namespaces (``bench/scratch.py``)."""
    prefix = f"{settings.namespace}."
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await _connect(admin, settings.kafka_bootstrap, 1)
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


async def _connect(admin: AIOKafkaAdminClient, bootstrap: str, attempts: int) -> None:
    """Start ``admin``, retrying once a second; say at once, in one line, that it waits.

    The line comes at the first refused attempt, or after a second when the first one
    hangs (a host that drops packets). While waiting, aiokafka's own "Unable connect to"
    error of every attempt is left out: the waiting line and the final error say it.
    """
    waiting = False

    def say_waiting() -> None:
        nonlocal waiting
        if not waiting:
            waiting = True
            log.warning(
                "waiting for a Kafka broker at %s: none answers yet; trying for up to %d s "
                "(`tickstream kafka up` starts a local one)",
                bootstrap,
                attempts,
            )

    loop = asyncio.get_running_loop()
    slow_first = loop.call_later(1.0, say_waiting)
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addFilter(_unable_to_connect)
    try:
        for attempt in range(attempts):
            try:
                await admin.start()
                if waiting:
                    log.info("the Kafka broker at %s answers", bootstrap)
                return
            except KafkaConnectionError:
                if attempt == attempts - 1:
                    raise ConfigError(
                        "kafka_bootstrap",
                        f"no Kafka broker answers at {bootstrap} "
                        f"(tried for {attempts} s; `tickstream kafka up` starts a local one)",
                    ) from None
                say_waiting()
                await asyncio.sleep(1)
    finally:
        slow_first.cancel()
        aiokafka_log.removeFilter(_unable_to_connect)


def _unable_to_connect(record: logging.LogRecord) -> bool:
    """Drop aiokafka's per-attempt connection error while ``_connect`` waits."""
    return not record.getMessage().startswith("Unable connect to")


async def _check_partitions(
    admin: AIOKafkaAdminClient, settings: Settings, names: list[str]
) -> None:
    """End-of-input markers count partitions: every data topic must have --partitions of them."""
    if not names:
        return
    for topic in await admin.describe_topics(names):
        found = len(topic.get("partitions", []))
        if found != settings.partitions:
            raise ConfigError(
                "partitions",
                f"topic {topic['topic']} already has {found} partitions, not "
                f"{settings.partitions}; use --partitions {found} or another --namespace",
            )


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 15
) -> None:
    """New partitions answer 'not leader' for a moment; wait so first sends do not retry."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        described = await admin.describe_topics(names)
        if all(
            t.get("error_code", 0) == 0
            and t.get("partitions")
            and all(p.get("leader", -1) >= 0 for p in t["partitions"])
            for t in described
        ):
            await asyncio.sleep(0.5)  # leaders known to metadata may still refuse a moment
            return
        await asyncio.sleep(0.1)
