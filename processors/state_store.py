"""The processor's state snapshots on their compacted topic, and reading the last ones back.

Each ticks partition has a core of its own (``processors.partitions``), and each core's
snapshot (kernel state plus the input offsets it reflects) is written under its
partition's key, ``state_key(p)``, to a compacted topic: the topic keeps the last snapshot
of every partition, so whichever worker owns a partition next resumes exactly where its
state left off (``load_snapshots``; the backfill reads the same snapshots to learn a
namespace's clock). How and when snapshots are written is ``processors.checkpoints``;
this module holds what the topic holds and how it is read.

Before per-partition state, one snapshot of the whole market was written under
``STATE_KEY``. It cannot be cut into partitions without re-running the kernels, so a
namespace holding one is refused with the way out (``LegacyState``).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.broker_errors import BROKER_RETURN_WAIT_S, broker_away, error_text
from tickstream.settings import ConfigError

log = logging.getLogger(__name__)

STATE_KEY = b"analytics"  # the one whole-market snapshot of processors before scale-out
STATE_MAX_BYTES = 64 << 20


def state_key(partition: int) -> bytes:
    return STATE_KEY + b"/" + str(partition).encode()


class LegacyState(ConfigError):
    """The namespace's state is one snapshot of every partition together."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            "namespace",
            f"{topic} holds the state of a tickstream older than per-partition state (one "
            "snapshot for every partition), which cannot be split between workers: start a "
            "new --namespace and replay the ticks into it (docs/scaling.md)",
        )


async def load_snapshots(
    bootstrap: str, topic: str, wait_s: float = BROKER_RETURN_WAIT_S
) -> dict[int, bytes]:
    """The last snapshot of each ticks partition on the compacted state topic ({} on a
    first start); raises LegacyState for a namespace of an older processor.

    A broker that went away (the worker may have just started) is waited for, up to
    ``wait_s``: an agent that failed here would be restarted by Faust in place, and the
    events the failed one had taken would be lost.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    waiting = False
    while True:
        try:
            last = await _read_state(bootstrap, topic)
            break
        except Exception as exc:
            if not broker_away(exc) or loop.time() > deadline:
                raise
            if not waiting:
                waiting = True
                log.warning(
                    "waiting for the Kafka broker at %s to read the processor state back "
                    "(%s); trying for up to %d s",
                    bootstrap,
                    error_text(exc),
                    wait_s,
                )
            await asyncio.sleep(1.0)
    if STATE_KEY in last:
        raise LegacyState(topic)
    prefix = STATE_KEY + b"/"
    return {int(k[len(prefix) :]): v for k, v in last.items() if k.startswith(prefix)}


async def _read_state(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    """The last value of every key on the (single-partition) topic."""
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
        last: dict[bytes, bytes] = {}
        if end == 0:
            return last
        # seek() is immediate; seek_to_beginning() is lazy and position() could still report
        # the end, so the loop below read nothing and the state was silently not restored
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000)
            for record in batches.get(tp, []):
                if record.key is not None and record.value is not None:
                    last[record.key] = record.value
        return last
    finally:
        await consumer.stop()
