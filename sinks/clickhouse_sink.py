"""Kafka -> ClickHouse, at least once on the wire and exactly once in the tables.

Offsets are committed only after ClickHouse acknowledged every insert holding
rows of those messages. A crash between the two re-sends rows on restart; the
tables' row identities (ReplacingMergeTree, see schema.py) make that harmless,
and a retried insert carries the same deduplication token so ClickHouse drops
it outright. While ClickHouse refuses inserts the sink retries with backoff and
stops consuming, so memory stays bounded; it resumes by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from sinks.rows import TABLES, Eof, rows_of
from sinks.schema import migrate
from tickstream import metrics
from tickstream.clickhouse import ClickHouse, connect
from tickstream.settings import Settings
from tickstream.topics import Topics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    rows: dict[str, list[list[Any]]] = field(default_factory=lambda: defaultdict(list))
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    eofs: list[tuple[TopicPartition, Eof]] = field(default_factory=list)
    count: int = 0
    since: float = field(default_factory=time.monotonic)


class Inserter:
    """Inserts one table's rows, retrying with capped exponential backoff until it lands."""

    def __init__(self, ch: ClickHouse, database: str, max_backoff_s: float = 30.0) -> None:
        self.ch = ch
        self.database = database
        self.max_backoff_s = max_backoff_s
        self.healthy = True

    def _insert(self, table: str, rows: list[list[Any]], token: str) -> None:
        self.ch.client.insert(
            f"{self.database}.{table}",
            rows,
            column_names=list(TABLES[table].columns),
            settings={"insert_deduplication_token": token},
        )

    async def insert(self, table: str, rows: list[list[Any]], token: str) -> None:
        backoff = 0.2
        while True:
            started = time.perf_counter()
            try:
                await self.ch.run(self._insert, table, rows, token)
            except Exception as exc:  # any failure: the same block is retried as is
                metrics.SINK_ERRORS.labels(table, "insert").inc()
                metrics.SINK_RETRIES.inc()
                if self.healthy:
                    log.warning("insert into %s failed (%s); retrying with backoff", table, exc)
                self.healthy = False
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if not self.healthy:
                log.info("ClickHouse accepts inserts again (%s)", table)
                self.healthy = True
            metrics.SINK_INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
            metrics.SINK_BATCH_ROWS.labels(table).observe(len(rows))
            metrics.SINK_ROWS.labels(table).inc(len(rows))
            return


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
        self._eofs: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self._eof_expected: dict[str, int] = {}
        self._drained: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._touched: dict[str, set[int]] = defaultdict(set)
        self._stopping = asyncio.Event()
        self._lag_reported = 0.0

    @property
    def ch(self) -> ClickHouse:
        assert self._ch is not None, "sink not started"
        return self._ch

    async def start(self) -> None:
        if self._ch is None:
            self._ch = ClickHouse(await asyncio.to_thread(connect, self.settings))
        version = await self.ch.run(migrate, self.ch.client, self.settings.clickhouse_database)
        log.info("ClickHouse schema at version %d", version)
        self.inserter = self._inserter_factory(self.ch, self.settings.clickhouse_database)
        self._consumer = AIOKafkaConsumer(
            *self.topics.sink_inputs(),
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=3_600_000,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
        )
        await self._consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def close(self) -> None:
        if self._ch is not None:
            self._ch.close()
            self._ch = None

    async def wait_drained(self, run_id: str) -> None:
        await self._drained[run_id].wait()

    def is_drained(self, run_id: str) -> bool:
        return self._drained[run_id].is_set()

    async def run(self) -> None:
        """Consume and insert until stopped."""
        consumer = self._consumer
        assert consumer is not None
        pending = _Pending()
        flush_s = self.settings.sink_flush_ms / 1000
        max_rows = self.settings.sink_batch_rows
        while not self._stopping.is_set():
            batches = await consumer.getmany(
                timeout_ms=min(200, self.settings.sink_flush_ms), max_records=max_rows
            )
            for tp, records in batches.items():
                for record in records:
                    self._route(tp, record.offset, record.value, pending)
            due = time.monotonic() - pending.since >= flush_s
            if pending.count >= max_rows or pending.eofs or (due and pending.offsets):
                await self._flush(pending)
                pending = _Pending()
            elif not pending.offsets:
                pending.since = time.monotonic()
            await self._report_lag(consumer)

    def _route(self, tp: TopicPartition, offset: int, value: bytes, pending: _Pending) -> None:
        pending.offsets[tp] = offset + 1
        pending.first_offsets.setdefault(tp, offset)
        try:
            for item in rows_of(self.topics, tp.topic, value):
                if isinstance(item, Eof):
                    pending.eofs.append((tp, item))
                    continue
                table, row = item
                pending.rows[table].append(row)
                pending.count += 1
        except (ValueError, KeyError, TypeError) as exc:
            metrics.SINK_ERRORS.labels(tp.topic, "undecodable").inc()
            log.error(
                "%s[%d]@%d: skipped undecodable message (%s)", tp.topic, tp.partition, offset, exc
            )

    async def _flush(self, pending: _Pending) -> None:
        span = ",".join(
            f"{tp.topic}:{tp.partition}:{pending.first_offsets[tp]}-{end}"
            for tp, end in sorted(pending.offsets.items())
        )
        for table, rows in pending.rows.items():
            token = hashlib.sha1(f"{table}|{span}".encode()).hexdigest()
            await self.inserter.insert(table, rows, token)
            self._note_partitions(table, rows)
            if table == "ticks" and rows[-1][-1] is not None:  # recv_ts of the newest row
                metrics.E2E_LATENCY.labels("clickhouse").observe(
                    max(0.0, time.time() - rows[-1][-1] / 1000)
                )
        if pending.offsets and self._consumer is not None:
            await self._consumer.commit(
                {tp: OffsetAndMetadata(off, "") for tp, off in pending.offsets.items()}
            )
        for tp, eof in pending.eofs:
            self._note_eof(tp, eof)

    def _note_partitions(self, table: str, rows: list[list[Any]]) -> None:
        column = TABLES[table].partition_ts
        if column is None:
            return
        index = TABLES[table].columns.index(column)
        months = self._touched[table]
        for row in rows:
            months.add(_month_of(row[index]))

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
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                lag = high - await consumer.position(tp)
                metrics.SINK_LAG.labels(self.group, tp.topic, str(tp.partition)).set(lag)

    async def merge_touched(self) -> None:
        """Merge the partitions written in this run, so plain (non-FINAL) reads are exact too."""
        db = self.settings.clickhouse_database
        for table in TABLES:
            if TABLES[table].partition_ts is None:
                await self.ch.run(self.ch.client.command, f"OPTIMIZE TABLE {db}.{table} FINAL")
                continue
            for month in sorted(self._touched.get(table, ())):
                await self.ch.run(
                    self.ch.client.command,
                    f"OPTIMIZE TABLE {db}.{table} PARTITION {month} FINAL",
                )


def _month_of(ts_ms: int) -> int:
    t = time.gmtime(ts_ms // 1000)
    return t.tm_year * 100 + t.tm_mon
