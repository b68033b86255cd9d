"""The Kafka side of the gateway: ticks, aggregates and signals in, deltas to the sessions out.

Two aiokafka consumers, together assigned every partition of the three topics (no consumer
group: each gateway instance sees everything and keeps no offsets), feed ``BoardState``
and ``SignalLog`` and hand each message to the sessions: one for signals, whose fetches
return at their first record, and one for ticks and aggregates, fetching in bulk
(``BULK_FETCH_MIN_BYTES``), so that a signal never waits behind a fetch of ticks. The
signals topic is read whole (replays come from it); ticks and aggregates only their last
``backfill`` messages per partition, enough for the snapshot state.

Record and rolling breaks arrive twice on the signals topic: as ``signal_event`` rows
(provisional at the tick, then confirmed or retracted) and as plain exact rows (for the
analyst tables). Desks get one of the two, by this rule: once a signal event of a kind
has been seen, the plain rows of that kind only update the board state (ATH, level grids);
until then (a processor that sends no events, or topic history from before it did) the
plain rows are served as their signals' confirmations, with the same id an event would
carry, so the switch from one to the other duplicates nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from sinks.gateway.config import GatewayConfig
from sinks.gateway.protocol import (
    CONFIRMED,
    EVENT_ROW_KIND,
    EVENTED_KINDS,
    ROW_KIND_TO_SUB,
    SIGNAL_KINDS,
    Delta,
    confirmed_frame,
    event_ts,
    row_frame,
    row_key,
    signal_step,
)
from sinks.gateway.session import Sessions
from sinks.gateway.state import BoardState, SignalLog
from tickstream import metrics
from tickstream.contracts import TICK_FIELDS, decode_ticks_message
from tickstream.kafka_io import (
    BULK_FETCH_MIN_BYTES,
    BULK_FETCH_WAIT_MS,
    LIVE_FETCH_WAIT_MS,
    ensure_topics,
    hold_fetched_records,
)
from tickstream.topics import Topics

log = logging.getLogger(__name__)

# bytes queued to clients after which the consumer lets the writers (and sockets) drain
_BURST_BYTES = 64 << 10


class Feed:
    """The consumers and what they do with each message (in order within each consumer)."""

    def __init__(
        self,
        config: GatewayConfig,
        state: BoardState,
        log: SignalLog,
        sessions: Sessions,
        counts: dict[str, int],
        ready: asyncio.Event,
    ) -> None:
        self.config = config
        self.state = state
        self.log = log
        self.sessions = sessions
        self.counts = counts
        self.ready = ready  # set once caught up with the topics' ends as of start-up
        topics = Topics(config.namespace)
        self._roles = {
            topics.ticks: "ticks",
            topics.aggregates: "aggregates",
            topics.signals: "signals",
        }
        self._consumers: list[AIOKafkaConsumer] = []  # signals', then ticks' and aggregates'
        self._initial_end: dict[TopicPartition, int] = {}  # still to catch up with
        # subscription kinds of which a signal event has been seen: their plain rows are
        # board state only from then on
        self.evented: set[str] = set()
        self._latency: dict[tuple[str, str], Any] = {}  # (status, signal) -> histogram child

    async def start(self) -> None:
        await ensure_topics(self.config.settings())
        tps = await self._partitions()
        signals = [tp for tp in tps if self._roles[tp.topic] == "signals"]
        market = [tp for tp in tps if tp not in signals]
        try:
            # signals must not wait on quiet partitions, nor behind a fetch of ticks
            for name, mine, wait_ms, min_bytes in (
                ("signals", signals, LIVE_FETCH_WAIT_MS, 1),
                ("market", market, BULK_FETCH_WAIT_MS, BULK_FETCH_MIN_BYTES),
            ):
                self._consumers.append(await self._consumer(name, mine, wait_ms, min_bytes))
        except BaseException:
            await self.stop()
            raise
        if not self._initial_end:
            self.ready.set()

    async def _consumer(
        self, name: str, tps: list[TopicPartition], wait_ms: int, min_bytes: int
    ) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.config.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.config.namespace}.gateway.{name}",
            fetch_max_wait_ms=wait_ms,
            fetch_min_bytes=min_bytes,
        )
        await consumer.start()
        hold_fetched_records(consumer)
        try:
            consumer.assign(tps)
            begin = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
        except BaseException:
            await consumer.stop()
            raise
        for tp in tps:
            if self._roles[tp.topic] == "signals":
                start = begin[tp]  # the whole history: replays come from it
            else:
                start = max(begin[tp], end[tp] - self.config.backfill)
            consumer.seek(tp, start)
            if end[tp] > begin[tp]:
                self._initial_end[tp] = end[tp]
        return consumer

    async def stop(self) -> None:
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.stop()

    def assignment(self) -> list[TopicPartition]:
        """The partitions this gateway reads, once per consumer reading it (so a partition
        read twice shows twice)."""
        return [tp for consumer in self._consumers for tp in consumer.assignment()]

    async def _partitions(self) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.config.kafka_bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(list(self._roles))
        finally:
            await admin.close()
        return [
            TopicPartition(topic["topic"], part["partition"])
            for topic in described
            for part in sorted(topic["partitions"], key=lambda p: p["partition"])
        ]

    async def run(self) -> None:
        assert self._consumers, "start() first"
        async with asyncio.TaskGroup() as group:
            for consumer in self._consumers:
                group.create_task(self._consume(consumer))

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        roles, sessions = self._roles, self.sessions
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway: Kafka fetch failed; retrying")
                await asyncio.sleep(1)
                continue
            for tp, messages in batches.items():
                role = roles[tp.topic]
                for msg in messages:
                    self._ingest(role, msg.value, msg.timestamp)
                    if sessions.burst > _BURST_BYTES:
                        # let the writers (and the sockets) drain a burst before the next one:
                        # a client is slow when it cannot keep up, not when one fetch is big
                        sessions.burst = 0
                        await asyncio.sleep(0)
            if not self.ready.is_set():
                await self._check_ready(consumer)

    async def _check_ready(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment() & self._initial_end.keys():
            if await consumer.position(tp) >= self._initial_end[tp]:
                del self._initial_end[tp]
        if not self._initial_end:
            log.info("gateway caught up: %d signals in the replay log", len(self.log))
            self.ready.set()

    def _ingest(self, role: str, value: bytes | None, created_ms: int | None) -> None:
        if role == "ticks":
            self._ingest_ticks(value or b"", created_ms)
            return
        try:
            doc = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            self._undecodable(role)
            return
        rows = doc if isinstance(doc, list) else [doc]
        for row in rows:
            if not isinstance(row, dict) or "control" in row:
                if not isinstance(row, dict):
                    self._undecodable(role)
                continue
            if row.get("kind") == EVENT_ROW_KIND:
                self._ingest_event(role, row, created_ms)
                continue
            kind = ROW_KIND_TO_SUB.get(row.get("kind"))  # type: ignore[arg-type]
            if kind is None or kind == "ticks":
                self._undecodable(role)
                continue
            try:
                key = row_key(kind, row)
                self.state.apply_row(kind, row)  # raises on a malformed row: nothing logged
                if kind in self.evented:
                    self.counts["rows_in"] += 1  # its signal events are what desks get
                    continue
                if kind in EVENTED_KINDS:
                    sid, frame = confirmed_frame(kind, row)
                    delta = self.log.add_step(
                        sid,
                        CONFIRMED,
                        event_ts(kind, row),
                        lambda seq, k=kind, f=frame, key=key: Delta(
                            k, key, created_ms, doc=f, seq=seq, status=CONFIRMED
                        ),
                    )
                    if delta is not None:
                        self.state.apply_signal(sid, delta)
                elif kind in SIGNAL_KINDS:
                    delta = self.log.add(
                        kind,
                        row,
                        lambda seq, k=kind, r=row, key=key: Delta(
                            k, key, created_ms, doc=row_frame(k, r), seq=seq
                        ),
                    )
                else:
                    delta = Delta(kind, key, created_ms, doc=row_frame(kind, row))
                    self.counts["rows_in"] += 1
                    self.sessions.fanout(delta)
                    continue
            except (KeyError, TypeError, ValueError):
                self._undecodable(role)
                continue
            if delta is None:
                self.counts["duplicate_signals"] += 1
                continue
            self.counts["signals_in"] += 1
            self.sessions.fanout(delta)

    def _ingest_event(self, role: str, row: dict[str, Any], created_ms: int | None) -> None:
        """One step of a signal's life: logged per (id, status), fanned out, timed."""
        try:
            step = signal_step(row)
            if step.status == CONFIRMED:  # exact: the board state may take it as its row
                self.state.apply_row(step.sub_kind, step.row)
        except (KeyError, TypeError, ValueError):
            self._undecodable(role)
            return
        self.evented.add(step.sub_kind)
        delta = self.log.add_step(
            step.id,
            step.status,
            step.ts_ms,
            lambda seq: Delta(
                step.sub_kind, step.key, created_ms, doc=step.frame, seq=seq, status=step.status
            ),
        )
        if delta is None:
            self.counts["duplicate_signals"] += 1
            return
        self.counts["signals_in"] += 1
        self.counts["signal_events_in"] += 1
        self.state.apply_signal(step.id, delta)
        self.sessions.fanout(delta)
        # the desk latency of live signals only: history read at start-up is hours old
        if step.recv_ms is not None and self.ready.is_set():
            labels = (step.status, step.signal)
            hist = self._latency.get(labels)
            if hist is None:
                hist = self._latency[labels] = metrics.SIGNAL_LATENCY.labels(*labels)
            hist.observe(max(0.0, time.time() - step.recv_ms / 1000))

    def _ingest_ticks(self, value: bytes, created_ms: int | None) -> None:
        """Ticks as the contract decodes them (a batch or one JSON tick); bad ones counted."""
        decoded = decode_ticks_message(value)
        for _ in decoded.bad:
            self._undecodable("ticks")
        conflate = self.config.conflation_ms > 0
        state, offer, fanout = self.state, self.sessions.ticks.offer, self.sessions.fanout
        for tick in decoded.ticks:
            row = [getattr(tick, f) for f in TICK_FIELDS]
            state.apply_tick(row)
            delta = Delta("ticks", tick.symbol, created_ms, row=row)
            if conflate:
                offer(tick.symbol, delta)
            else:
                fanout(delta)
        self.counts["ticks_in"] += len(decoded.ticks)

    def _undecodable(self, role: str) -> None:
        self.counts["undecodable"] += 1
        metrics.GATEWAY_UNDECODABLE.labels(role).inc()
