"""Validation: turn a source's RawTicks into accepted Ticks or Rejections.

Pure and deterministic: no I/O, no metrics, no globals; wall-clock time is
injected (``now_ms``) and only used for the ``future_ts`` check. Counting
verdicts is the caller's job.

Checks, in order; the first that fails names the reason:

* ``malformed``      no fields, a required field missing, wrong type, unparseable
                     timestamp or number, or a timestamp before ``min_ts_ms``
                     (usually epoch seconds sent where milliseconds belong);
* ``invalid_price``  price/bid/ask not finite or <= 0, size not finite or < 0;
* ``crossed_quote``  bid > ask (a locked quote, bid == ask, passes);
* ``future_ts``      event time more than ``max_future_ms`` ahead of now;
* ``duplicate``      same ``Tick.identity()`` as an earlier accepted-or-held tick
                     (remembered per symbol within ``duplicate_horizon_ms`` of
                     that symbol's newest event time, so memory stays bounded);
* ``spike``          see below.

Spike filter: a bad tick that reaches a desk as a false high cannot be taken
back, so a suspicious price is quarantined first and decided later. A tick is
*suspect* when its price is further from the symbol's last accepted price than
the near threshold (ticks under ``near_ms`` apart in event time) or the far
threshold (further apart). A suspect is held, and so is every later tick of
that symbol until the suspect is decided, which keeps per-symbol order. Each
later tick votes, using the near threshold only:

* within the near threshold of the suspect (and closer to it than to the last
  accepted price): a confirmation; after ``confirm_ticks`` confirmations the
  suspect and the held ticks are accepted in order (a genuine move);
* otherwise (back near the last accepted price, or far from both): the suspect
  is rejected as ``spike`` and the held ticks are evaluated again, in order.

So at most ``confirm_ticks`` ticks per symbol are ever held. ``finish()``
rejects an unconfirmed suspect the same way. The first tick of a symbol has no
reference and is accepted, unless ``reference_prices`` seeds one (e.g. the
previous close); a seeded reference has no time, so the far threshold applies.

Symbols are stripped of surrounding white space but not upper-cased: the venue's
spelling is kept.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from time import time_ns as _time_ns
from typing import Any

from producers.records import RawTick, Rejection, Verdicts, wall_ms
from tickstream.model import Tick

MALFORMED = "malformed"
INVALID_PRICE = "invalid_price"
CROSSED_QUOTE = "crossed_quote"
FUTURE_TS = "future_ts"
DUPLICATE = "duplicate"
SPIKE = "spike"
REASONS = (MALFORMED, INVALID_PRICE, CROSSED_QUOTE, FUTURE_TS, DUPLICATE, SPIKE)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_Y2K_MS = 946_684_800_000
_BAD_TS = "ts {!r} is neither ISO-8601 nor epoch milliseconds"
_INT_RE = re.compile(r"^\s*-?[0-9]+\s*$")


@dataclass(frozen=True, slots=True)
class SpikeThresholds:
    """How far a price may move from the last accepted one before it is suspect."""

    near_pct: float = 5.0
    far_pct: float = 20.0
    near_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """Validation parameters; the defaults suit liquid metals and FX."""

    max_future_ms: int = 5 * 60_000
    min_ts_ms: int = _Y2K_MS
    duplicate_horizon_ms: int = 5 * 60_000
    spike_filter: bool = True
    spike_near_pct: float = 5.0
    spike_far_pct: float = 20.0
    spike_near_ms: int = 60_000
    confirm_ticks: int = 3
    spike_overrides: Mapping[str, SpikeThresholds] = field(default_factory=dict)
    reference_prices: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.confirm_ticks < 1:
            raise ValueError(f"confirm_ticks must be >= 1, got {self.confirm_ticks}")
        if self.duplicate_horizon_ms < 0 or self.max_future_ms < 0:
            raise ValueError("duplicate_horizon_ms and max_future_ms must be >= 0")
        for thresholds in (self.default_thresholds, *self.spike_overrides.values()):
            if not 0 < thresholds.near_pct <= thresholds.far_pct:
                raise ValueError(f"need 0 < near_pct <= far_pct: {thresholds}")
        for symbol, price in self.reference_prices.items():
            if not (math.isfinite(price) and price > 0):
                raise ValueError(f"reference price of {symbol} must be > 0, got {price!r}")

    @property
    def default_thresholds(self) -> SpikeThresholds:
        return SpikeThresholds(self.spike_near_pct, self.spike_far_pct, self.spike_near_ms)

    def thresholds(self, symbol: str) -> SpikeThresholds:
        return self.spike_overrides.get(symbol) or self.default_thresholds


class InvalidInput(Exception):
    """An input fails a check; carries the reason and a human detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- field parsing

# A parsed input as a plain tuple in ``Tick`` field order (also the wire row of
# ``serde.encode_ticks``): symbol, ts_ms, price, bid, ask, size, venue, seq, recv_ms.
Row = tuple[str, int, float, float | None, float | None, float | None, str | None, int | None, int]

_INF = math.inf
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
    if isinstance(value, str) and _INT_RE.match(value):
        return int(value)
    raise InvalidInput(MALFORMED, f"{name} {value!r} is not an integer")


def parse_ts_ms(value: Any) -> int:
    """Epoch milliseconds from an int, a digit string or ISO-8601 text (naive = UTC)."""
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(MALFORMED, _BAD_TS.format(value)) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _ONE_MS
    try:
        return _parse_int("ts", value)
    except InvalidInput:
        raise InvalidInput(MALFORMED, _BAD_TS.format(value)) from None


def _check_price(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InvalidInput(INVALID_PRICE, f"{name} {value!r} is not a finite positive price")


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


def _quick_row(fields: Mapping[str, Any], recv_ms: int, min_ts_ms: int) -> Row | None:
    """The row of an input in one of the common shapes that passes every per-input check.

    Shapes: JSON-typed values (str symbol, int ts, float or int numbers, int seq) and
    plain text (CSV: decimal numbers, epoch-ms or ISO-8601 ts, digit seq). Anything else,
    and anything that fails a check, gives None: ``_checked_row`` then decides, with the
    reason and detail of the first problem. Where this returns a row it is the row
    ``_checked_row`` would build (``float(text)`` equals ``float(text.strip())`` whenever it
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
    if not symbol:
        return None
    kind = type(ts)
    if kind is str:
        try:
            ts = parse_ts_ms(ts)
        except InvalidInput:
            return None
    elif kind is not int:
        return None
    if ts < min_ts_ms:
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
            elif seq.isdigit() and seq.isascii():
                seq = int(seq)
            else:
                return None
        elif kind is not int:
            return None
    if venue is not None:
        if type(venue) is not str:
            return None
        venue = venue.strip() or None
    if not (
        0.0 < price < _INF
        and (bid is None or 0.0 < bid < _INF)
        and (ask is None or 0.0 < ask < _INF)
        and (size is None or 0.0 <= size < _INF)
        and (bid is None or ask is None or bid <= ask)
    ):
        return None
    return (symbol, ts, price, bid, ask, size, venue, seq, recv_ms)


def _checked_row(fields: Mapping[str, Any], recv_ms: int, min_ts_ms: int) -> Row:
    """Any input: its row, or ``InvalidInput`` naming the first problem (the checks in order)."""
    get = fields.get
    for name in ("symbol", "ts", "price"):
        if _absent(get(name)):
            raise InvalidInput(MALFORMED, f"required field {name} is missing")
    symbol = fields["symbol"]
    if not isinstance(symbol, str):
        raise InvalidInput(MALFORMED, f"symbol {symbol!r} is a {type(symbol).__name__}, not text")
    ts_ms = parse_ts_ms(fields["ts"])
    if ts_ms < min_ts_ms:
        raise InvalidInput(
            MALFORMED,
            f"ts {fields['ts']!r} = {ts_ms} ms is before {min_ts_ms} ms"
            " (epoch seconds instead of milliseconds?)",
        )
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
    _check_price("price", price)
    _check_price("bid", bid)
    _check_price("ask", ask)
    if size is not None and not (math.isfinite(size) and size >= 0):
        raise InvalidInput(INVALID_PRICE, f"size {size!r} is not a finite size >= 0")
    if bid is not None and ask is not None and bid > ask:
        raise InvalidInput(CROSSED_QUOTE, f"bid {bid!r} > ask {ask!r}")
    return (symbol.strip(), ts_ms, price, bid, ask, size, venue, seq, recv_ms)


def parse_tick(fields: Mapping[str, Any], recv_ms: int, min_ts_ms: int = _Y2K_MS) -> Tick:
    """Build a Tick from source fields, or raise ``InvalidInput`` naming the first problem.

    Covers the per-input checks (malformed, invalid_price, crossed_quote);
    checks that need time or history live in ``Validator``.
    """
    row = _quick_row(fields, recv_ms, min_ts_ms)
    return Tick(*(row or _checked_row(fields, recv_ms, min_ts_ms)))


# ---------------------------------------------------------------- per-symbol state

_Held = tuple[Row, RawTick]


class _Symbol:
    """One symbol's history: recent ticks (for duplicates) and the spike quarantine.

    Duplicates: ``seen`` maps an event time to the row remembered with it (a list of
    rows when several distinct ticks share it); two rows are the same tick when their
    ``Tick.identity()`` fields are equal, which is what a set of identities decides
    (for the numbers parsing lets through, equal means equal hash). A time is kept
    while it is within the horizon of the symbol's newest one: times in event-time
    order (the common case) queue in ``by_ts`` (append right, forget left), older ones
    in the ``late`` heap; after every addition whatever is older than the cutoff is
    forgotten from both. Each kept time is in exactly one of the two.
    """

    __slots__ = (
        "symbol",
        "seen",
        "by_ts",
        "late",
        "newest_ts_ms",
        "ref_price",
        "ref_ts_ms",
        "suspect",
        "held",
        "confirmations",
        "near",
        "far",
        "near_ms",
        "calm",
    )

    def __init__(self, symbol: str, limits: SpikeThresholds, spike_filter: bool) -> None:
        self.symbol = symbol
        self.seen: dict[int, Row | list[Row]] = {}
        self.by_ts: deque[int] = deque()
        self.late: list[int] = []
        self.newest_ts_ms: float = -math.inf
        self.ref_price: float | None = None
        self.ref_ts_ms: int | None = None  # None with a price: a seeded reference without time
        self.suspect: _Held | None = None
        self.held: list[_Held] = []
        self.confirmations = 0
        self.near = limits.near_pct / 100.0
        self.far = limits.far_pct / 100.0
        self.near_ms = limits.near_ms
        # a move within ``calm`` of the reference is never suspect, whatever the time
        # apart (near <= far): the common case is decided by one comparison
        self.calm = self.near if spike_filter else _INF

    def remembered(self) -> int:
        return sum(1 if type(rows) is tuple else len(rows) for rows in self.seen.values())


def _rel(a: float, b: float) -> float:
    return abs(a - b) / b


class Validator:
    """Stateful validator of one input stream (keep one per source).

    ``feed``/``feed_many``/``finish`` return ``Verdicts`` of ``Tick``s; ``feed_row`` and
    ``finish_rows`` are the same decisions for a hot loop (the publisher's): accepted
    ticks as rows in ``Tick`` field order, no per-input containers.
    """

    def __init__(self, config: ValidationConfig | None = None, now_ms: Callable[[], int] = wall_ms):
        self.config = config or ValidationConfig()
        self._now_ms = now_ms
        self._symbols: dict[str, _Symbol] = {}
        self._min_ts_ms = self.config.min_ts_ms
        self._max_future_ms = self.config.max_future_ms
        self._horizon_ms = self.config.duplicate_horizon_ms
        self._wall_clock = now_ms is wall_ms  # read inline: wall_ms() without the call

    def feed(self, raw: RawTick) -> Verdicts:
        """Decide one input; the verdicts may also settle earlier held ticks."""
        accepted: list[Row] = []
        rejected: list[Rejection] = []
        row = self.feed_row(raw, accepted, rejected)
        if row is not None:
            return Verdicts([Tick(*row)], rejected)
        return Verdicts([Tick(*r) for r in accepted], rejected)

    def feed_many(self, raws: Iterable[RawTick]) -> Verdicts:
        """Feed an iterable of inputs; handy for batches and tests."""
        accepted: list[Row] = []
        rejected: list[Rejection] = []
        feed_row = self.feed_row
        for raw in raws:
            row = feed_row(raw, accepted, rejected)
            if row is not None:
                accepted.append(row)
        return Verdicts([Tick(*r) for r in accepted], rejected)

    def finish(self) -> Verdicts:
        """End of input: reject unconfirmed suspects and settle every held tick."""
        accepted: list[Row] = []
        rejected: list[Rejection] = []
        self.finish_rows(accepted, rejected)
        return Verdicts([Tick(*r) for r in accepted], rejected)

    def feed_row(self, raw: RawTick, accepted: list[Row], rejected: list[Rejection]) -> Row | None:
        """Decide one input, as ``feed`` does, for a hot loop.

        The common outcome, this input accepted and nothing else settled, is returned as
        its row and appended nowhere. Otherwise None is returned and whatever was decided
        (rejections, ticks released from quarantine as rows) is appended to ``rejected``
        and ``accepted``, each in order.
        """
        fields = raw.fields
        if fields is None:
            rejected.append(_reject(raw, MALFORMED, raw.error or "input has no fields"))
            return None
        row = _quick_row(fields, raw.recv_ms, self._min_ts_ms)
        if row is None:
            try:
                row = _checked_row(fields, raw.recv_ms, self._min_ts_ms)
            except InvalidInput as bad:
                symbol = fields.get("symbol")
                symbol = symbol.strip() if isinstance(symbol, str) and symbol.strip() else None
                rejected.append(_reject(raw, bad.reason, bad.detail, symbol))
                return None
        symbol, ts_ms, price = row[0], row[1], row[2]
        ahead_ms = ts_ms - (_time_ns() // 1_000_000 if self._wall_clock else self._now_ms())
        if ahead_ms > self._max_future_ms:
            detail = (
                f"ts {ts_ms} is {ahead_ms} ms ahead of now (more than {self._max_future_ms} ms)"
            )
            rejected.append(_reject(raw, FUTURE_TS, detail, symbol))
            return None
        state = self._symbols.get(symbol)
        if state is None:
            state = self._new_state(symbol)
        seen = state.seen
        if ts_ms in seen:
            if not self._remember_another(state, row, raw, rejected):
                return None
        elif ts_ms > state.newest_ts_ms:  # in event-time order: remember, forget the oldest
            seen[ts_ms] = row
            by_ts = state.by_ts
            by_ts.append(ts_ms)
            state.newest_ts_ms = ts_ms
            cutoff = ts_ms - self._horizon_ms
            if by_ts[0] < cutoff:
                while by_ts[0] < cutoff:
                    del seen[by_ts.popleft()]
            late = state.late
            while late and late[0] < cutoff:
                del seen[heapq.heappop(late)]
        elif ts_ms >= state.newest_ts_ms - self._horizon_ms:
            seen[ts_ms] = row
            heapq.heappush(state.late, ts_ms)
        # else: already beyond the horizon, forgotten at once
        if state.suspect is None:
            ref = state.ref_price
            if ref is None or abs(price - ref) / ref <= state.calm:
                state.ref_price, state.ref_ts_ms = price, ts_ms
                return row
        self._spike_stage(state, deque([(row, raw)]), accepted, rejected)
        return None

    def finish_rows(self, accepted: list[Row], rejected: list[Rejection]) -> None:
        """``finish`` for a hot loop: appends rows and rejections."""
        for state in self._symbols.values():
            while state.suspect is not None:
                self._reject_suspect(state, accepted, rejected, "still unconfirmed at end of input")

    def held_count(self) -> int:
        """Ticks waiting in quarantine (suspects and those held behind them)."""
        return sum((s.suspect is not None) + len(s.held) for s in self._symbols.values())

    def remembered_count(self) -> int:
        """Tick identities kept for duplicate detection (bounded by the horizon)."""
        return sum(s.remembered() for s in self._symbols.values())

    # ------------------------------------------------------------ internals

    def _new_state(self, symbol: str) -> _Symbol:
        config = self.config
        state = self._symbols[symbol] = _Symbol(
            symbol, config.thresholds(symbol), config.spike_filter
        )
        seed = config.reference_prices.get(symbol)
        if seed is not None:
            state.ref_price = float(seed)
        return state

    @staticmethod
    def _remember_another(
        state: _Symbol, row: Row, raw: RawTick, rejected: list[Rejection]
    ) -> bool:
        """A tick at an event time already remembered: a duplicate (rejected) or another."""
        ts_ms = row[1]
        kept = state.seen[ts_ms]
        rows = [kept] if type(kept) is tuple else kept
        key = (row[2], row[5], row[7])  # with symbol and ts_ms, the identity
        for other in rows:
            if (other[2], other[5], other[7]) == key:
                identity = (row[0], ts_ms, row[2], row[5], row[7])
                detail = f"(symbol, ts_ms, price, size, seq) {identity!r} repeats an earlier tick"
                rejected.append(_reject(raw, DUPLICATE, detail, row[0]))
                return False
        if rows is kept:
            kept.append(row)
        else:
            state.seen[ts_ms] = [kept, row]
        return True

    def _spike_stage(
        self,
        state: _Symbol,
        work: deque[_Held],
        accepted: list[Row],
        rejected: list[Rejection],
    ) -> None:
        """Run ticks (in order) through the quarantine; rejected suspects re-queue their held."""
        while work:
            item = work.popleft()
            row = item[0]
            if state.suspect is None:
                if self._is_suspect(state, row):
                    state.suspect = item
                    state.confirmations = 0
                else:
                    self._accept(state, row, accepted)
                continue
            state.held.append(item)
            near = state.near
            price = row[2]
            to_suspect = _rel(price, state.suspect[0][2])
            assert state.ref_price is not None  # a suspect always has a reference
            to_ref = _rel(price, state.ref_price)
            if to_suspect <= near and (to_ref > near or to_suspect < to_ref):
                state.confirmations += 1
                if state.confirmations >= self.config.confirm_ticks:
                    self._accept(state, state.suspect[0], accepted)
                    for held, _ in state.held:
                        self._accept(state, held, accepted)
                    state.suspect, state.held = None, []
            else:
                where = "back near" if to_ref <= near else "far from both the suspect and"
                why = f"next tick {price!r} is {where} the last accepted price"
                held = self._reject_suspect(state, accepted, rejected, why, requeue=False)
                work.extendleft(reversed(held))

    def _reject_suspect(
        self,
        state: _Symbol,
        accepted: list[Row],
        rejected: list[Rejection],
        why: str,
        requeue: bool = True,
    ) -> list[_Held]:
        """Reject the suspect; its held ticks are re-run now or returned to the caller."""
        assert state.suspect is not None and state.ref_price is not None
        row, raw = state.suspect
        price, ref = row[2], state.ref_price
        detail = (
            f"price {price!r} is {_rel(price, ref) * 100:.2f}% from the last"
            f" accepted {ref!r}; {why}"
        )
        rejected.append(_reject(raw, SPIKE, detail, row[0]))
        held, state.suspect, state.held = state.held, None, []
        if requeue:
            self._spike_stage(state, deque(held), accepted, rejected)
        return held

    def _is_suspect(self, state: _Symbol, row: Row) -> bool:
        if not self.config.spike_filter or state.ref_price is None:
            return False
        near = state.ref_ts_ms is not None and abs(row[1] - state.ref_ts_ms) < state.near_ms
        return _rel(row[2], state.ref_price) > (state.near if near else state.far)

    @staticmethod
    def _accept(state: _Symbol, row: Row, accepted: list[Row]) -> None:
        state.ref_price, state.ref_ts_ms = row[2], row[1]
        accepted.append(row)


def _reject(raw: RawTick, reason: str, detail: str, symbol: str | None = None) -> Rejection:
    return Rejection(raw.raw, raw.source, raw.position, reason, detail, raw.recv_ms, symbol)
