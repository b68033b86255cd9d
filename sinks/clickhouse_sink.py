"""Kafka -> ClickHouse, at least once on the wire and exactly once in the tables.

Offsets are committed only after ClickHouse acknowledged every insert holding
rows of those messages. A crash between the two re-sends rows on restart; the
tables' row identities (ReplacingMergeTree, see schema.py) make that harmless,
and a retried insert carries the same deduplication token so ClickHouse drops
it outright (a lost acknowledgement costs nothing). While ClickHouse refuses
inserts the sink retries with backoff and takes no more messages, so memory
stays bounded (one batch being inserted, at most one more being filled); it
resumes by itself.

The hot path does no per-tick Python work: a ticks message is a JSON array of
rows in the table's column order, so its bytes go to ClickHouse as they are
(inserter.py); Python only checks that each message decodes. Inserts are pipelined
one deep: while batch k is inserted (chDB releases the GIL), batch k+1 is fetched and
checked.

Refused rows (quarantine.py): a row ClickHouse certainly refuses for its data, or a
time DateTime64 cannot hold, goes to ``<ns>.quarantine`` with its reason. Offsets are
committed once every row is inserted or its quarantine record acknowledged by the broker.

Several sinks share the partitions as one consumer group; how a partition moves between
them without a row lost is handover.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sinks import quarantine
from sinks.handover import Handover, commit_owned
from sinks.inserter import INGEST_TABLE, TICK_COLUMNS, Block, Inserter
from sinks.quarantine import REASON_CLASSES, Refused, data_error_class, time_columns, time_problem
from sinks.rows import TABLES, Eof, rows_of
from sinks.schema import apply_ticks_ttl, migrate
from tickstream import metrics
from tickstream.clickhouse import ClickHouse, connect
from tickstream.contracts import (
    EndOfInput,
    decode_ticks_message,
    encode_tick_rows,
    encode_ticks,
)
from tickstream.contracts.ticks import row_problem
from tickstream.settings import Settings
from tickstream.topics import Topics

# the names tests, benchmarks and the CLI take from here
__all__ = [
    "INGEST_TABLE",
    "TICK_COLUMNS",
    "Block",
    "ClickHouseSink",
    "Inserter",
    "SinkStats",
    "data_error_class",
    "merge_partitions_since",
]

log = logging.getLogger(__name__)

_RECV = TICK_COLUMNS.index("recv_ts")
_TS = TICK_COLUMNS.index("ts")
# messages taken per poll; a batch is sent as soon as it is full, even mid-poll
_MAX_RECORDS = 500


def _good_row(row: Any) -> bool:
    return row_problem(row) is None


@dataclass(slots=True)
class _Pending:
    blocks: dict[str, Block] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    eofs: list[tuple[TopicPartition, Eof]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)  # rows refused before any insert
    count: int = 0
    newest_recv_ms: int | None = None  # recv time of the last tick taken (latency metric)
    newest_ts_ms: int | None = None  # its event time
    since: float = field(default_factory=time.monotonic)

    def columns(self, table: str) -> Block:
        block = self.blocks.get(table)
        if block is None:
            width = len(TABLES[table].columns)
            block = self.blocks[table] = Block(table, columns=[[] for _ in range(width)])
        return block

    def json(self, table: str) -> Block:
        block = self.blocks.get(table)
        if block is None:
            block = self.blocks[table] = Block(table, json=[])
        return block


@dataclass(slots=True)
class SinkStats:
    """What the sink did so far (for tests, benchmarks and logs; metrics hold the same)."""

    records: int = 0  # Kafka messages taken from the consumer
    rows_inserted: int = 0
    rows_quarantined: int = 0  # refused by ClickHouse for data reasons, on the quarantine topic
    inserts: int = 0  # acknowledged inserts (one per table per batch)
    commits: int = 0
    pending_rows: int = 0  # rows taken from Kafka, not yet acknowledged by ClickHouse
    max_pending_rows: int = 0
    first_record_at: float | None = None  # time.monotonic() of the first message
    last_commit_at: float | None = None


class ClickHouseSink:
    """Consumes tickstream's topics and writes every table."""

    def __init__(
        self,
        settings: Settings,
        *,
        ch: ClickHouse | None = None,
        inserter_factory: Callable[[ClickHouse, str], Inserter] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.namespace)
        self.group = self.topics.group("sink")
        self._ch = ch
        self._inserter_factory = inserter_factory or Inserter
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None  # the quarantine topic's
        self._eofs: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self._drained: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._stopping = asyncio.Event()
        self._lag_reported = 0.0
        self._lag_series: set[TopicPartition] = set()  # partitions with a lag gauge
        self._inflight: asyncio.Task[None] | None = None
        self._started_at = 0  # ClickHouse server time (epoch s) at start()
        self._time_columns: dict[str, tuple[int, ...]] = {}  # DateTime64 columns' indices
        self.stats = SinkStats()

    @property
    def ch(self) -> ClickHouse:
        assert self._ch is not None, "sink not started"
        return self._ch

    async def start(self) -> None:
        if self._ch is None:
            self._ch = ClickHouse(await asyncio.to_thread(connect, self.settings))
        # ClickHouse's clock, not ours: parts' modification_time is the server's
        self._started_at = int(
            await self.ch.run(self.ch.client.command, "SELECT toUnixTimestamp(now())")
        )
        db = self.settings.clickhouse_database
        version = await self.ch.run(migrate, self.ch.client, db)
        log.info("ClickHouse schema at version %d", version)
        self._time_columns = await self.ch.run(time_columns, self.ch.client, db)
        await self.ch.run(apply_ticks_ttl, self.ch.client, db, self.settings.ticks_ttl_days)
        self.inserter = self._inserter_factory(self.ch, db)
        for table in TABLES:  # error series exist at 0 before the first error (alert rules)
            metrics.SINK_ERRORS.labels(table, "insert")
        metrics.SINK_ERRORS.labels("ticks", "invalid_row")
        for table in TABLES:
            for reason_class in REASON_CLASSES:
                metrics.SINK_QUARANTINED.labels(table, reason_class)
        for topic in self.topics.sink_inputs():
            metrics.SINK_ERRORS.labels(topic, "undecodable")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=3_600_000,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
        )
        self._consumer.subscribe(
            topics=self.topics.sink_inputs(), listener=Handover(lambda: self._inflight)
        )
        await self._consumer.start()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            max_request_size=1 << 20,
        )
        await self._producer.start()

    async def stop(self) -> None:
        self._stopping.set()
        try:
            if self._consumer is not None:
                await self._consumer.stop()
                self._consumer = None
        finally:  # the consumer failing to leave its group must not leak the producer
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    def close(self) -> None:
        if self._ch is not None:
            self._ch.close()
            self._ch = None

    async def wait_drained(self, run_id: str) -> None:
        await self._drained[run_id].wait()

    def is_drained(self, run_id: str) -> bool:
        return self._drained[run_id].is_set()

    async def run(self) -> None:
        """Consume and insert until stopped.

        Before batch k+1 is sent, batch k must be acknowledged and its offsets committed,
        so commits stay in order. Once an insert fails, no message is taken until it lands.
        """
        consumer = self._consumer
        assert consumer is not None
        pending = _Pending()
        flush_s = self.settings.sink_flush_ms / 1000
        max_rows = self.settings.sink_batch_rows
        stats = self.stats
        try:
            while not self._stopping.is_set():
                inflight = self._inflight
                if inflight is not None and (inflight.done() or not self.inserter.healthy):
                    await self._settle()  # ClickHouse failing: take nothing until it lands
                batches = await consumer.getmany(
                    timeout_ms=min(200, self.settings.sink_flush_ms), max_records=_MAX_RECORDS
                )
                for tp, records in batches.items():
                    if stats.first_record_at is None and records:
                        stats.first_record_at = time.monotonic()
                    for record in records:
                        self._route(tp, record.offset, record.value, pending)
                        if pending.count >= max_rows:  # full: send before taking more
                            await self._submit(pending)
                            pending = _Pending()
                due = time.monotonic() - pending.since >= flush_s
                if pending.eofs or (due and pending.offsets):
                    await self._submit(pending)
                    pending = _Pending()
                elif not pending.offsets:
                    pending.since = time.monotonic()
                await self._report_lag(consumer)
            await self._settle()
        finally:
            if self._inflight is not None and not self._inflight.done():
                self._inflight.cancel()

    async def _submit(self, pending: _Pending) -> None:
        """Start inserting ``pending`` once the previous batch is acknowledged and committed."""
        await self._settle()
        self._inflight = asyncio.create_task(self._flush(pending), name="sink-flush")
        await asyncio.sleep(0)  # let the insert reach the ClickHouse thread before routing on

    async def _settle(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight  # re-raises what the flush raised (e.g. a failed commit)

    def _route(self, tp: TopicPartition, offset: int, value: bytes, pending: _Pending) -> None:
        pending.offsets[tp] = offset + 1
        pending.first_offsets.setdefault(tp, offset)
        self.stats.records += 1
        added = 0
        try:
            if tp.topic == self.topics.ticks:
                doc = orjson.loads(value)
                if type(doc) is not list or not all(map(_good_row, doc)):
                    # another shape (a single JSON tick), or rows the processor refuses and
                    # dead-letters: only the ticks the contract accepts go to the table
                    decoded = decode_ticks_message(value)
                    marker = decoded.control
                    if isinstance(marker, EndOfInput):  # a heartbeat is for the processor
                        pending.eofs.append((tp, Eof(marker.run_id, marker.partitions)))
                    if decoded.bad:
                        metrics.SINK_ERRORS.labels("ticks", "invalid_row").inc(len(decoded.bad))
                    doc = orjson.loads(encode_ticks(decoded.ticks))
                    value = encode_tick_rows(doc)
                if doc:
                    source = (tp.topic, tp.partition, offset, 0)
                    pending.json("ticks").add_message(value, len(doc), source)
                    added = len(doc)
                    pending.newest_recv_ms = doc[-1][_RECV]
                    pending.newest_ts_ms = doc[-1][_TS]
            else:
                # the whole message decodes before any of its rows is taken
                items = list(rows_of(self.topics, tp.topic, value))
                for item in items:
                    if isinstance(item, Eof):
                        pending.eofs.append((tp, item))
                        continue
                    table, row = item
                    source = (tp.topic, tp.partition, offset, added)
                    added += 1
                    problem = time_problem(table, row, self._time_columns.get(table, ()))
                    if problem is not None:  # ClickHouse would store it, and fail every read
                        columns = TABLES[table].columns
                        named = dict(zip(columns, row, strict=True))
                        pending.refused.append(Refused(table, named, source, problem, "range"))
                        continue
                    pending.columns(table).add_row(row, source)
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            metrics.SINK_ERRORS.labels(tp.topic, "undecodable").inc()
            log.error(
                "%s[%d]@%d: skipped undecodable message (%s)", tp.topic, tp.partition, offset, exc
            )
        pending.count += added
        stats = self.stats
        stats.pending_rows += added
        if stats.pending_rows > stats.max_pending_rows:
            stats.max_pending_rows = stats.pending_rows

    async def _flush(self, pending: _Pending) -> None:
        span = ",".join(
            f"{tp.topic}:{tp.partition}:{pending.first_offsets[tp]}-{end}"
            for tp, end in sorted(pending.offsets.items())
        )
        stats = self.stats
        refused = list(pending.refused)
        for table, block in pending.blocks.items():
            if not block.rows:
                continue
            block.span = span
            block.token = hashlib.sha1(f"{table}|{span}".encode()).hexdigest()
            refused_here = await self.inserter.insert(block)
            stats.inserts += 1
            stats.rows_inserted += block.rows - len(refused_here)
            refused += refused_here
        if refused:  # acknowledged by the broker before the offsets move past them
            await self._quarantine(refused)
        if pending.newest_recv_ms is not None:
            metrics.E2E_LATENCY.labels("clickhouse").observe(
                max(0.0, time.time() - pending.newest_recv_ms / 1000)
            )
        if pending.newest_ts_ms is not None:
            metrics.EVENT_LAG.labels("clickhouse").observe(
                max(0.0, time.time() - pending.newest_ts_ms / 1000)
            )
        consumer = self._consumer
        if (
            pending.offsets
            and consumer is not None
            and await commit_owned(consumer, pending.offsets)
        ):
            stats.commits += 1
            stats.last_commit_at = time.monotonic()
        stats.pending_rows -= pending.count
        for tp, eof in pending.eofs:
            self._note_eof(tp, eof)

    async def _quarantine(self, refused: list[Refused]) -> None:
        producer = self._producer
        assert producer is not None, "sink not started"
        await quarantine.publish(producer, self.topics.quarantine, refused, self.inserter.backoff_s)
        self.stats.rows_quarantined += len(refused)

    def _note_eof(self, tp: TopicPartition, eof: Eof) -> None:
        seen = self._eofs[eof.run_id]
        seen.add((tp.topic, tp.partition))
        expected = len(self.topics.sink_inputs()) * eof.partitions
        if len(seen) >= expected and not self._drained[eof.run_id].is_set():
            log.info("run %s drained: every topic's end marker is in ClickHouse", eof.run_id)
            self._drained[eof.run_id].set()

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now - self._lag_reported < 2.0:
            return
        self._lag_reported = now
        owned = consumer.assignment()
        for tp in self._lag_series - owned:  # moved to another sink, which reports it now
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.group, tp.topic, str(tp.partition))
        self._lag_series &= owned
        for tp in owned:
            high = consumer.highwater(tp)
            if high is not None:
                lag = high - await consumer.position(tp)
                metrics.CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(lag)
                self._lag_series.add(tp)

    async def merge_touched(self) -> None:
        """Merge the partitions written since this sink started (every table fed from Kafka),
        so plain (non-FINAL) reads are exact too."""
        await self.ch.run(
            merge_partitions_since,
            self.ch.client,
            self.settings.clickhouse_database,
            self._started_at - 1,
        )


def merge_partitions_since(client: Any, db: str, since_epoch_s: float) -> list[tuple[str, str]]:
    """OPTIMIZE ... FINAL every partition of tickstream's row tables with a part written since
    ``since_epoch_s`` (inserts and merges create parts; their partitions are the touched
    ones). Returns the (table, partition id) pairs merged."""
    result = client.query(
        "SELECT table, partition_id FROM system.parts WHERE active AND database = {db:String} "
        "AND table IN {tables:Array(String)} AND modification_time >= toDateTime({since:UInt32}) "
        "GROUP BY table, partition_id ORDER BY table, partition_id",
        parameters={"db": db, "tables": list(TABLES), "since": int(since_epoch_s)},
    )
    touched = [(str(t), str(p)) for t, p in result.result_rows]
    for table, partition_id in touched:
        client.command(f"OPTIMIZE TABLE {db}.{table} PARTITION ID '{partition_id}' FINAL")
    return touched
