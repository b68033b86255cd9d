"""Faust's Kafka transport, its consumer run in the app's own event loop, with a fetcher
that never leaves a partition out of a fetch (see ``HELD_RECORDS_BACKOFF_S``).

Faust runs its consumer in a thread of its own, with an event loop of its own: every
fetch then crosses between two threads twice, and the two loops take turns at the
interpreter (the switch interval) on every batch; at a desk's rates that was about a
tenth of the processor's CPU. aiokafka is asynchronous through and through, so the
consumer's service is run here as a task of the app's loop instead (``_InLoop``), and
the calls Faust delegates to it (a fetch, a commit) are awaited where they are made. Faust
would still hand each call to a queue, served by worker tasks of the same loop, and its
result back, each hand-over a write to the loop's wake-up pipe: hundreds of fetches a
second, whatever the tick rate. Called directly, the processor's CPU against the
producer's in the same run fell from 1.62-1.94 to 1.53-1.81 (three alternating pairs of
``tickstream bench latency`` at 1k and 20k ticks/s).

Faust also builds that consumer with ``fetch_max_wait_ms=1500`` and no setting to change
it; with a quiet partition beside a busy one, and the busy one's records held while
Faust's buffer was full, that long poll held back the busy one's next fetch (aiokafka's
one fetch in flight per broker), so ticks waited up to 1.5 s before the processor saw
them. The consumer's wait is set on the consumer Faust has just built (before it starts,
when aiokafka reads it), and its fetcher's backoff once it has started. A broker lost
while the consumer starts prints no traceback. The app also says when Faust waits for the
events taken to be acked (``LiveApp.waiting_for_acks``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver
from mode.utils.futures import maybe_async

from processors.broker_errors import broker_away
from tickstream.kafka_io import LIVE_FETCH_WAIT_MS, hold_fetched_records


class _InLoop:
    """Takes the place of mode's worker thread: runs the consumer's service as a task of
    the loop it was built on, which is the app's."""

    def __init__(self, service: _ConsumerThread) -> None:
        self.service = service
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        try:
            await self.service._serve()
        except Exception:  # already reported (on_crash) and raised where it was started
            self.service.set_shutdown()

    def stop(self) -> None:
        """The service has shut down when this is called: nothing to join."""

    def is_alive(self) -> bool:
        return self._task is not None and not self._task.done()


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    Worker = _InLoop  # type: ignore[assignment]

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)

    async def _gather_remaining_tasks(self) -> None:
        """mode cancels every task left on the thread's loop, which is the app's here: the
        consumer's own tasks end with it (aiokafka stops them), the app's must not."""

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The consumer is served by this loop: a call delegated to it is made here."""
        return await maybe_async(fun(*args, **kwargs))

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = LIVE_FETCH_WAIT_MS  # read by its fetcher at start
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        hold_fetched_records(self._consumer)

    # A broker lost while the consumer starts also fails the worker's start, which
    # run_worker reports in one line and waits out; mode would add a traceback on stderr.

    def on_crash(self, msg: str, *fmt: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]  # mode prints its own report and the traceback
        if exc is None or not broker_away(exc):
            super().on_crash(msg, *fmt, **kwargs)


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LiveTransport(driver.Transport):
    Consumer = _Consumer


class LiveApp(faust.App):
    """A Faust app whose consumer polls the broker with tickstream's fetch wait, and which
    tells its agent when a stop or a rebalance waits for the events taken to be acked."""

    _waiting_for_acks = False

    def waiting_for_acks(self) -> bool:
        """True while Faust holds a stop or a rebalance until every event taken is acked:
        the agent's acks wait for a snapshot, which is then wanted at once."""
        return self._waiting_for_acks

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        self._waiting_for_acks = True
        try:
            await super()._consumer_wait_empty(consumer, logger)
        finally:
            self._waiting_for_acks = False

    def _new_transport(self) -> Any:
        return LiveTransport(self.conf.broker_consumer, self)
