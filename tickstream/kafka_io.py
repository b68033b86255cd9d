"""Kafka plumbing shared by every component: topic creation and client settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from tickstream.settings import ConfigError, Settings
from tickstream.topics import Topics

log = logging.getLogger(__name__)

LIVE_FETCH_WAIT_MS = 500
"""``fetch_max_wait_ms`` of the desk path's consumers that answer at the first record (the
stream processor's, the gateway's of signals): a long poll, which costs a record nothing
as long as every fetch holds every partition (``HELD_RECORDS_BACKOFF_S``). With
``fetch_min_bytes=1`` the broker answers as soon as one record is there.

They polled for 10 ms before, a hundred fetches a second when idle. Over 30 s, an idle
gateway took 8.7-10.3% of a core with the long poll instead of 14.2-14.7%, and 4.2-4.5%
with the ticks' wait below too; the broker, serving it, 5.6-6.1% with both instead of
14.7-15.1%. The gateway hop's p99 at 1k-20k ticks/s was no worse with both (5.4-10.2 ms
against 6.5-13.1, two alternating pairs of ``bench latency``). The processor: see
``HELD_RECORDS_BACKOFF_S``."""

HELD_RECORDS_BACKOFF_S = 10.0
"""How long the fetchers of the desk path hold back, for records fetched and not yet taken.

aiokafka sends at most one fetch request to a broker at a time. While some partition's
fetched records wait to be taken, it sends none to that broker; after its prefetch
backoff (100 ms) it sends one without that partition. Faust stops taking a partition's
records while its stream's buffer is full: a fetch then left the partition out, and its
next records waited for that fetch, which a long poll on quiet partitions holds for the
whole ``fetch_max_wait_ms`` (Faust's 1,500 ms). Measured as stalls of 1.5 s in the desk
latency at 5,000 ticks/s, and a processor falling behind at 20,000 with its CPU mostly
idle. So the processor polled for 10 ms, and an idle processor asked the broker a hundred
times a second.

Held back for 10 s, a fetch always holds every partition: the records Faust does not take
wait for a buffer that is full anyway, and a stream that stopped for good (which nothing
here does) loses the other partitions for 10 s, not for ever. Then the poll can be long:
over 30 s, an idle processor took 0.6-0.7% of a core instead of 6.1-6.7%. Under load,
fetches return with the ticks either way: in two alternating pairs of full ``bench
latency`` runs the processor's CPU against the producer's was the same (1.71 and 1.73
at 1,000 ticks/s, against 1.67 and 1.74), and ``bench analytics``' processor, in four
alternating pairs, 95-124k ticks/s against 100-118k.

The gateway's consumers take a fetch's records at once, but serve them before they take
more, and let the sessions' writers run on a burst: a fetch that came back meanwhile, over
100 ms before the next take, has its partition left out of the one after. So they hold
back too (``hold_fetched_records``). A gateway made to come back 150 ms after each take,
signals sent one at a time to one partition of three: every other signal waited 493-519
ms (the long poll) with aiokafka's backoff, none over 168 ms held back. (Its start-up on
200,000 signals, no client connected, took 4.1-4.4 s either way: served without a pause,
a take leaves the fetcher no turn to run.)"""

BULK_FETCH_MIN_BYTES = 16 << 10
BULK_FETCH_WAIT_MS = 20
"""The gateway's fetches of ticks and aggregates: at least 16 KB, or whatever 20 ms gave.

With ``fetch_min_bytes=1`` the broker answers a fetch as soon as one message is there, so
under load the gateway fetched without pause: writing fetch requests was a fifth of its
profile at 20,000 ticks/s, and its signals shared those fetches. Signals have a consumer of
their own that answers at the first record, so this costs ticks at most 20 ms, which the desks'
default conflation (250 ms) hides. Measured in alternating runs: the gateway hop's p99 at
20,000 ticks/s went from 36-48 ms to 18-23 (45 in one run on a much busier machine); two
consumers that both kept the live poll gave 31-38 ms. The wait was 5 ms at first, but
16 KB is some 10 ms of ticks at 20,000 a second (about 70 bytes a tick): the gateway
fetched ticks two hundred times a second at every rate, and the broker answered each. At
20 ms, in three alternating pairs of full ``bench latency`` runs, at 1,000 ticks/s the
gateway took 8-9% of a core instead of 18-20%, the broker 16-18% instead of 22-27%, and
the record breaks' p99 was 13.6-15.0 ms against 15.1-19.5; plain ticks with no
conflation took 7 ms more (p50 16.5-17.0 ms against 8.7-10.0)."""


def hold_fetched_records(consumer: AIOKafkaConsumer) -> None:
    """Make a started aiokafka consumer's fetcher send no fetch that leaves out a partition
    whose fetched records wait to be taken (``HELD_RECORDS_BACKOFF_S``). aiokafka has no
    setting for it: its fetcher reads this attribute whenever a fetch returns records."""
    consumer._fetcher._prefetch_backoff = HELD_RECORDS_BACKOFF_S


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
