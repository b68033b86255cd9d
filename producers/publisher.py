"""Send any source to Kafka: validate, publish accepted ticks and dead letters, flush.

The hot path is batched twice: accepted ticks of one symbol are packed into one
Kafka message (up to ``ticks_per_message``), and messages go into one aiokafka
batch per partition (partitioned by symbol as Kafka's default partitioner would).
What is pending is shipped at most once per ``linger_ms``: under a steady stream a
symbol's ticks of that long share a message, but the first ticks after a quiet spell
leave as soon as the source pauses (a live tick waits for no timer). A bounded
number of batches may await acknowledgement at once, so a slow broker slows the
source down instead of filling memory.

Order: each symbol's ticks reach its partition in the order validation accepted them,
whichever task ships them (the publishing task a full message, the linger task the
rest, concurrent ``publish`` calls each their own) and however long the broker keeps a
batch waiting; ``_PartitionBatches`` says how (quiet symbols' heartbeats: heartbeats.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from producers.heartbeats import HeartbeatSender, monotonic_ms
from producers.records import RawTick, Rejection
from producers.validation import REASONS, Row, Validator
from tickstream import metrics
from tickstream.contracts import encode_end_of_input, encode_tick_rows
from tickstream.groups import GroupLayout
from tickstream.service_runtime import PacedCollections
from tickstream.settings import Settings
from tickstream.topics import Topics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PublishReport:
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.by_reason.items())) or "none"
        rate = self.inputs / self.seconds if self.seconds else 0.0
        return (
            f"{self.inputs} inputs: {self.accepted} ticks published, {self.rejected} rejected "
            f"({reasons}) in {self.seconds:.1f}s ({rate:,.0f}/s)"
        )


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
        "max_request_size": 4 << 20,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


class PublishFailed(RuntimeError):
    """Publishing cannot go on (the background sender died): the command stops with it."""


def _report_linger_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the background sender failed: %r; publishing stops", task.exception())


RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


class _PartitionBatches:
    """One open aiokafka batch per (topic, partition); full batches are submitted.

    Order: a message's place on its partition is fixed when it is *queued* (``put``, a
    plain call: no await between a symbol's rows leaving its pending buffer and their
    place in the queue), not when some task gets round to it. ``pump`` moves the queue
    into batches strictly in queue order, one pumper at a time; a message leaves the
    queue only once it is in a batch, and a batch leaves ``_open`` only once aiokafka
    took it, so a pumper interrupted anywhere (a broker away, a cancelled linger task)
    leaves nothing for the next one to overtake or lose.
    """

    def __init__(self, producer: AIOKafkaProducer, max_in_flight: int) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], Any] = {}
        self._queue: deque[tuple[str, int, bytes, bytes]] = deque()
        self._in_flight: deque[tuple[asyncio.Future[Any], int, float, str]] = deque()
        self._max_in_flight = max_in_flight
        self._lock = asyncio.Lock()
        self.stalled, self.stall_events = False, 0  # broker refusals (heartbeats.py)

    def put(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        """Queue a message: its order among the partition's messages is decided here."""
        self._queue.append((topic, partition, key, value))

    async def pump(self) -> None:
        """Move every queued message into its partition's open batch, in queue order."""
        async with self._lock:
            await self._pump()

    async def _pump(self) -> None:
        queue = self._queue
        while queue:
            topic, partition, key, value = queue[0]
            slot = (topic, partition)
            batch = self._open.get(slot)
            if batch is None:
                batch = self._open[slot] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                if batch.record_count() == 0:
                    queue.popleft()
                    raise ValueError(f"message of {len(value)} bytes does not fit a batch")
                await self._submit(slot)  # the message stays first in the queue meanwhile
                continue
            queue.popleft()
            metrics.PRODUCER_BYTES.labels(topic).inc(len(value))

    async def _submit(self, slot: tuple[str, int]) -> None:
        batch = self._open.get(slot)
        if batch is None:
            return
        count = batch.record_count()
        if count == 0:
            del self._open[slot]
            return
        batch.close()
        future = await self._send(batch, slot)
        del self._open[slot]  # only now: interrupted before, the next submit sends it
        self.stalled = False
        self._in_flight.append((future, count, time.perf_counter(), slot[0]))
        metrics.PRODUCER_BUFFER.inc(count)
        while len(self._in_flight) > self._max_in_flight:
            await self._settle_oldest()

    async def _send(self, batch: Any, slot: tuple[str, int]) -> asyncio.Future[Any]:
        """Enqueue a closed batch, however long the broker is away; never drop it.

        aiokafka raises KafkaTimeoutError when the partition's queue does not drain within
        its request timeout (a broker away), *before* the batch is enqueued: sending the
        same batch again therefore cannot double it. The source waits meanwhile, and so
        does every other message: the lock is held, so nothing can overtake this batch.
        """
        delay_s, waited_s = RETRY_FIRST_S, 0.0
        while True:
            try:
                return await self._producer.send_batch(batch, slot[0], partition=slot[1])
            except KafkaTimeoutError:
                self.stalled, self.stall_events = True, self.stall_events + 1
                metrics.PRODUCER_ERRORS.labels(slot[0]).inc()
                log.warning(
                    "%s[%d]: the broker takes no batch (%.0f s so far); holding %d records,"
                    " retrying",
                    slot[0], slot[1], waited_s, batch.record_count(),
                )  # fmt: skip
                await asyncio.sleep(delay_s)
                waited_s += delay_s
                delay_s = min(delay_s * 2, RETRY_MAX_S)

    async def _settle_oldest(self) -> None:
        future, count, started, topic = self._in_flight[0]
        try:
            await asyncio.shield(future)  # a cancelled waiter leaves the batch awaitable
        except Exception:
            self._in_flight.popleft()
            metrics.PRODUCER_BUFFER.dec(count)
            metrics.PRODUCER_ERRORS.labels(topic).inc()
            raise
        self._in_flight.popleft()
        metrics.PRODUCER_BUFFER.dec(count)
        metrics.PRODUCER_SEND_SECONDS.observe(time.perf_counter() - started)

    async def submit_all(self) -> None:
        async with self._lock:
            await self._pump()
            for slot in list(self._open):
                await self._submit(slot)

    async def flush(self) -> None:
        """Submit everything queued and open; wait until the broker acknowledged it all."""
        async with self._lock:
            await self._pump()
            for slot in list(self._open):
                await self._submit(slot)
            while self._in_flight:
                await self._settle_oldest()


class Publisher:
    """Validates a source's inputs and publishes ticks and rejections to Kafka."""

    def __init__(
        self,
        settings: Settings,
        validator: Validator,
        *,
        max_in_flight: int = 16,
        ticks_per_message: int = 500,
        linger_ms: int | None = None,  # None: settings.publish_linger_ms
        on_rejection: Callable[[Rejection], None] | None = None,
        producer_options: dict[str, Any] | None = None,
        clock_ms: Callable[[], float] = monotonic_ms,
        collect_when_due: Callable[[], object] | None = None,  # None: PacedCollections()
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.namespace)
        self.validator = validator
        self.report = PublishReport()
        self._on_rejection = on_rejection or _RejectionLog()
        self._producer = make_producer(settings, **(producer_options or {}))
        self._max_in_flight = max_in_flight
        self._batches: _PartitionBatches | None = None
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[str, int] = {}
        self._partitioner = DefaultPartitioner()
        self._ticks_per_message = ticks_per_message
        self._linger_s = (settings.publish_linger_ms if linger_ms is None else linger_ms) / 1000
        self._pending: dict[str, list[Row]] = {}  # symbol -> rows not yet in a message
        self._newest_ts: dict[str, int] = {}
        self._accepted: dict[str, dict[str, int]] = {}  # source -> symbol -> ticks accepted
        self._counted: dict[tuple[str, str], int] = {}  # (source, symbol) -> in the counter
        self._linger_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # something is pending: the linger task ships it
        self._collect_when_due = collect_when_due or PacedCollections()
        beat = settings.heartbeat_ms > 0  # 0: no heartbeats
        self.heartbeats = HeartbeatSender(settings, self._partition, clock_ms) if beat else None

    async def __aenter__(self) -> Publisher:
        try:
            await self._producer.start()
            self._batches = _PartitionBatches(self._producer, self._max_in_flight)
            for topic in (self.topics.ticks, self.topics.dlq):
                self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        except BaseException:
            # no __aexit__ follows a failed (or cancelled: a Ctrl-C right after start-up)
            # __aenter__, and an unstopped producer leaks its connections
            await self._producer.stop()
            raise
        self._linger_task = asyncio.create_task(self._linger())
        self._linger_task.add_done_callback(_report_linger_failure)
        if self.heartbeats is not None:
            self.heartbeats.start(self._batches, lambda: self._pending)
        return self

    def _check_linger(self) -> None:
        """A failed linger task ends the command with its error: never a half-working
        publisher whose pending ticks nobody ships."""
        task = self._linger_task
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise PublishFailed(f"the publisher's background sender failed: {error!r}")

    async def __aexit__(self, *exc: object) -> None:
        if self._linger_task is not None:
            self._linger_task.cancel()
        if self.heartbeats is not None:
            self.heartbeats.stop()
        try:
            if exc[0] is None:
                await self.flush()
        finally:
            await self._producer.stop()

    async def _linger(self) -> None:
        """Ship what is pending: at most once per linger_ms, at once after a quiet spell.

        Within linger_ms of the last shipment, pending ticks wait for the rest of it, so a
        steady stream makes one message per symbol per linger_ms, not one per tick (every
        message costs the broker, the processor and the gateway). After a quiet spell they
        leave as soon as the source pauses: the publishing task yielded to the event loop
        and took no tick meanwhile (a paced or live source awaits its next input), so
        waiting longer would only add latency; a source that keeps taking ticks between two
        looks (a fast replay) fills its messages for up to linger_ms.
        """
        loop = asyncio.get_running_loop()
        report = self.report
        counted_at = loop.time()
        shipped_at = counted_at - self._linger_s  # the start is a quiet spell
        while True:
            await self._wake.wait()
            self._wake.clear()
            woke = loop.time()
            rest = shipped_at + self._linger_s - woke
            if rest > 0:
                await asyncio.sleep(rest)
            else:
                taken = report.accepted + report.rejected
                while True:
                    await asyncio.sleep(0)
                    now_taken = report.accepted + report.rejected
                    if now_taken == taken or loop.time() >= woke + self._linger_s:
                        break
                    taken = now_taken
            shipped_at = loop.time()
            count = shipped_at - counted_at >= 0.1  # the counters: ten times a second at most
            if count:
                counted_at = shipped_at
            await self._ship_pending(count)
            if self._batches is not None:
                await self._batches.submit_all()
            self._collect_when_due()

    def _count_published(self) -> None:
        """Prometheus counters are updated at most ten times a second, not per tick (hot path).

        The hot loop only bumps running totals (never swapped out, so it may keep a
        reference across awaits); what the counters lack is the difference.
        """
        counted = self._counted
        for source, per_symbol in self._accepted.items():
            for symbol, n in per_symbol.items():
                key = (source, symbol)
                done = counted.get(key, 0)
                if n > done:
                    metrics.PRODUCER_TICKS.labels(source, symbol).inc(n - done)
                    counted[key] = n
        for symbol, ts_ms in self._newest_ts.items():
            metrics.LAST_TICK_TS.labels("producer", symbol).set(ts_ms / 1000)

    async def _ship_pending(self, count: bool = True) -> None:
        """Queue every pending message at once (no await until all are queued), then pump.

        Queuing them one by one across awaits let the publishing task queue a newer full
        message of a symbol not yet reached ahead of that symbol's older ticks.
        """
        if count:
            self._count_published()
        pending, self._pending = self._pending, {}
        for symbol, rows in pending.items():
            self._queue_message(symbol, rows)
        assert self._batches is not None
        await self._batches.pump()

    def _queue_message(self, symbol: str, rows: list[Row]) -> None:
        """One message of a symbol's rows, in the ticks topic's batch format, queued."""
        assert self._batches is not None
        key = symbol.encode()
        self._batches.put(
            self.topics.ticks, self._partition(symbol, key), key, encode_tick_rows(rows)
        )
        if self.heartbeats is not None:  # once per message, not per tick
            self.heartbeats.shipped(symbol, self._newest_ts[symbol])

    async def flush(self) -> None:
        """Everything accepted so far is acknowledged by the broker when this returns."""
        self._check_linger()
        await self._ship_pending()
        if self._batches is not None:
            await self._batches.flush()

    async def publish(
        self, source: AsyncIterator[RawTick], progress: Callable[[int], None] | None = None
    ) -> PublishReport:
        """Validate and publish everything ``source`` yields, then flush.

        Each input is decided as soon as the source yields it (a live tick never waits
        for others): the common outcome, one accepted tick, costs a row appended to its
        symbol's pending message and two running totals.
        """
        started = time.perf_counter()
        count = 0
        name = "unknown"
        validator = self.validator
        feed_row = validator.feed_row
        accepted: list[Row] = []
        rejected: list[Rejection] = []
        totals = self._accepted.setdefault(name, {})
        batches = self._batches
        assert batches is not None
        async for raw in source:
            count += 1
            if raw.source != name:
                name = raw.source
                _zero_counters(name, (self.topics.ticks, self.topics.dlq))
                totals = self._accepted.setdefault(name, {})
            row = feed_row(raw, accepted, rejected)
            if row is not None:
                self.report.accepted += 1
                if self._take(row, totals):
                    await batches.pump()
                    self._wake.set()  # its aiokafka batch is open until the linger task ships it
            elif accepted or rejected:
                await self._emit(accepted, rejected, name)
                accepted, rejected = [], []
            if count % 1000 == 0:
                self._check_linger()
                if progress is not None:
                    progress(count)
        validator.finish_rows(accepted, rejected)
        await self._emit(accepted, rejected, name)
        await self.flush()
        self.report.inputs += count
        self.report.seconds += time.perf_counter() - started
        if progress is not None:
            progress(count)
        return self.report

    def _take(self, row: Row, totals: dict[str, int]) -> bool:
        """Add an accepted row to its symbol's pending message; True once that message was
        full and is queued (the caller pumps: queuing here, with no await since the row
        was accepted, is what keeps the symbol's order)."""
        symbol = row[0]
        pending = self._pending  # re-read each time: the linger task swaps it out
        rows = pending.get(symbol)
        if rows is None:
            rows = pending[symbol] = []
            self._wake.set()
        rows.append(row)
        totals[symbol] = totals.get(symbol, 0) + 1
        if row[1] > self._newest_ts.get(symbol, 0):
            self._newest_ts[symbol] = row[1]
        if len(rows) < self._ticks_per_message:
            return False
        del pending[symbol]
        self._queue_message(symbol, rows)
        return True

    async def _emit(self, accepted: list[Row], rejected: list[Rejection], source: str) -> None:
        """Accepted rows to their pending messages, rejections to the DLQ, in order."""
        batches = self._batches
        assert batches is not None
        totals = self._accepted.setdefault(source, {})
        for row in accepted:
            self._take(row, totals)
        self.report.accepted += len(accepted)
        if accepted or rejected:
            self._wake.set()
        for rejection in rejected:
            key = (rejection.symbol or rejection.source).encode()
            partitions = self._partitions[self.topics.dlq]
            partition = self._partitioner(key, partitions, partitions)
            batches.put(self.topics.dlq, partition, key, rejection.encode())
            metrics.PRODUCER_REJECTED.labels(rejection.source, rejection.reason).inc()
            self.report.rejected += 1
            self.report.by_reason[rejection.reason] = (
                self.report.by_reason.get(rejection.reason, 0) + 1
            )
            self._on_rejection(rejection)
        await batches.pump()

    def _partition(self, symbol: str, key: bytes) -> int:
        partition = self._partition_of.get(symbol)
        if partition is None:
            partitions = self._partitions[self.topics.ticks]
            # keyed by the symbol's group: symbols a pair or sync group ties share a
            # partition, so one processor core sees them all (tickstream.groups)
            group = GroupLayout.from_settings(self.settings).group_of(symbol).encode()
            partition = self._partitioner(group, partitions, partitions)
            self._partition_of[symbol] = partition
        return partition

    async def end_of_input(self, run_id: str) -> None:
        """Mark the end of a replay on every partition, after everything before it landed.

        Only the ticks topic gets the marker: the processor passes it on to the dead-letter
        topic after its own dead letters, which come after the publisher's (flushed here).
        """
        assert self._batches is not None
        await self.flush()
        if self.heartbeats is not None:
            self.heartbeats.clocks.clear()  # everything before the marker is final
        partitions = self._partitions[self.topics.ticks]
        for p in partitions:
            marker = encode_end_of_input(run_id, p, len(partitions))
            self._batches.put(self.topics.ticks, p, b"", marker)
        await self._batches.flush()


def _zero_counters(source: str, topics: tuple[str, ...]) -> None:
    """Export every rejection reason and error series at 0, so alerts see them from the start."""
    for reason in REASONS:
        metrics.PRODUCER_REJECTED.labels(source, reason)
    for topic in topics:
        metrics.PRODUCER_ERRORS.labels(topic)


_LOGGED_REJECTIONS_MAX = 100


class _RejectionLog:
    """Log each rejection with its position, up to a cap, so a bad file cannot flood the log."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, rejection: Rejection) -> None:
        self.count += 1
        if self.count <= _LOGGED_REJECTIONS_MAX:
            log.warning("rejected %s", rejection.describe())
        if self.count == _LOGGED_REJECTIONS_MAX:
            log.warning("further rejections are not logged; see the DLQ / rejected_ticks")
