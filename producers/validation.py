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


def parse_tick(fields: Mapping[str, Any], recv_ms: int, min_ts_ms: int = _Y2K_MS) -> Tick:
    """Build a Tick from source fields, or raise ``InvalidInput`` naming the first problem.

    Covers the per-input checks (malformed, invalid_price, crossed_quote);
    checks that need time or history live in ``Validator``.
    """
    for name in ("symbol", "ts", "price"):
        if _absent(fields.get(name)):
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
    optional = {name: fields.get(name) for name in ("bid", "ask", "size", "venue", "seq")}
    bid = None if _absent(optional["bid"]) else _parse_float("bid", optional["bid"])
    ask = None if _absent(optional["ask"]) else _parse_float("ask", optional["ask"])
    size = None if _absent(optional["size"]) else _parse_float("size", optional["size"])
    seq = None if _absent(optional["seq"]) else _parse_int("seq", optional["seq"])
    venue = optional["venue"]
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
    return Tick(symbol.strip(), ts_ms, price, bid, ask, size, venue, seq, recv_ms)


# ---------------------------------------------------------------- per-symbol state


@dataclass(slots=True)
class _Seen:
    """Identities of one symbol's recent ticks, forgotten beyond the horizon."""

    ids: set[tuple[object, ...]] = field(default_factory=set)
    by_ts: list[tuple[int, int, tuple[object, ...]]] = field(default_factory=list)
    newest_ts_ms: int | None = None
    counter: int = 0

    def add(self, identity: tuple[object, ...], ts_ms: int, horizon_ms: int) -> None:
        self.ids.add(identity)
        self.counter += 1
        heapq.heappush(self.by_ts, (ts_ms, self.counter, identity))
        if self.newest_ts_ms is None or ts_ms > self.newest_ts_ms:
            self.newest_ts_ms = ts_ms
        cutoff = self.newest_ts_ms - horizon_ms
        while self.by_ts and self.by_ts[0][0] < cutoff:
            self.ids.discard(heapq.heappop(self.by_ts)[2])


@dataclass(slots=True)
class _Symbol:
    seen: _Seen = field(default_factory=_Seen)
    ref_price: float | None = None
    ref_ts_ms: int | None = None  # None with a price: a seeded reference without time
    suspect: tuple[Tick, RawTick] | None = None
    held: list[tuple[Tick, RawTick]] = field(default_factory=list)
    confirmations: int = 0


def _rel(a: float, b: float) -> float:
    return abs(a - b) / b


class Validator:
    """Stateful validator of one input stream (keep one per source)."""

    def __init__(self, config: ValidationConfig | None = None, now_ms: Callable[[], int] = wall_ms):
        self.config = config or ValidationConfig()
        self._now_ms = now_ms
        self._symbols: dict[str, _Symbol] = {}

    def feed(self, raw: RawTick) -> Verdicts:
        """Decide one input; the verdicts may also settle earlier held ticks."""
        out = Verdicts()
        if raw.fields is None:
            out.rejected.append(_reject(raw, MALFORMED, raw.error or "input has no fields"))
            return out
        try:
            tick = parse_tick(raw.fields, raw.recv_ms, self.config.min_ts_ms)
            self._check_time(tick)
            state = self._state(tick.symbol)
            identity = tick.identity()
            if identity in state.seen.ids:
                raise InvalidInput(
                    DUPLICATE,
                    f"(symbol, ts_ms, price, size, seq) {identity!r} repeats an earlier tick",
                )
        except InvalidInput as bad:
            symbol = raw.fields.get("symbol")
            symbol = symbol.strip() if isinstance(symbol, str) and symbol.strip() else None
            out.rejected.append(_reject(raw, bad.reason, bad.detail, symbol))
            return out
        state.seen.add(identity, tick.ts_ms, self.config.duplicate_horizon_ms)
        self._spike_stage(state, deque([(tick, raw)]), out)
        return out

    def feed_many(self, raws: Iterable[RawTick]) -> Verdicts:
        """Feed an iterable of inputs; handy for batches and tests."""
        out = Verdicts()
        for raw in raws:
            out.extend(self.feed(raw))
        return out

    def finish(self) -> Verdicts:
        """End of input: reject unconfirmed suspects and settle every held tick."""
        out = Verdicts()
        for state in self._symbols.values():
            while state.suspect is not None:
                self._reject_suspect(state, out, "still unconfirmed at end of input")
        return out

    def held_count(self) -> int:
        """Ticks waiting in quarantine (suspects and those held behind them)."""
        return sum((s.suspect is not None) + len(s.held) for s in self._symbols.values())

    def remembered_count(self) -> int:
        """Tick identities kept for duplicate detection (bounded by the horizon)."""
        return sum(len(s.seen.ids) for s in self._symbols.values())

    # ------------------------------------------------------------ internals

    def _state(self, symbol: str) -> _Symbol:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = _Symbol()
            seed = self.config.reference_prices.get(symbol)
            if seed is not None:
                state.ref_price = float(seed)
        return state

    def _check_time(self, tick: Tick) -> None:
        ahead_ms = tick.ts_ms - self._now_ms()
        if ahead_ms > self.config.max_future_ms:
            raise InvalidInput(
                FUTURE_TS,
                f"ts {tick.ts_ms} is {ahead_ms} ms ahead of now"
                f" (more than {self.config.max_future_ms} ms)",
            )

    def _spike_stage(
        self, state: _Symbol, work: deque[tuple[Tick, RawTick]], out: Verdicts
    ) -> None:
        """Run ticks (in order) through the quarantine; rejected suspects re-queue their held."""
        while work:
            tick, raw = work.popleft()
            if state.suspect is None:
                if self._is_suspect(state, tick):
                    state.suspect = (tick, raw)
                    state.confirmations = 0
                else:
                    self._accept(state, tick, out)
                continue
            state.held.append((tick, raw))
            near = self.config.thresholds(tick.symbol).near_pct / 100.0
            suspect_price = state.suspect[0].price
            to_suspect = _rel(tick.price, suspect_price)
            assert state.ref_price is not None  # a suspect always has a reference
            to_ref = _rel(tick.price, state.ref_price)
            if to_suspect <= near and (to_ref > near or to_suspect < to_ref):
                state.confirmations += 1
                if state.confirmations >= self.config.confirm_ticks:
                    self._accept(state, state.suspect[0], out)
                    for held_tick, _ in state.held:
                        self._accept(state, held_tick, out)
                    state.suspect, state.held = None, []
            else:
                where = "back near" if to_ref <= near else "far from both the suspect and"
                why = f"next tick {tick.price!r} is {where} the last accepted price"
                work.extendleft(reversed(self._reject_suspect(state, out, why, requeue=False)))

    def _reject_suspect(
        self, state: _Symbol, out: Verdicts, why: str, requeue: bool = True
    ) -> list[tuple[Tick, RawTick]]:
        """Reject the suspect; its held ticks are re-run now or returned to the caller."""
        assert state.suspect is not None and state.ref_price is not None
        tick, raw = state.suspect
        ref = state.ref_price
        detail = (
            f"price {tick.price!r} is {_rel(tick.price, ref) * 100:.2f}% from the last"
            f" accepted {ref!r}; {why}"
        )
        out.rejected.append(_reject(raw, SPIKE, detail, tick.symbol))
        held, state.suspect, state.held = state.held, None, []
        if requeue:
            self._spike_stage(state, deque(held), out)
        return held

    def _is_suspect(self, state: _Symbol, tick: Tick) -> bool:
        if not self.config.spike_filter or state.ref_price is None:
            return False
        limits = self.config.thresholds(tick.symbol)
        near = state.ref_ts_ms is not None and abs(tick.ts_ms - state.ref_ts_ms) < limits.near_ms
        pct = limits.near_pct if near else limits.far_pct
        return _rel(tick.price, state.ref_price) > pct / 100.0

    @staticmethod
    def _accept(state: _Symbol, tick: Tick, out: Verdicts) -> None:
        state.ref_price, state.ref_ts_ms = tick.price, tick.ts_ms
        out.accepted.append(tick)


def _reject(raw: RawTick, reason: str, detail: str, symbol: str | None = None) -> Rejection:
    return Rejection(raw.raw, raw.source, raw.position, reason, detail, raw.recv_ms, symbol)
