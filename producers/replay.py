"""Replay a CSV (or Parquet) file of ticks as a source.

The header names the fields (``ts,symbol,price`` plus any of bid, ask, size,
venue, seq); values are handed to validation as text, each with its line
number, so a bad line is reported where it is and never stops the replay.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from producers.records import RawTick, wall_ms
from tickstream.timestamps import TimestampError, parse_ts_ms

REQUIRED = ("ts", "symbol", "price")
KNOWN = (*REQUIRED, "bid", "ask", "size", "venue", "seq")


class ReplayFileError(ValueError):
    """The file as a whole cannot be replayed (missing, no header, no required columns)."""


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    path: Path
    speed: float = 0.0  # 0 = as fast as possible, 1 = real time, 60 = a minute per second
    start_line: int = 0  # resume: skip data lines before this file line number
    start_ts_ms: int | None = None  # resume: skip ticks with an earlier ts (parsed leniently)


def count_lines(path: Path, start_line: int = 0) -> int:
    """Inputs a replay of the file yields from ``start_line`` on (for progress): Parquet rows
    (numbered from 1), or the CSV's non-blank lines numbered ``start_line`` or later (the
    header is line 1), counted in binary chunks."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        rows = int(pq.ParquetFile(path).metadata.num_rows)
        return max(rows - max(start_line, 1) + 1, 0)
    count = 0
    with path.open("rb") as fh:
        for _ in range(max(start_line, 2) - 1):  # the header and the lines before the start
            if not fh.readline():
                return 0
        carry = b""  # a line cut by the chunk's end
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            text = carry + chunk
            end = text.rfind(b"\n") + 1
            lines, carry = text[:end], text[end:]
            count += lines.count(b"\n") - len(_BLANK_LINE.findall(lines))
        if carry.strip():  # a last line without a newline
            count += 1
    return count


def replay_total(config: ReplayConfig) -> int:
    """What a replay of ``config`` yields: lines from its start line, or, with a start time,
    the inputs at or after it (one more pass over the file, as the replay reads it)."""
    if config.start_ts_ms is None:
        return count_lines(config.path, config.start_line)
    return sum(1 for _ in read_file(config, now_ms=lambda: 0))


_BLANK_LINE = re.compile(rb"^[ \t\r\f\v]*\n", re.MULTILINE)  # a line the replay skips


def read_file(config: ReplayConfig, now_ms: Callable[[], int] = wall_ms) -> Iterator[RawTick]:
    """CSV, or Parquet when the file ends in .parquet (needs pyarrow)."""
    if not config.path.is_file():
        raise ReplayFileError(f"{config.path}: no such file")
    if config.path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(config, now_ms)
    return read_csv(config, now_ms)


def read_parquet(config: ReplayConfig, now_ms: Callable[[], int] = wall_ms) -> Iterator[RawTick]:
    """Row groups are read one at a time; 'position' is the row number (1-based)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ReplayFileError(f"{config.path}: Parquet replay needs pyarrow installed") from exc
    source = f"replay:{config.path.name}"
    reader = pq.ParquetFile(config.path)
    names = [n.lower() for n in reader.schema_arrow.names]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ReplayFileError(f"{config.path}: columns {names} lack {', '.join(missing)}")
    wanted = [n for n in reader.schema_arrow.names if n.lower() in KNOWN]
    number = 0
    for batch in reader.iter_batches(columns=wanted):
        columns = [c.to_pylist() for c in batch.columns]
        keys = [n.lower() for n in batch.schema.names]
        for values in zip(*columns, strict=True):
            number += 1
            if number < config.start_line:
                continue
            fields = {k: _plain(v) for k, v in zip(keys, values, strict=True)}
            if config.start_ts_ms is not None and _before(fields.get("ts", ""), config.start_ts_ms):
                continue
            raw = ",".join("" if v is None else str(v) for v in fields.values())
            yield RawTick(raw, source, f"row {number}", now_ms(), fields=fields)


def _plain(value: object) -> object:
    """Parquet timestamps arrive as datetimes: hand validation epoch milliseconds."""
    if hasattr(value, "timestamp") and hasattr(value, "tzinfo"):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)  # type: ignore[attr-defined]
        return round(moment.timestamp() * 1000)  # type: ignore[attr-defined]
    return value


MAX_LINE_CHARS = 65_536  # a tick is a few dozen characters; a longer line is garbage


def read_csv(config: ReplayConfig, now_ms: Callable[[], int] = wall_ms) -> Iterator[RawTick]:
    path = config.path
    if not path.is_file():
        raise ReplayFileError(f"{path}: no such file")
    source = f"replay:{path.name}"
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:  # BOM-safe
        header_line = fh.readline()
        header = [h.strip().lower() for h in next(csv.reader([header_line]), [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ReplayFileError(
                f"{path}: header {header_line.strip()!r} lacks {', '.join(missing)} "
                f"(expected ts,symbol,price plus optional {', '.join(KNOWN[3:])})"
            )
        width = len(header)
        for number, line in enumerate(fh, start=2):
            text = line.rstrip("\r\n")
            if number < config.start_line or not text.strip():
                continue
            recv = now_ms()
            if len(text) > MAX_LINE_CHARS:
                yield RawTick(
                    text,
                    source,
                    f"line {number}",
                    recv,
                    error=f"a line of {len(text)} characters (at most {MAX_LINE_CHARS})",
                )
                continue
            try:
                values = next(csv.reader(io.StringIO(text)), [])
            except csv.Error as exc:  # e.g. a field over csv's limit, a stray NUL
                yield RawTick(text, source, f"line {number}", recv, error=f"unreadable CSV: {exc}")
                continue
            if len(values) != width:
                yield RawTick(
                    text,
                    source,
                    f"line {number}",
                    recv,
                    error=f"expected {width} fields ({','.join(header)}), found {len(values)}",
                )
                continue
            fields = {k: v.strip() for k, v in zip(header, values, strict=True) if k in KNOWN}
            if config.start_ts_ms is not None and _before(fields.get("ts", ""), config.start_ts_ms):
                continue
            yield RawTick(text, source, f"line {number}", recv, fields=fields)


def earliest_ts_ms(config: ReplayConfig) -> int | None:
    """The file's earliest parseable event time (the replay's "as of" for record seeds)."""
    times = (_ts_or_none(raw.fields.get("ts", "")) for raw in read_file(config) if raw.fields)
    return min((t for t in times if t is not None), default=None)


@dataclass(slots=True)
class SymbolSpan:
    """One symbol's event times in a replay file."""

    first_ms: int
    last_ms: int
    ticks: int = 0
    behind: int = 0  # ticks stamped at or before the cutoff given for the symbol


def time_spans(
    config: ReplayConfig, cutoffs: Mapping[str, int] | None = None
) -> dict[str, SymbolSpan]:
    """Per symbol, the file's earliest and latest event time, its ticks, and how many are
    stamped at or before ``cutoffs[symbol]``.

    A namespace's processor calls a tick late once its symbol's watermark has passed it,
    so a file is checked against those watermarks before it is published: one pass, also
    giving the earliest time that record seeds are taken "as of". Lines validation would
    refuse (no symbol, a bad time) are left to it and not counted here.
    """
    cutoffs = cutoffs or {}
    spans: dict[str, SymbolSpan] = {}
    for raw in read_file(config):
        if not raw.fields:
            continue
        symbol, ts = raw.fields.get("symbol"), _ts_or_none(raw.fields.get("ts", ""))
        if ts is None or not isinstance(symbol, str) or not symbol.strip():
            continue
        symbol = symbol.strip()
        span = spans.get(symbol)
        if span is None:
            span = spans[symbol] = SymbolSpan(ts, ts)
        elif ts < span.first_ms:
            span.first_ms = ts
        elif ts > span.last_ms:
            span.last_ms = ts
        span.ticks += 1
        cutoff = cutoffs.get(symbol)
        if cutoff is not None and ts <= cutoff:
            span.behind += 1
    return spans


def _before(ts_text: object, start_ts_ms: int) -> bool:
    """True when an epoch-ms or ISO timestamp is earlier than the resume point."""
    ts = _ts_or_none(ts_text)
    return ts is not None and ts < start_ts_ms


async def replay(
    config: ReplayConfig, now_ms: Callable[[], int] = wall_ms
) -> AsyncIterator[RawTick]:
    """Yield the file's inputs; with speed > 0, paced by event time."""
    first_ts: int | None = None
    started = time.monotonic()
    for n, raw in enumerate(read_file(config, now_ms)):
        if config.speed > 0 and raw.fields is not None:
            ts = _ts_or_none(raw.fields.get("ts", ""))
            if ts is not None:
                if first_ts is None:
                    first_ts = ts
                due = started + (ts - first_ts) / 1000 / config.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        elif n % 2000 == 0:
            await asyncio.sleep(0)  # let the publisher's I/O run
        yield raw


def _ts_or_none(text: object) -> int | None:
    """A bad timestamp is validation's to report; pacing and resuming just skip it."""
    try:
        return parse_ts_ms(text)
    except TimestampError:
        return None
