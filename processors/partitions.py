"""One processor core per owned ticks partition: the state a worker holds, and moves.

Processor workers form one consumer group and share the ticks partitions; each partition
holds whole symbol groups (tickstream.groups), so a core per partition computes exactly
what one core of the whole topic would, and a partition's state can move between workers
alone. ``PartitionCores`` routes a batch's events to their partition's core, creating the
core on the partition's first event from the partition's last snapshot (so a partition
gained in a rebalance is restored before anything of it is processed), hands the
snapshots of the cores that changed to the checkpoints, and drops the cores of partitions
the worker lost. What a dropped core processed after its last snapshot is redone by the
new owner from the committed offset, which never passes that snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from processors.config import state_settings
from processors.core import (
    Encoding,
    Incoming,
    Outgoing,
    ProcessorCore,
    StepOutput,
    check_restorable,
    decode_state,
    finish,
)
from processors.kernels.analytics import AnalyticsConfig
from processors.state_store import load_snapshots, state_key
from tickstream.groups import GroupLayout
from tickstream.settings import Settings
from tickstream.topics import Topics

log = logging.getLogger(__name__)

Load = Callable[[Collection[int]], Awaitable[dict[int, bytes]]]
"""Reads the last snapshots of the given partitions (those it has)."""


class PartitionCores:
    def __init__(
        self,
        topics: Topics,
        config: AnalyticsConfig,
        partitions: int,
        layout: GroupLayout,
        load: Load,
        **core_options: Any,
    ) -> None:
        self.topics = topics
        self.config = config
        self.partitions = partitions
        self.layout = layout
        self._load = load
        self._core_options = core_options  # e.g. the clock, in tests
        self.cores: dict[int, ProcessorCore] = {}
        self._changed: set[int] = set()  # partitions processed since their last snapshot

    @property
    def applied(self) -> dict[int, int]:
        """Each owned partition's last offset reflected in its state."""
        return {p: core.applied[p] for p, core in self.cores.items() if p in core.applied}

    async def step(self, batch: Iterable[Incoming]) -> StepOutput:
        """Each event processed by its partition's core, in order within a partition."""
        split: dict[int, list[Incoming]] = {}
        for msg in batch:
            split.setdefault(msg.partition, []).append(msg)
        await self._ensure(split)
        out = StepOutput()
        for p, messages in split.items():
            done = self.cores[p].step(messages)
            out.messages.extend(done.messages)
            out.ticks += done.ticks
            self._changed.add(p)
        return out

    async def _ensure(self, partitions: Collection[int]) -> None:
        """Cores for partitions met for the first time, restored from their snapshots."""
        new = [p for p in partitions if p not in self.cores]
        if not new:
            return
        blobs = await self._load(new)
        for p in new:
            core = ProcessorCore(
                self.topics,
                self.config,
                self.partitions,
                partition=p,
                layout=self.layout,
                **self._core_options,
            )
            blob = blobs.get(p)
            if blob is not None:
                core.restore(blob)
            if blob is None:
                log.info("ticks partition %d: processed here from its start (no state)", p)
            else:
                log.info(
                    "ticks partition %d: processed here, its state restored (%d bytes) at %d",
                    p, len(blob), core.applied.get(p, -1),
                )  # fmt: skip
            self.cores[p] = core

    def snapshots(self) -> list[Outgoing]:
        """The snapshots of the cores that processed something since their last one."""
        return finish(self.capture())

    def capture(self) -> Encoding[list[Outgoing]]:
        """Those snapshots as of now, encoded in steps run later (ProcessorCore.capture)."""
        changed, self._changed = self._changed, set()
        topic = self.topics.processor_state
        captured = [(p, self.cores[p].capture()) for p in sorted(changed) if p in self.cores]

        def encode() -> Encoding[list[Outgoing]]:
            out = []
            for p, steps in captured:
                out.append(Outgoing(topic, state_key(p), (yield from steps), 0))
            return out

        return encode()

    def drop(self, partitions: Iterable[int]) -> list[int]:
        """Forget the cores of partitions this worker no longer owns (snapshot them first:
        what they processed since is otherwise redone by the next owner)."""
        dropped = []
        for p in partitions:
            if self.cores.pop(p, None) is not None:
                dropped.append(p)
            self._changed.discard(p)
        return sorted(dropped)


def loader(bootstrap: str, state_topic: str) -> Load:
    """Reads the state topic once per call, for every partition asked at once."""

    async def load(partitions: Collection[int]) -> dict[int, bytes]:
        blobs = await load_snapshots(bootstrap, state_topic)
        return {p: blobs[p] for p in partitions if p in blobs}

    return load


async def check_state(settings: Settings) -> int:
    """Refuse, before anything runs, a namespace whose state another group layout wrote
    (``LayoutChanged``), other state-shaping settings folded (``StateSettingsChanged``) or
    an older processor wrote (``LegacyState``); returns how many
    partitions have a snapshot."""
    topics = Topics(settings.namespace)
    current = GroupLayout.from_settings(settings)
    shaping = state_settings(settings)
    blobs = await load_snapshots(settings.kafka_bootstrap, topics.processor_state)
    for blob in blobs.values():
        check_restorable(settings.namespace, decode_state(blob), current, shaping)
    return len(blobs)
