"""When the processor's state is written, and the input acks that wait for it.

At most every ``processor_batch_ms`` (and that long after the last batch at the latest;
less often when the state is big, so that writing it takes at most about a tenth of the
time) the snapshots of the partition cores that changed are written to the compacted
state topic. Snapshots are sent only once the broker has confirmed every output of the
batches they reflect, and their messages are acked only once it has confirmed the
snapshots too: so no offset is committed ahead of the state, and no state skips an
output that never landed. Kept apart from the agent, which only hands each processed
batch over (``Checkpoints.processed``).

Partitions lost in a rebalance are released here too (``release``): snapshotted, acked,
and only then forgotten, under the same lock as a batch, so that no batch touches a
core between its last snapshot and its drop, and no snapshot of a partition another
worker now owns is ever written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import faust

from processors.outbox import Outbox
from processors.partitions import PartitionCores


class Checkpoints:
    """The events processed since the last snapshot, acked once a snapshot reflects them.

    ``lock`` is held around a batch and its snapshot, so that a batch and a snapshot
    never interleave; ``processed`` and ``save`` must be called under it.
    """

    def __init__(
        self,
        cores: PartitionCores,
        outbox: Outbox,
        stream: faust.StreamT[Any],
        state_topic: str,
        every_s: float,
    ) -> None:
        self.lock = asyncio.Lock()  # a batch and a snapshot never interleave
        self._cores = cores
        self._outbox = outbox
        self._stream = stream  # a noack() stream: its events are acked here, by ``save``
        self._state_topic = state_topic
        self._min_every_s = every_s
        self._every_s = every_s  # longer when the state is big: writing it takes <= ~10%
        self._unsaved: list[faust.EventT[Any]] = []  # processed, not yet in a written snapshot
        self._saved_at = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._saved_at >= self._every_s

    async def processed(self, events: list[faust.EventT[Any]]) -> None:
        """Events whose outputs are in the outbox: acked with the next snapshot, which is
        written now if it is due."""
        self._unsaved.extend(events)
        if self.due():
            await self.save()

    async def save(self) -> None:
        """Write the snapshot once every output before it is confirmed; then ack."""
        began = time.monotonic()
        snapshots = self._cores.snapshots()  # encoded while the outputs are on their way
        outbox = self._outbox
        await outbox.settle()  # a snapshot must never skip an output that did not land
        await outbox.put(snapshots)
        await outbox.settle()
        self._saved_at = time.monotonic()
        self._every_s = max(self._min_every_s, 10 * (self._saved_at - began))
        done = self._unsaved[:]
        self._unsaved.clear()
        for event in done:
            await self._stream.ack(event)

    async def release(self, partitions: set[int]) -> list[int]:
        """Snapshot everything processed, then drop the cores of ``partitions``.

        Called when the worker loses them (a rebalance); Faust has waited for every event
        taken to be acked by then, so this mostly finds nothing left to write.
        """
        async with self.lock:
            if self._unsaved:
                await self.save()
            return self._cores.drop(partitions)

    @contextlib.asynccontextmanager
    async def saving_when_quiet(self) -> AsyncIterator[None]:
        """Within it, a due snapshot is also written when no batch comes to write it.

        A failure there ends the task that entered (the agent) at once, not at a next batch
        that may not come: it is raised there in place of the cancellation.
        """
        me = asyncio.current_task()
        failed: list[BaseException] = []

        async def when_quiet() -> None:
            try:
                while True:
                    await asyncio.sleep(self._min_every_s)
                    async with self.lock:
                        if self._unsaved and self.due():
                            await self.save()
            except Exception as exc:  # ends the agent now, not at a next batch that may not come
                failed.append(exc)
                if me is not None:
                    me.cancel()

        saver = asyncio.create_task(when_quiet())
        try:
            yield
        except asyncio.CancelledError:
            if failed and me is not None:
                me.uncancel()
                raise failed[0] from None
            raise
        finally:
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver
