"""Inserts into ClickHouse: one block per table and batch, retried until it lands.

Apart from the Kafka loop (clickhouse_sink.py) so that the insert path (deduplication
tokens, backoff, splitting a refused block down to its rows) can be driven and faulted
on its own, without a broker. Tick batches travel as the messages' JSON
(``JSONCompactEachRow`` into the ``ticks_ingest`` Null table, whose view fills
``ticks``): no per-tick Python work. Other tables' rows are few and go in
column-oriented.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from sinks.quarantine import Refused, Source, data_error_class, reason_of
from sinks.rows import TABLES
from tickstream import metrics
from tickstream.clickhouse import ClickHouse

log = logging.getLogger(__name__)

TICK_COLUMNS = TABLES["ticks"].columns
INGEST_TABLE = "ticks_ingest"  # Null table + view into ticks (schema migration 2)


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
                Refused(block.table, block.only_row(), source, reason_of(exc), reason_class)
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
