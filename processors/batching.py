"""The ticks stream in batches that close as soon as they have caught up.

The core is far cheaper per tick on a batch than tick by tick, but a lone tick must not
wait for company: so a batch closes as soon as no further message is waiting (a lone tick
is processed when it arrives), or when it holds ``processor_batch`` messages, or
``processor_batch_ms`` after its first message. Under load the messages that arrive
while one batch is processed make the next, so batches grow with the load by themselves.
Kept apart from the agent because when a batch closes is subtle enough to be tested on
its own, against a stream with no broker behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import faust


async def batches(
    stream: faust.StreamT[Any],
    max_events: int,
    within_s: float,
    highwater: Callable[[Any], int | None] = lambda tp: None,
) -> AsyncIterator[list[faust.EventT[Any]]]:
    """The stream's events in batches that close as soon as they have caught up.

    A batch closes when no further event is waiting, neither in the stream's buffers nor
    in Kafka as far as the last fetch knows (``highwater``: a partition's high watermark,
    None if unknown); or when it has ``max_events``; or ``within_s`` after its first
    event. So a lone event leaves at once, while a backlog (a replay, a restart) is taken
    in batches of up to ``within_s`` as before. Events are not acked here.

    A task moves events from the stream into a bounded queue of its own, so that a batch
    can close on time even when no event comes (a rebalance suspends the stream, and
    waits for the events taken so far to be acked).
    """
    buffered = stream.channel.queue  # what Faust has fetched for this stream, not yet taken
    queue: asyncio.Queue[faust.EventT[Any]] = asyncio.Queue(maxsize=max_events)
    taken: dict[Any, int] = {}  # partition -> offset of the last event taken from the stream

    async def pump() -> None:
        async for event in stream.events():
            await queue.put(event)

    def more_coming() -> bool:
        if not queue.empty() or not buffered.empty():
            return True
        for tp, offset in taken.items():
            with contextlib.suppress(Exception):  # a partition no longer assigned
                high = highwater(tp)
                if high is not None and high - 1 > offset:
                    return True
        return False

    async def take(timeout: float | None) -> faust.EventT[Any] | None:
        """The next event; None after ``timeout`` seconds without one, or at the end."""
        if queue.empty():
            getting = asyncio.ensure_future(queue.get())
            await asyncio.wait(
                {getting, pumping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not getting.done():
                getting.cancel()
                if pumping.done():
                    pumping.result()  # the stream failed: so does this
                return None
            event = getting.result()
        else:
            event = queue.get_nowait()
        taken[event.message.tp] = event.message.offset
        return event

    pumping = asyncio.create_task(pump())
    try:
        while not pumping.done() or not queue.empty():
            first = await take(None)
            if first is None:  # the stream ended
                return
            batch = [first]
            deadline = time.monotonic() + within_s
            while len(batch) < max_events and more_coming():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                event = await take(left)
                if event is None:
                    break
                batch.append(event)
            yield batch
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
