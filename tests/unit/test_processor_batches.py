"""The processor's batches close as soon as they have caught up (no timer to wait out), take
a backlog whole, and close on time even when an announced event never comes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from processors.app import batches

TP = ("ticks", 0)


def event(offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=TP, offset=offset))


class FakeStream:
    """A stream whose buffer (``channel.queue``) holds what has arrived, not yet taken."""

    def __init__(self, bursts: list[list[int]], gap_s: float = 0.0, hang: bool = False) -> None:
        self.pending: list[int] = []
        self.channel = SimpleNamespace(queue=SimpleNamespace(empty=lambda: not self.pending))
        self.bursts = bursts  # offsets arriving together, gap_s apart
        self.gap_s = gap_s
        self.hang = hang  # after the last burst, wait forever (a suspended stream)

    async def events(self) -> AsyncIterator[Any]:
        for burst in self.bursts:
            if not self.pending:
                await asyncio.sleep(self.gap_s)
            self.pending.extend(burst)
            while self.pending:
                yield event(self.pending.pop(0))
        if self.hang:
            await asyncio.Event().wait()


def offsets(batch: list[Any]) -> list[int]:
    return [e.message.offset for e in batch]


def collect(stream: FakeStream, max_events: int, within_s: float, high: int | None = None):  # type: ignore[no-untyped-def]
    async def main() -> list[list[int]]:
        found = batches(stream, max_events, within_s, lambda tp: high)  # type: ignore[arg-type]
        return [offsets(b) async for b in found]

    return asyncio.run(main())


def test_what_is_waiting_makes_one_batch() -> None:
    assert collect(FakeStream([[1, 2, 3, 4, 5]]), 100, 10.0) == [[1, 2, 3, 4, 5]]


def test_a_lone_event_leaves_without_waiting_for_the_next() -> None:
    stream = FakeStream([[1], [2, 3], [4]], gap_s=0.05)
    assert collect(stream, 100, 10.0) == [[1], [2, 3], [4]]


def test_at_most_max_events() -> None:
    assert collect(FakeStream([[1, 2, 3, 4, 5]]), 2, 10.0) == [[1, 2], [3, 4], [5]]


def test_a_stream_that_never_pauses_is_cut_by_the_window() -> None:
    assert collect(FakeStream([[1, 2, 3]]), 100, 0.0) == [[1], [2], [3]]


def test_a_backlog_in_kafka_is_taken_in_one_batch() -> None:
    """Events trickle in from the fetcher, but the high watermark says more are there."""
    stream = FakeStream([[1], [2], [3]], gap_s=0.02)
    assert collect(stream, 100, 10.0, high=4) == [[1, 2, 3]]


def test_closes_on_time_when_announced_events_never_come() -> None:
    """A rebalance suspends the stream and waits for the events taken to be acked."""

    async def main() -> list[int]:
        stream = FakeStream([[1, 2, 3]], hang=True)
        found = batches(stream, 100, 0.1, lambda tp: 10)  # type: ignore[arg-type]
        try:
            return offsets(await asyncio.wait_for(anext(found), timeout=5))
        finally:
            await found.aclose()  # type: ignore[attr-defined]

    assert asyncio.run(main()) == [1, 2, 3]
