"""The tick on the wire: the codec of the ticks topic (and of the late-ticks topic).

Two shapes are accepted on the ticks topic, so that a feed written by another producer
is data, not garbage:

- a *batch*, as tickstream's publisher writes it: a JSON array of rows, each row the
  tick's fields in ``TICK_FIELDS`` order (a JSON object per row is accepted too). One
  message per batch is what lets the processor keep up with a market: per-message costs
  are paid once per batch, not once per tick;
- a *single tick* as a JSON object, the usual shape of other producers:
  ``{"symbol": "XAU", "ts_ms": 1769400000000, "price": 5012.5}`` (``ts`` is accepted for
  ``ts_ms``: epoch milliseconds or ISO-8601 text, UTC unless it names a zone).

Anything on the topic is checked here, because other producers may write it: a tick
whose values have the wrong type or an impossible value is returned as a ``BadTick``
with its reason, never handed to the kernels (a null price held in state would crash
every later batch, after every restart).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tickstream.contracts.control import ControlMessage, decode_control
from tickstream.model import Tick
from tickstream.timestamps import parse_ts_ms

TICK_FIELDS: tuple[str, ...] = Tick.__slots__
"""The tick's fields, in the order of a batch row."""

# ClickHouse column of each tick field (times are DateTime64 there, so no ``_ms``)
TICK_COLUMNS: dict[str, str] = {
    "symbol": "symbol",
    "ts_ms": "ts",
    "price": "price",
    "bid": "bid",
    "ask": "ask",
    "size": "size",
    "venue": "venue",
    "seq": "seq",
    "recv_ms": "recv_ts",
}

# A tick row as the publisher builds it (validation's output, a batch row's values).
TickRow = tuple[
    str, int, float, float | None, float | None, float | None, str | None, int | None, int | None
]

SYMBOL_MAX_LEN = 32
VENUE_MAX_LEN = 64
SYMBOL_RULE = f"1-{SYMBOL_MAX_LEN} of A-Z a-z 0-9 . _ : - (starting with a letter or digit)"
_SYMBOL_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:\-]{{0,{SYMBOL_MAX_LEN - 1}}}")
_UNPRINTABLE_RE = re.compile(r"[^\x20-\x7e]")
# Event times DateTime64(3) can hold (1970 .. 2299), epoch milliseconds.
TS_MS_MAX = 10_413_791_999_999
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
PRICE_MAX = 1e15
EXCERPT_CHARS = 512


def valid_symbol(symbol: object) -> bool:
    """A symbol is a short printable token: it names partitions, metrics and table rows.

    ``/`` and ``+`` are left out: they join the members of a pair and of a sync group.
    """
    return isinstance(symbol, str) and _SYMBOL_RE.fullmatch(symbol) is not None


def valid_venue(venue: object) -> bool:
    """A venue is short printable text (any script; no control characters)."""
    return isinstance(venue, str) and len(venue) <= VENUE_MAX_LEN and venue.isprintable()


def tick_identity(tick: Tick) -> tuple[object, ...]:
    """What makes two ticks the same tick (a duplicate is dropped, never counted twice)."""
    return tick.identity()


def encode_tick_rows(rows: Sequence[Sequence[Any]]) -> bytes:
    """A batch of tick rows (values in ``TICK_FIELDS`` order) as one message value."""
    return orjson.dumps(rows)


def encode_ticks(ticks: Iterable[Tick]) -> bytes:
    """A batch of ticks as one message value."""
    return orjson.dumps(
        [
            (t.symbol, t.ts_ms, t.price, t.bid, t.ask, t.size, t.venue, t.seq, t.recv_ms)
            for t in ticks
        ]
    )


@dataclass(frozen=True, slots=True)
class BadTick:
    """A tick (or a whole message) refused at decoding, with why."""

    reason: str  # undecodable | bad_shape | bad_value
    detail: str
    excerpt: str  # a bounded excerpt of the offending input
    size: int  # the size of the offending input, in bytes or characters
    symbol: str | None = None


@dataclass(slots=True)
class DecodedTicks:
    """One message of the ticks topic, decoded: ticks, refused parts, or a control message."""

    ticks: list[Tick] = field(default_factory=list)
    bad: list[BadTick] = field(default_factory=list)
    control: ControlMessage | None = None


def excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of an input, so a huge line never makes a huge record."""
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "…"


def decode_ticks_message(value: bytes) -> DecodedTicks:
    """Decode one message of the ticks (or late-ticks) topic; never raises on bad data."""
    out = DecodedTicks()
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        out.bad.append(BadTick("undecodable", f"not JSON: {exc}", excerpt(value), len(value)))
        return out
    if isinstance(doc, list):
        ticks, bad = out.ticks, out.bad
        for item in doc:
            if type(item) is list:
                result = _from_row(item)
            elif type(item) is dict:
                result = _from_object(item)
            else:
                result = "a batch holds tick rows (arrays) or tick objects"
            if type(result) is Tick:
                ticks.append(result)
            else:
                bad.append(_bad(result, item))  # type: ignore[arg-type]
        return out
    if isinstance(doc, dict):
        try:
            out.control = decode_control(doc)
        except ValueError as exc:
            out.bad.append(BadTick("bad_shape", str(exc), excerpt(value), len(value)))
            return out
        if out.control is None:
            result = _from_object(doc)
            if type(result) is Tick:
                out.ticks.append(result)
            else:
                out.bad.append(_bad(result, doc))  # type: ignore[arg-type]
        return out
    out.bad.append(
        BadTick(
            "bad_shape",
            "neither a tick, a batch of ticks nor a control message",
            excerpt(value),
            len(value),
        )
    )
    return out


def _bad(problem: str, item: Any) -> BadTick:
    raw = orjson.dumps(item).decode()
    symbol = None
    if type(item) is list and item and isinstance(item[0], str):
        symbol = item[0]
    elif type(item) is dict and isinstance(item.get("symbol"), str):
        symbol = item["symbol"]
    if symbol is not None and not valid_symbol(symbol):
        symbol = _UNPRINTABLE_RE.sub("?", excerpt(symbol, SYMBOL_MAX_LEN))
    reason = "bad_shape" if problem.startswith("a ") else "bad_value"
    return BadTick(reason, problem, excerpt(raw), len(raw), symbol)


_known_symbols: set[str] = set()


def _from_row(row: list[Any]) -> Tick | str:
    """A positional row: the fast path for tickstream's own batches."""
    n = len(row)
    if n == 9:
        symbol, ts_ms, price, bid, ask, size, venue, seq, recv_ms = row
    elif 3 <= n < 9:
        symbol, ts_ms, price, bid, ask, size, venue, seq, recv_ms = (*row, *(None,) * (9 - n))
    else:
        return f"a tick row has 3 to 9 values ({', '.join(TICK_FIELDS)}), not {n}"
    return _checked(symbol, ts_ms, price, bid, ask, size, venue, seq, recv_ms)


def _from_object(doc: dict[str, Any]) -> Tick | str:
    """A named tick: the usual shape of other producers."""
    ts = doc.get("ts_ms", doc.get("ts"))
    if isinstance(ts, str):
        try:
            ts = parse_ts_ms(ts[:64])  # the producers' rule: naive ISO text is UTC
        except ValueError:
            return f"ts {excerpt(ts, 40)!r} is neither epoch milliseconds nor ISO-8601"
    unknown = doc.keys() - _OBJECT_KEYS
    if unknown:
        return f"unknown field(s) {sorted(unknown)[:5]!r}"
    return _checked(
        doc.get("symbol"),
        ts,
        doc.get("price"),
        doc.get("bid"),
        doc.get("ask"),
        doc.get("size"),
        doc.get("venue"),
        doc.get("seq"),
        doc.get("recv_ms"),
    )


_OBJECT_KEYS = frozenset({*TICK_FIELDS, "ts", "kind", "type"})


def _checked(
    symbol: Any,
    ts_ms: Any,
    price: Any,
    bid: Any,
    ask: Any,
    size: Any,
    venue: Any,
    seq: Any,
    recv_ms: Any,
) -> Tick | str:
    """A Tick from values that pass every rule, or the first rule they break."""
    if type(ts_ms) is float and ts_ms.is_integer():
        ts_ms = int(ts_ms)
    problem = _problem(symbol, ts_ms, price, bid, ask, size, venue, seq, recv_ms)
    if problem is not None:
        return problem
    return Tick(
        symbol,
        ts_ms,
        float(price),
        None if bid is None else float(bid),
        None if ask is None else float(ask),
        None if size is None else float(size),
        venue,
        seq,
        recv_ms,
    )


def row_problem(row: Any) -> str | None:
    """Why a batch row breaks the tick contract, or None: the sink's check of raw batches."""
    if type(row) is not list or len(row) != len(TICK_FIELDS):
        return f"a tick row has {len(TICK_FIELDS)} values ({', '.join(TICK_FIELDS)})"
    return _problem(*row)


def _problem(
    symbol: Any,
    ts_ms: Any,
    price: Any,
    bid: Any,
    ask: Any,
    size: Any,
    venue: Any,
    seq: Any,
    recv_ms: Any,
) -> str | None:
    """The first rule of the tick contract the values break, or None (every rule, one place)."""
    if symbol not in _known_symbols:
        if not valid_symbol(symbol):
            return f"symbol must be {SYMBOL_RULE}"
        if len(_known_symbols) < 100_000:
            _known_symbols.add(symbol)
    if type(ts_ms) is not int:
        return "ts_ms must be an integer (epoch milliseconds)"
    if not 0 <= ts_ms <= TS_MS_MAX:
        return "ts_ms is outside 1970..2299"
    if type(price) is not float and type(price) is not int:
        return "price must be a number"
    if not 0.0 < price <= PRICE_MAX:  # also refuses NaN
        return f"price must be > 0 and <= {PRICE_MAX:g}"
    if bid is not None and not _positive_number(bid):
        return "bid must be a positive number or null"
    if ask is not None and not _positive_number(ask):
        return "ask must be a positive number or null"
    if size is not None and not (_number(size) and 0 <= size <= PRICE_MAX):
        return "size must be a number >= 0 or null"
    if venue is not None and not valid_venue(venue):
        return f"venue must be printable text of at most {VENUE_MAX_LEN} characters, or null"
    if seq is not None and not (type(seq) is int and INT64_MIN <= seq <= INT64_MAX):
        return "seq must be a 64-bit integer or null"
    if recv_ms is not None and not (type(recv_ms) is int and 0 <= recv_ms <= TS_MS_MAX):
        return "recv_ms must be an integer (epoch milliseconds) or null"
    return None


def _number(value: Any) -> bool:
    return (type(value) is float and math.isfinite(value)) or type(value) is int


def _positive_number(value: Any) -> bool:
    return _number(value) and 0 < value <= PRICE_MAX
