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
(``JSONCompactEachRow`` into the ``ticks_ingest`` Null table, whose view fills
``ticks``); Python only checks that each message decodes. Other tables' rows
are few and go in column-oriented. Inserts are pipelined one deep: while batch
k is inserted (chDB releases the GIL), batch k+1 is fetched and checked.

Refused rows: a failed insert is retried with backoff unless the error is certainly about
the data (``data_error_class``); then the block is bisected, good rows land under tokens
derived from the block's, and each refused row (or a time DateTime64 cannot hold, refused
before the insert) goes to ``<ns>.quarantine`` with its reason. Offsets are committed once
every row is inserted or its quarantine record acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import clickhouse_connect
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from clickhouse_connect.driver.exceptions import ClickHouseError, DataError

from sinks.rows import TABLES, Eof, rows_of
from sinks.schema import apply_ticks_ttl, migrate
from tickstream import metrics
from tickstream.clickhouse import ClickHouse, connect
from tickstream.contracts import decode_ticks_message, encode_tick_rows, encode_ticks
from tickstream.contracts.ticks import row_problem
from tickstream.settings import Settings
from tickstream.topics import Topics

log = logging.getLogger(__name__)

TICK_COLUMNS = TABLES["ticks"].columns
_RECV = TICK_COLUMNS.index("recv_ts")
_TS = TICK_COLUMNS.index("ts")
INGEST_TABLE = "ticks_ingest"  # Null table + view into ticks (schema migration 2)
# messages taken per poll; a batch is sent as soon as it is full, even mid-poll
_MAX_RECORDS = 500

Source = tuple[str, int, int, int]
"""Where a row came from: topic, partition, offset, and its index in that message."""


@dataclass(slots=True)
class Block:
    """One insert into one table: rows column-oriented, or (ticks) the messages' JSON.

    ``sources`` has one entry per unit the block can be split into: a row (columns) or a
    message (JSON, with ``counts`` its rows), so a refused row can name its message.
    """

    table: str
    rows: int = 0
    columns: list[list[Any]] | None = None
    json: list[bytes] | None = None
    token: str = ""
    span: str = ""  # the Kafka offsets it holds rows of: topic:partition:first-end,...
    sources: list[Source] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # rows of each JSON message

    def add_row(self, row: list[Any], source: Source) -> None:
        assert self.columns is not None
        if len(row) != len(self.columns):  # checked first: a column left longer breaks all
            raise ValueError(f"a {self.table} row has {len(self.columns)} values")
        for column, value in zip(self.columns, row, strict=True):
            column.append(value)
        self.sources.append(source)
        self.rows += 1

    def add_message(self, value: bytes, rows: int, source: Source) -> None:
        assert self.json is not None
        self.json.append(value)
        self.counts.append(rows)
        self.sources.append(source)
        self.rows += rows

    def json_body(self) -> bytes:
        """JSONCompactEachRow: each message's rows without its outer brackets."""
        assert self.json is not None
        return b"\n".join(message.strip()[1:-1] for message in self.json)

    @property
    def units(self) -> int:
        return len(self.sources)

    def part(self, lo: int, hi: int) -> Block:
        """Units ``lo:hi`` as a block of their own. Its token is derived from this block's
        and the range, so the same split of the same block sends the same tokens again:
        a split block sent again (a crash before the commit) doubles nothing."""
        token = _derived_token(self.token, f"{lo}-{hi}")
        sources = self.sources[lo:hi]
        if self.json is not None:
            counts = self.counts[lo:hi]
            return Block(
                self.table, sum(counts), None, self.json[lo:hi], token, self.span, sources, counts
            )
        assert self.columns is not None
        columns = [column[lo:hi] for column in self.columns]
        return Block(self.table, hi - lo, columns, None, token, self.span, sources)

    def halves(self) -> tuple[Block, Block]:
        middle = self.units // 2
        return self.part(0, middle), self.part(middle, self.units)

    def rows_apart(self) -> Block:
        """A one-message JSON block as one unit per row (a tick batch split into its rows)."""
        assert self.json is not None and self.units == 1
        topic, partition, offset, _ = self.sources[0]
        rows = orjson.loads(self.json[0])
        return Block(
            self.table,
            len(rows),
            None,
            [orjson.dumps([row]) for row in rows],
            _derived_token(self.token, "rows"),
            self.span,
            [(topic, partition, offset, index) for index in range(len(rows))],
            [1] * len(rows),
        )

    def only_row(self) -> Any:
        """The block's one row, by column name, with the values it arrived with."""
        names = TABLES[self.table].columns
        if self.json is not None:
            (row,) = orjson.loads(self.json[0])
            if isinstance(row, list) and len(row) == len(names):
                return dict(zip(names, row, strict=True))
            return row
        assert self.columns is not None
        return {name: column[0] for name, column in zip(names, self.columns, strict=True)}


def _derived_token(token: str, suffix: str) -> str:
    return hashlib.sha1(f"{token}/{suffix}".encode()).hexdigest()


# ---------------------------------------------------------------- data errors vs transient ones
#
# Conservative: an insert error is about the data only when that is certain, and only then
# are rows quarantined; anything else (connection refused/reset, timeouts, TOO_MANY_PARTS,
# MEMORY_LIMIT_EXCEEDED, an unknown table, an error never seen before) is retried with
# backoff, as a row held back is recoverable and a row wrongly quarantined is not in its
# table. Certain means one of:
# - a TypeError, ValueError (UnicodeError), ArithmeticError (OverflowError) or AttributeError
#   raised inside clickhouse-connect, which converts a block to ClickHouse's types in Python
#   before sending it (the same exception types raised elsewhere, e.g. by a bug of the sink,
#   are retried), or clickhouse-connect's own DataError without a server code ("Unable to
#   create native array for column ...", "Invalid None value in non-Nullable column");
# - a server error whose code is in _DATA_ERRORS: ClickHouse could not parse, type or fit a
#   value of the block. Schema-level refusals (NUMBER_OF_COLUMNS_DOESNT_MATCH, UNKNOWN_TABLE)
#   and truncated input (UNEXPECTED_END_OF_FILE, CANNOT_READ_ALL_DATA: a body cut by the
#   network looks the same) are not in it.
# The class of a quarantined row (the metric's reason_class) is "conversion" for the first
# kind, else "parse", "type" or "range" by the code; a time outside DateTime64(3)'s range,
# which ClickHouse would store and then fail to read, is refused before the insert ("range").

REASON_CLASSES = ("conversion", "parse", "type", "range")
_DATA_ERRORS: dict[int, tuple[str, str]] = {
    6: ("CANNOT_PARSE_TEXT", "parse"),
    25: ("CANNOT_PARSE_ESCAPE_SEQUENCE", "parse"),
    26: ("CANNOT_PARSE_QUOTED_STRING", "parse"),
    27: ("CANNOT_PARSE_INPUT_ASSERTION_FAILED", "parse"),
    38: ("CANNOT_PARSE_DATE", "parse"),
    41: ("CANNOT_PARSE_DATETIME", "parse"),
    72: ("CANNOT_PARSE_NUMBER", "parse"),
    117: ("INCORRECT_DATA", "parse"),
    130: ("CANNOT_READ_ARRAY_FROM_TEXT", "parse"),
    376: ("CANNOT_PARSE_UUID", "parse"),
    441: ("CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "parse"),
    467: ("CANNOT_PARSE_BOOL", "parse"),
    563: ("CANNOT_READ_MAP_FROM_TEXT", "parse"),
    632: ("UNEXPECTED_DATA_AFTER_PARSED_VALUE", "parse"),
    675: ("CANNOT_PARSE_IPV4", "parse"),
    676: ("CANNOT_PARSE_IPV6", "parse"),
    691: ("UNKNOWN_ELEMENT_OF_ENUM", "parse"),
    43: ("ILLEGAL_TYPE_OF_ARGUMENT", "type"),
    53: ("TYPE_MISMATCH", "type"),
    70: ("CANNOT_CONVERT_TYPE", "type"),
    349: ("CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN", "type"),
    69: ("ARGUMENT_OUT_OF_BOUND", "range"),
    128: ("TOO_LARGE_ARRAY_SIZE", "range"),
    131: ("TOO_LARGE_STRING_SIZE", "range"),
    321: ("VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", "range"),
    407: ("DECIMAL_OVERFLOW", "range"),
    469: ("VIOLATED_CONSTRAINT", "range"),
}
_DATA_ERROR_NAMES = {name: reason_class for name, reason_class in _DATA_ERRORS.values()}
_CODE_RE = re.compile(r"\bCode:\s*(\d+)")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
_CONVERSION_ERRORS = (TypeError, ValueError, ArithmeticError, AttributeError)
_CLIENT_DIR = os.path.dirname(clickhouse_connect.__file__)
REASON_MAX_CHARS = 2_000
# DateTime64(3)'s range, epoch milliseconds: 1900-01-01 .. 2299-12-31T23:59:59.999 UTC
DATETIME64_MIN_MS = -2_208_988_800_000
DATETIME64_MAX_MS = 10_413_791_999_999
_ROW_MAX_BYTES = 256 << 10  # a quarantine record stays far below the broker's message limit


def _raised_by_client(exc: BaseException) -> bool:
    """Whether ``exc`` passed through clickhouse-connect (its conversion of the block)."""
    return any(
        frame.f_code.co_filename.startswith(_CLIENT_DIR)
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def data_error_class(exc: BaseException) -> str | None:
    """The reason class when ``exc`` is certainly about the rows of the insert (they are to
    be quarantined), None when it may be about the server, the network or the sink itself
    (the insert is retried). See the rules above."""
    if isinstance(exc, ClickHouseError):
        code = getattr(exc, "code", None)
        if code is None and (match := _CODE_RE.search(str(exc))):
            code = int(match[1])
        if code is not None:  # the server's answer
            known = _DATA_ERRORS.get(code)
            return known[1] if known else None
        if isinstance(exc, DataError) and _raised_by_client(exc):
            return "conversion"  # refused by the client's conversion, before sending
        names = _NAME_RE.findall(str(exc))
        name = getattr(exc, "name", None) or (names[-1] if names else None)
        return _DATA_ERROR_NAMES.get(name) if name else None
    if isinstance(exc, OSError):  # connection refused/reset, timeouts
        return None
    if isinstance(exc, _CONVERSION_ERRORS) and _raised_by_client(exc):
        return "conversion"
    return None


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= REASON_MAX_CHARS else text[:REASON_MAX_CHARS] + "…"


@dataclass(frozen=True, slots=True)
class Refused:
    """A row ClickHouse would not take for a data reason: the row, why, and its message."""

    table: str
    row: Any  # column -> value, as the message carried it
    source: Source
    reason: str
    reason_class: str

    def record(self, sink_ms: int) -> bytes:
        """The quarantine record (JSON), bounded: an oversized row is kept as an excerpt."""
        topic, partition, offset, index = self.source
        doc: dict[str, Any] = {
            "table": self.table,
            "row": self.row,
            "reason": self.reason,
            "reason_class": self.reason_class,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "index": index,
            "sink_ms": sink_ms,
        }
        try:
            row = orjson.dumps(self.row)
        except TypeError:  # an integer beyond 64 bits: orjson refuses, repr does not
            row = repr(self.row).encode()
            doc["row"] = row.decode()
        if len(row) > _ROW_MAX_BYTES:
            doc["row"] = row[:_ROW_MAX_BYTES].decode("utf-8", "replace") + "…"
            doc["row_bytes"] = len(row)
        return orjson.dumps(doc)


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


class Inserter:
    """Inserts blocks: retries each with capped exponential backoff while ClickHouse is away,
    splits it when it is refused for its data.

    ``_insert`` is the client boundary (it runs on the ClickHouse thread); a retry sends
    the same block with the same deduplication token, so ClickHouse keeps one copy even
    when an attempt was written and only its acknowledgement was lost. A block refused for
    a data reason (``data_error_class``) is bisected, by message then by row for tick
    batches, until each refused row stands alone; every part carries a token derived from
    the block's, so the same block sent again (after a crash) re-sends the same parts.
    """

    def __init__(
        self,
        ch: ClickHouse,
        database: str,
        max_backoff_s: float = 30.0,
        initial_backoff_s: float = 0.2,
    ) -> None:
        self.ch = ch
        self.database = database
        self.max_backoff_s = max_backoff_s
        self.initial_backoff_s = initial_backoff_s
        self.healthy = True

    def _insert(self, block: Block) -> None:
        settings = {"insert_deduplication_token": block.token}
        if block.json is not None:
            # the token reaches ticks through the view only with this setting
            settings["deduplicate_blocks_in_dependent_materialized_views"] = 1  # type: ignore[assignment]
            self.ch.client.raw_insert(
                f"{self.database}.{INGEST_TABLE}",
                list(TICK_COLUMNS),
                insert_block=block.json_body(),
                fmt="JSONCompactEachRow",
                settings=settings,
            )
            return
        self.ch.client.insert(
            f"{self.database}.{block.table}",
            block.columns,
            column_names=list(TABLES[block.table].columns),
            column_oriented=True,
            settings=settings,
        )

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def backoff_s(self, attempt: int) -> float:
        """The pause before retry ``attempt`` (1, 2, ...): doubling from the initial, capped,
        with +-50% jitter so that several sinks do not retry in lockstep."""
        base = min(self.initial_backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        return base * (0.5 + random.random())

    async def insert(self, block: Block) -> list[Refused]:
        """Insert ``block``; returns the rows refused for data reasons (all others landed)."""
        refused: list[Refused] = []
        await self._insert_or_split(block, refused, top=True)
        if refused:
            log.warning(
                "%s: %d of %d rows refused for data reasons, to be quarantined (first: %s)",
                block.table,
                len(refused),
                block.rows,
                refused[0].reason[:300],
            )
        return refused

    async def _insert_or_split(self, block: Block, refused: list[Refused], top: bool) -> None:
        failed = await self._attempt(block)
        if failed is None:
            return
        reason_class, exc = failed
        if top:
            log.info("insert into %s refused (%s); looking for the rows", block.table, exc)
        if block.units > 1:
            for part in block.halves():
                await self._insert_or_split(part, refused, top=False)
        elif block.json is not None and block.rows > 1:
            await self._insert_or_split(block.rows_apart(), refused, top=False)
        else:
            source = block.sources[0]
            refused.append(
                Refused(block.table, block.only_row(), source, _reason(exc), reason_class)
            )

    async def _attempt(self, block: Block) -> tuple[str, Exception] | None:
        """Send ``block`` until it lands (None) or is refused for its data (class, error)."""
        table = block.table
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                await self.ch.run(self._insert, block)
            except Exception as exc:
                reason_class = data_error_class(exc)
                if reason_class is not None:  # sending it again would fail the same way
                    return reason_class, exc
                attempt += 1  # the server away or overloaded: the same block again, later
                metrics.SINK_ERRORS.labels(table, "insert").inc()
                metrics.SINK_RETRIES.inc()
                if self.healthy:
                    log.warning("insert into %s failed (%s); retrying with backoff", table, exc)
                self.healthy = False
                await self._sleep(self.backoff_s(attempt))
                continue
            if not self.healthy:
                log.info("ClickHouse accepts inserts again (%s)", table)
                self.healthy = True
            metrics.SINK_INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
            metrics.SINK_BATCH_ROWS.labels(table).observe(block.rows)
            metrics.SINK_ROWS.labels(table).inc(block.rows)
            return None


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
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            max_request_size=1 << 20,
        )
        await self._producer.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
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
                    if marker is not None:
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
                    problem = self._time_problem(table, row)
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
        if pending.offsets and self._consumer is not None:
            await self._consumer.commit(
                {tp: OffsetAndMetadata(off, "") for tp, off in pending.offsets.items()}
            )
            stats.commits += 1
            stats.last_commit_at = time.monotonic()
        stats.pending_rows -= pending.count
        for tp, eof in pending.eofs:
            self._note_eof(tp, eof)

    def _time_problem(self, table: str, row: list[Any]) -> str | None:
        """Why a row's time is one DateTime64(3) cannot hold, or None. ClickHouse stores such
        a value without complaint (as Int64 ticks) and then no client can read the table, so
        it is refused here, before the insert (a time that is not a number is left to the
        client's conversion)."""
        for index in self._time_columns.get(table, ()):
            value = row[index]
            if (
                type(value) in (int, float)
                and not DATETIME64_MIN_MS <= value <= DATETIME64_MAX_MS  # NaN too
            ):
                column = TABLES[table].columns[index]
                return (
                    f"{column} = {str(value)[:40]} (epoch ms) is outside DateTime64(3)'s range "
                    f"(1900-01-01 .. 2299-12-31 UTC)"
                )
        return None

    async def _quarantine(self, refused: list[Refused]) -> None:
        """Publish each refused row to the quarantine topic and wait until the broker has
        acknowledged every record, retrying with backoff while it cannot: the batch's
        offsets are committed only after that, so a refused row is never just dropped. A
        crash in between publishes it again on restart (the topic is at least once)."""
        producer = self._producer
        assert producer is not None, "sink not started"
        topic = self.topics.quarantine
        sink_ms = int(time.time() * 1000)
        records = [(r.table.encode(), r.record(sink_ms)) for r in refused]

        async def send(key: bytes, value: bytes) -> None:
            await (await producer.send(topic, value, key=key))

        waiting = list(range(len(records)))
        attempt = 0
        while waiting:
            results = await asyncio.gather(
                *(send(*records[i]) for i in waiting), return_exceptions=True
            )
            failed = [(i, r) for i, r in zip(waiting, results, strict=True) if r is not None]
            if failed:
                attempt += 1
                log.warning(
                    "%d quarantine records not acknowledged (%s); retrying with backoff",
                    len(failed),
                    failed[0][1],
                )
                await asyncio.sleep(self.inserter.backoff_s(attempt))
            waiting = [i for i, _ in failed]
        for row in refused:
            metrics.SINK_QUARANTINED.labels(row.table, row.reason_class).inc()
        self.stats.rows_quarantined += len(refused)
        log.warning("%d refused rows are on %s, with their reasons", len(refused), topic)

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
                metrics.CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(lag)

    async def merge_touched(self) -> None:
        """Merge the partitions written since this sink started (every table fed from Kafka),
        so plain (non-FINAL) reads are exact too."""
        await self.ch.run(
            merge_partitions_since,
            self.ch.client,
            self.settings.clickhouse_database,
            self._started_at - 1,
        )


def time_columns(client: Any, db: str) -> dict[str, tuple[int, ...]]:
    """Per table, the indices (in ``TABLES``' insert order) of its DateTime64 columns, read
    from the database itself so that a table added by a later migration is covered."""
    result = client.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String} "
        "AND type LIKE '%DateTime64%'",
        parameters={"db": db},
    )
    found: dict[str, set[str]] = defaultdict(set)
    for table, name in result.result_rows:
        found[str(table)].add(str(name))
    return {
        table: tuple(i for i, column in enumerate(spec.columns) if column in found[table])
        for table, spec in TABLES.items()
    }


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
