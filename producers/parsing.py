"""The per-input checks: a source's fields to a row in ``Tick`` field order, or why not.

These checks need neither time nor history (``malformed``, ``invalid_price``,
``crossed_quote``; see ``producers.validation`` for all of them); the ``Validator``
adds those that do. Two paths decide the same thing:

* ``quick_row``, the fast path: the shapes sources actually send, checked with
  exact type tests and chained comparisons. It either returns the row or gives
  up with None, never explaining why; it runs on every input, so it avoids
  function calls, exceptions and containers wherever it can.
* ``checked_row``, the slow path: any input, checked field by field in the
  documented order, raising ``InvalidInput`` with the reason and a detail. It
  runs only where the fast path gave up: rejections and unusual shapes.

Where the fast path returns a row it is the row the slow path would build, so
which path decided never shows in the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from producers.reasons import CROSSED_QUOTE, INVALID_PRICE, MALFORMED, InvalidInput
from tickstream.contracts.ticks import (
    INT64_MAX,
    INT64_MIN,
    PRICE_MAX,
    SYMBOL_RULE,
    TS_MS_MAX,
    VENUE_MAX_LEN,
    excerpt,
    valid_symbol,
    valid_venue,
)
from tickstream.model import Tick
from tickstream.timestamps import TimestampError, parse_ts_ms

# A parsed input as a plain tuple in ``Tick`` field order (also a batch row on the ticks
# topic, see ``tickstream.contracts``): symbol, ts_ms, price, bid, ask, size, venue, seq,
# recv_ms.
Row = tuple[str, int, float, float | None, float | None, float | None, str | None, int | None, int]

# 2000-01-01T00:00:00Z: the default lower bound on event times. A time before it
# is almost always epoch seconds sent where milliseconds belong.
Y2K_MS = 946_684_800_000

_MAX = PRICE_MAX  # the tick contract's bounds (tickstream.contracts.ticks) hold here too
_known_symbols: set[str] = set()
_INT_RE = re.compile(r"^\s*-?[0-9]+\s*$")
_FIELD_NAMES = ("symbol", "ts", "price", "bid", "ask", "size", "venue", "seq")
_ALL_FIELDS = itemgetter(*_FIELD_NAMES)


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _parse_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(MALFORMED, f"{name} {value!r} is a {type(value).__name__}, not a number")
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise InvalidInput(MALFORMED, f"{name} {value!r} is not a number") from None
    try:
        return float(value)
    except OverflowError:  # an int beyond float range
        return math.inf


def _parse_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidInput(MALFORMED, f"{name} {value!r} is a bool, not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and len(value) <= 40 and _INT_RE.match(value):
        return int(value)
    raise InvalidInput(MALFORMED, f"{name} {excerpt(str(value), 40)!r} is not an integer")


def _check_price(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and 0 < value <= _MAX):
        raise InvalidInput(
            INVALID_PRICE, f"{name} {value!r} is not a positive price up to {_MAX:g}"
        )


def _field_values(fields: Mapping[str, Any]) -> tuple[Any, ...]:
    get = fields.get
    return (
        get("symbol"),
        get("ts"),
        get("price"),
        get("bid"),
        get("ask"),
        get("size"),
        get("venue"),
        get("seq"),
    )


def _quick_optional_float(value: Any) -> float | None:
    """An optional number given as text or int (floats never get here); TypeError otherwise."""
    kind = type(value)
    if kind is str:
        return float(value) if value else None
    if kind is int:
        return float(value)
    raise TypeError(value)


def quick_row(fields: Mapping[str, Any], recv_ms: int, min_ts_ms: int) -> Row | None:
    """The row of an input in one of the common shapes that passes every per-input check.

    Shapes: JSON-typed values (str symbol, int ts, float or int numbers, int seq) and
    plain text (CSV: decimal numbers, epoch-ms or ISO-8601 ts, digit seq). Anything else,
    and anything that fails a check, gives None: ``checked_row`` then decides, with the
    reason and detail of the first problem. Where this returns a row it is the row
    ``checked_row`` would build (``float(text)`` equals ``float(text.strip())`` whenever it
    succeeds, and an empty optional text is absent in both).
    """
    try:
        symbol, ts, price, bid, ask, size, venue, seq = (
            _ALL_FIELDS(fields) if len(fields) >= 8 else _field_values(fields)
        )
    except KeyError:  # eight or more fields, but not ours
        symbol, ts, price, bid, ask, size, venue, seq = _field_values(fields)
    if type(symbol) is not str:
        return None
    symbol = symbol.strip()
    if symbol not in _known_symbols:
        if not valid_symbol(symbol):
            return None
        if len(_known_symbols) < 100_000:
            _known_symbols.add(symbol)
    kind = type(ts)
    if kind is str:
        try:
            ts = parse_ts_ms(ts)
        except TimestampError:
            return None
    elif kind is not int:
        return None
    if not min_ts_ms <= ts <= TS_MS_MAX:
        return None
    try:
        kind = type(price)
        if kind is not float:
            if kind is not str and kind is not int:
                return None
            price = float(price)
        if bid is not None and type(bid) is not float:
            bid = _quick_optional_float(bid)
        if ask is not None and type(ask) is not float:
            ask = _quick_optional_float(ask)
        if size is not None and type(size) is not float:
            size = _quick_optional_float(size)
    except (ValueError, OverflowError, TypeError):
        return None
    if seq is not None:
        kind = type(seq)
        if kind is str:
            if not seq:
                seq = None
            elif len(seq) <= 19 and seq.isdigit() and seq.isascii():
                seq = int(seq)
            else:
                return None
        elif kind is not int:
            return None
        if seq is not None and not INT64_MIN <= seq <= INT64_MAX:
            return None
    if venue is not None:
        if type(venue) is not str:
            return None
        venue = venue.strip() or None
        if venue is not None and not valid_venue(venue):
            return None
    if not (
        0.0 < price <= _MAX
        and (bid is None or 0.0 < bid <= _MAX)
        and (ask is None or 0.0 < ask <= _MAX)
        and (size is None or 0.0 <= size <= _MAX)
        and (bid is None or ask is None or bid <= ask)
    ):
        return None
    return (symbol, ts, price, bid, ask, size, venue, seq, recv_ms)


def checked_row(fields: Mapping[str, Any], recv_ms: int, min_ts_ms: int) -> Row:
    """Any input: its row, or ``InvalidInput`` naming the first problem (the checks in order)."""
    get = fields.get
    for name in ("symbol", "ts", "price"):
        if _absent(get(name)):
            raise InvalidInput(MALFORMED, f"required field {name} is missing")
    symbol = fields["symbol"]
    if not isinstance(symbol, str):
        raise InvalidInput(MALFORMED, f"symbol {symbol!r} is a {type(symbol).__name__}, not text")
    if not valid_symbol(symbol.strip()):
        shown = excerpt(symbol.strip(), 40)
        raise InvalidInput(MALFORMED, f"symbol {shown!r} is not {SYMBOL_RULE}")
    try:
        ts_ms = parse_ts_ms(fields["ts"])
    except TimestampError as bad:
        raise InvalidInput(MALFORMED, str(bad)) from None
    if ts_ms < min_ts_ms:
        raise InvalidInput(
            MALFORMED,
            f"ts {fields['ts']!r} = {ts_ms} ms is before {min_ts_ms} ms"
            " (epoch seconds instead of milliseconds?)",
        )
    if ts_ms > TS_MS_MAX:
        raise InvalidInput(MALFORMED, f"ts {ts_ms} ms is after the year 2299")
    price = _parse_float("price", fields["price"])
    bid, ask, size, venue, seq = get("bid"), get("ask"), get("size"), get("venue"), get("seq")
    bid = None if _absent(bid) else _parse_float("bid", bid)
    ask = None if _absent(ask) else _parse_float("ask", ask)
    size = None if _absent(size) else _parse_float("size", size)
    seq = None if _absent(seq) else _parse_int("seq", seq)
    if _absent(venue):
        venue = None
    elif not isinstance(venue, str):
        raise InvalidInput(MALFORMED, f"venue {venue!r} is a {type(venue).__name__}, not text")
    else:
        venue = venue.strip()
        if not valid_venue(venue):
            raise InvalidInput(
                MALFORMED,
                f"venue {excerpt(venue, 40)!r} is not printable text of at most"
                f" {VENUE_MAX_LEN} characters",
            )
    if seq is not None and not INT64_MIN <= seq <= INT64_MAX:
        raise InvalidInput(MALFORMED, f"seq {seq} is outside the 64-bit integer range")
    _check_price("price", price)
    _check_price("bid", bid)
    _check_price("ask", ask)
    if size is not None and not (math.isfinite(size) and 0 <= size <= _MAX):
        raise InvalidInput(INVALID_PRICE, f"size {size!r} is not a size from 0 to {_MAX:g}")
    if bid is not None and ask is not None and bid > ask:
        raise InvalidInput(CROSSED_QUOTE, f"bid {bid!r} > ask {ask!r}")
    return (symbol.strip(), ts_ms, price, bid, ask, size, venue, seq, recv_ms)


def parse_tick(fields: Mapping[str, Any], recv_ms: int, min_ts_ms: int = Y2K_MS) -> Tick:
    """Build a Tick from source fields, or raise ``InvalidInput`` naming the first problem.

    Covers the per-input checks (malformed, invalid_price, crossed_quote);
    checks that need time or history live in ``Validator``.
    """
    row = quick_row(fields, recv_ms, min_ts_ms)
    return Tick(*(row or checked_row(fields, recv_ms, min_ts_ms)))
