"""Several sinks in one consumer group: partitions move between them, rows never get lost.

The sink commits a batch's offsets once ClickHouse holds its rows. When the group
rebalances (a sink started, stopped or killed), a batch may be in flight or still being
filled with messages of partitions this sink is about to lose. Two rules keep every table
exact:

- before partitions are given up, the insert in flight is given a bounded wait to land
  and commit (``Handover``), so the next owner re-reads as little as possible;
- a commit only ever names partitions the sink still owns, and a commit the group
  refuses because it is rebalancing is skipped, not fatal (``commit_owned``). Either way
  the rows are in ClickHouse and the offsets are not past anything uninserted: the next
  owner re-reads from the last commit, and the tables' row identities (ReplacingMergeTree,
  read with FINAL) absorb the repeats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)

HANDOVER_WAIT_S = 30.0
"""How long a rebalance waits for the insert in flight (ClickHouse may be down: the other
sinks must not wait for it forever)."""


class Handover(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, inflight: Callable[[], asyncio.Task[None] | None], wait_s: float = HANDOVER_WAIT_S
    ) -> None:
        self._inflight = inflight
        self._wait_s = wait_s

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        task = self._inflight()
        if revoked and task is not None and not task.done():
            await asyncio.wait({task}, timeout=self._wait_s)  # its failure is the sink's to raise

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


async def commit_owned(consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, int]) -> bool:
    """Commit the offsets of the partitions still owned; False if nothing was committed."""
    owned = consumer.assignment()
    kept = {tp: OffsetAndMetadata(off, "") for tp, off in offsets.items() if tp in owned}
    if len(kept) < len(offsets):
        log.info(
            "%d partition(s) moved to another sink before their commit: it re-reads them, "
            "and the tables absorb the repeats",
            len(offsets) - len(kept),
        )
    if not kept:
        return False
    try:
        await consumer.commit(kept)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning(
            "offsets not committed, the sink group is rebalancing (%s): the rows are in "
            "ClickHouse; their partitions' next owner re-reads them, and the tables absorb "
            "the repeats",
            exc,
        )
        return False
    return True
