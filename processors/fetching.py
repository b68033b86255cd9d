"""Faust's Kafka transport with a short fetch wait (see ``LIVE_FETCH_WAIT_MS``).

Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` and no setting to change
it; with a quiet partition beside a busy one, that long poll holds back the busy one's
next fetch (aiokafka's one fetch in flight per broker), so ticks waited up to 1.5 s
before the processor saw them. These subclasses change that one value, on the
consumer Faust has just built (before it starts, when aiokafka reads it), and keep the
consumer thread from printing tracebacks for a broker lost while it starts. The app also
says when Faust waits for the events taken to be acked (``LiveApp.waiting_for_acks``).
"""

from __future__ import annotations

import sys
from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver

from processors.broker_errors import broker_away
from tickstream.kafka_io import LIVE_FETCH_WAIT_MS


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = LIVE_FETCH_WAIT_MS  # read by its fetcher at start
        return consumer

    # A broker lost while this thread starts also fails the worker's start, which
    # run_worker reports in one line and waits out; mode would add two tracebacks on stderr.

    def on_crash(self, msg: str, *fmt: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]  # mode prints its own report and the traceback
        if exc is None or not broker_away(exc):
            super().on_crash(msg, *fmt, **kwargs)

    def _start_thread(self) -> None:
        try:
            super()._start_thread()
        except Exception as exc:  # raised on, Python's thread hook would print it
            if not broker_away(exc):
                raise


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LiveTransport(driver.Transport):
    Consumer = _Consumer


class LiveApp(faust.App):
    """A Faust app whose consumer polls the broker with the short fetch wait, and which
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
