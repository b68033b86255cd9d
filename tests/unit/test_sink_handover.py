"""Sinks of one group: a partition that moves never fails a commit, nor is committed past
rows the sink did not insert."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from sinks.handover import Handover, commit_owned

A, B = TopicPartition("ns.ticks", 0), TopicPartition("ns.ticks", 1)


class Consumer:
    def __init__(self, owned: set[TopicPartition], refuse: bool = False) -> None:
        self.owned = owned
        self.refuse = refuse
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.owned

    async def commit(self, offsets: dict[TopicPartition, object]) -> None:
        if self.refuse:
            raise CommitFailedError("the group has already rebalanced")
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})  # type: ignore[attr-defined]


def test_only_owned_partitions_are_committed() -> None:
    consumer = Consumer({A})
    assert asyncio.run(commit_owned(consumer, {A: 10, B: 20}))  # type: ignore[arg-type]
    assert consumer.commits == [{A: 10}]  # B moved: its next owner re-reads it
    assert not asyncio.run(commit_owned(Consumer(set()), {A: 10}))  # type: ignore[arg-type]


def test_a_commit_refused_mid_rebalance_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    assert not asyncio.run(commit_owned(Consumer({A, B}, refuse=True), {A: 10}))  # type: ignore[arg-type]
    assert "rebalancing" in caplog.text


def test_a_rebalance_waits_for_the_insert_in_flight_boundedly() -> None:
    async def scenario() -> tuple[bool, bool]:
        landed = asyncio.Event()

        async def insert(delay: float) -> None:
            await asyncio.sleep(delay)
            landed.set()

        quick = asyncio.create_task(insert(0.05))
        await Handover(lambda: quick, wait_s=5).on_partitions_revoked([A])
        waited = landed.is_set()
        landed.clear()
        slow = asyncio.create_task(insert(10))
        await Handover(lambda: slow, wait_s=0.1).on_partitions_revoked([A])
        gave_up = not landed.is_set()
        slow.cancel()
        return waited, gave_up

    assert asyncio.run(scenario()) == (True, True)
