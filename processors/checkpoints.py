"""When the processor's state is written, and the input acks that wait for it.

At most every ``processor_batch_ms`` (and that long after the last batch at the latest;
less often when the state is big, so that writing it takes at most about a tenth of the
time, its encoding's rests aside) the snapshots of the partition cores that changed are
written to the compacted state topic. Snapshots are sent only once the broker has
confirmed every output of the batches they reflect, and their messages are acked only
once it has confirmed the snapshots too: so no offset is committed ahead of the state,
and no state skips an output that never landed. While Faust waits for every event taken
to be acked (a stop, a rebalance: ``hurry``), a snapshot is due after every batch:
otherwise the wait would last the interval out, tens of seconds for a big state, and a
stop would meet its kill timeout with the state unsaved. Kept apart from the agent,
which only hands each processed batch over (``Checkpoints.processed``).

Partitions lost in a rebalance are released here too (``release``): snapshotted, acked,
and only then forgotten, under the same lock as a batch, so that no batch touches a
core between its last snapshot and its drop, and no snapshot of a partition another
worker now owns is ever written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import faust

from processors.core import Encoding, Outgoing
from processors.outbox import Outbox
from processors.partitions import PartitionCores

T = TypeVar("T")

SNAPSHOT_STEP_PAUSE_S = 0.002
"""How long a snapshot's encoding rests after each step (some 0.3 ms of work), unless a
stop or a rebalance waits for the snapshot.

Run flat out, an encoding is a burst of the processor's CPU (5.0-5.4 ms for 40,000 held
ticks, 8,000 of them new, measured apart). The two cores are shared with the broker, the
publisher and the gateway, and a record break on its way through them meanwhile waited
for a core: in three alternating pairs at 20k ticks/s, the rests made the desk's p99
16.8-21.4 ms against 23.6-29.6. The encoding takes no less CPU, only longer; the rests
do not count in the interval between snapshots (ten times the last one's time), so
snapshots come as often as before.
"""


@dataclass(slots=True)
class _Save:
    """A snapshot on its way: encoded and its outputs confirmed (``preparing``), then
    written and its events acked (``writing``)."""

    began: float
    events: list[faust.EventT[Any]]
    mark: int  # the outbox's sends it reflects
    preparing: asyncio.Task[list[Outgoing]]
    writing: asyncio.Task[None] | None = None
    rested_s: float = 0.0  # its encoding's rests (SNAPSHOT_STEP_PAUSE_S): not its cost


class Checkpoints:
    """The events processed since the last snapshot, acked once a snapshot reflects them.

    A snapshot is taken on the batch path (a capture: a copy of the state, for a
    fraction of a millisecond), then encoded a step at a time between the next batches
    (``between_batches``) and written while they go on; the next one starts once it is
    written. ``lock`` is held around a batch and every step of a snapshot that touches
    the cores or the outbox; ``processed`` and ``save`` must be called under it.
    """

    def __init__(
        self,
        cores: PartitionCores,
        outbox: Outbox,
        states: Outbox,
        stream: faust.StreamT[Any],
        every_s: float,
        hurry: Callable[[], bool] = lambda: False,
        step_pause_s: float = SNAPSHOT_STEP_PAUSE_S,
    ) -> None:
        self.lock = asyncio.Lock()  # a batch and a snapshot's steps never interleave
        self._cores = cores
        self._outbox = outbox
        self._states = states  # the snapshots' sends, settled apart from the outputs
        self._stream = stream  # a noack() stream: its events are acked here, by ``save``
        self._min_every_s = every_s
        self._hurry = hurry  # true while Faust waits for every event taken to be acked
        self._every_s = every_s  # longer when the state is big: writing it takes <= ~10%
        self._step_pause_s = step_pause_s
        self._unsaved: list[faust.EventT[Any]] = []  # processed, in no snapshot on its way
        self._saved_at = time.monotonic()
        self._saving: _Save | None = None

    def due(self) -> bool:
        return self._hurry() or time.monotonic() - self._saved_at >= self._every_s

    def _pause_s(self) -> float:
        """The rest after a step of the encoding on its way, counted apart from its cost;
        none while a stop or a rebalance waits."""
        pause_s = 0.0 if self._hurry() else self._step_pause_s
        if self._saving is not None:
            self._saving.rested_s += pause_s
        return pause_s

    async def processed(self, events: list[faust.EventT[Any]]) -> None:
        """Events whose outputs are in the outbox: acked with the next snapshot, which is
        taken now if it is due."""
        self._unsaved.extend(events)
        await self._step()

    async def save(self) -> None:
        """Every event processed so far in a written snapshot, and acked, on return."""
        await self._finish()
        if self._unsaved:
            self._start()
            await self._finish()

    def abandon(self) -> None:
        """Stop the snapshot on its way (the worker stops): its events stay unacked."""
        if self._saving is not None:
            self._saving.preparing.cancel()
            if self._saving.writing is not None:
                self._saving.writing.cancel()
            self._saving = None

    async def _step(self) -> None:
        """Move the snapshot on its way on, and start the next one if it is due."""
        await self._advance()
        if self._saving is None and self._unsaved and self.due():
            self._start()

    def _start(self) -> None:
        encoding = self._cores.capture()
        mark = self._outbox.mark()
        events, self._unsaved = self._unsaved, []
        preparing = asyncio.create_task(self._prepare(encoding, mark))
        self._saving = _Save(time.monotonic(), events, mark, preparing)

    async def _prepare(self, encoding: Encoding[list[Outgoing]], mark: int) -> list[Outgoing]:
        snapshots = await between_batches(encoding, self._pause_s)
        await self._outbox.delivered(mark)  # a snapshot must never skip an output that did not land
        return snapshots

    async def _advance(self) -> None:
        """The snapshot on its way a step further, if its last step is done."""
        save = self._saving
        if save is None:
            return
        if save.writing is None:
            if not save.preparing.done():
                return
            snapshots = save.preparing.result()
            await self._outbox.settle(save.mark)  # at once, unless a send failed
            await self._states.put(snapshots)
            save.writing = asyncio.create_task(self._write(save.events))
        elif save.writing.done():
            save.writing.result()
            self._saving = None
            self._saved_at = time.monotonic()
            busy_s = self._saved_at - save.began - save.rested_s
            self._every_s = max(self._min_every_s, 10 * busy_s)

    async def _write(self, events: list[faust.EventT[Any]]) -> None:
        await self._states.settle()
        for event in events:
            await self._stream.ack(event)

    async def _finish(self) -> None:
        while (save := self._saving) is not None:
            await asyncio.wait((save.writing or save.preparing,))
            await self._advance()

    async def release(self, partitions: set[int]) -> list[int]:
        """Snapshot everything processed, then drop the cores of ``partitions``.

        Called when the worker loses them (a rebalance); Faust has waited for every event
        taken to be acked by then, so this mostly finds nothing left to write.
        """
        async with self.lock:
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
                        await self._step()
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
            self.abandon()
            with contextlib.suppress(asyncio.CancelledError):
                await saver


async def between_batches(encoding: Encoding[T], pause_s: Callable[[], float] = lambda: 0.0) -> T:
    """An encoding run on the event loop a step at a time, resting ``pause_s()`` after each.

    A step takes a fraction of a millisecond (core.SnapshotEncoder), so a batch, a fetch
    or a send that comes due waits for one step at most. In a thread the encoding went
    on through them, and each of their turns at the GIL waited for it. The rest spreads
    its CPU out (``SNAPSHOT_STEP_PAUSE_S``).
    """
    while True:
        try:
            next(encoding)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(pause_s())
