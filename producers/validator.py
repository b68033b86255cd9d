"""The stateful half of validation: future times, duplicates and the spike filter.

One ``Validator`` per input stream. The per-input checks come first
(``producers.parsing``); what is left needs the clock or the stream's history:

* ``future_ts``: event time more than ``max_future_ms`` ahead of the injected
  clock (``now_ms``, the wall clock by default);
* ``out_of_band``: a price outside the symbol's sanity band (``price_bands``): a
  price no confirmation can make plausible (a 5e7 for gold) is refused at once, before
  it can take the quarantine's place of reference or reach the kernels;
* ``duplicate``: same ``Tick.identity()`` as an earlier accepted-or-held tick,
  remembered per symbol within ``duplicate_horizon_ms`` of that symbol's newest
  event time, so memory stays bounded however long the stream runs;
* ``spike``: the filter below.

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
previous close) or ``reference_ranges`` a range (the record seeds' all-time low
and high, ``ValidationConfig.with_record_seeds``): the first tick's reference is
then the nearest point of the range (itself, inside it). A seeded reference has no
time, so the far threshold applies. Without either, whatever comes first is the
reference every later tick is judged by, an absurd first tick included: that is
what the seeds and the sanity band are for.

``feed_row`` is the publisher's per-tick path and is tuned for it: the common
outcome (this input accepted, nothing else settled) is decided inline, with one
call to the fast parse and no container but its row. Keep it that way; the
publisher bench (``bench/publisher.py``) measures it.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from time import time_ns as _time_ns

from producers.parsing import Row, checked_row, quick_row
from producers.reasons import DUPLICATE, FUTURE_TS, MALFORMED, OUT_OF_BAND, SPIKE, InvalidInput
from producers.records import RawTick, Rejection, Verdicts, wall_ms
from producers.validation_config import SpikeThresholds, ValidationConfig
from tickstream.model import Tick

_Held = tuple[Row, RawTick]
_Key = tuple[float, float | None, int | None]
"""A remembered tick's identity without its symbol and time: (price, size, seq)."""


class _Symbol:
    """One symbol's history: recent ticks (for duplicates) and the spike quarantine.

    Duplicates: ``seen`` maps an event time to the row remembered with it, or, when
    several distinct ticks share it, to the set of their identities' other fields
    (price, size, seq); two rows are the same tick when their ``Tick.identity()`` fields
    are equal, which is what a set decides (for the numbers parsing lets through, equal
    means equal hash). A set, not a list to scan: a feed stamped to the second shares
    one time among thousands of ticks, and a scan made each of them cost more than the
    last (20,000 ticks of one second took 8.7 s to check). A time is kept
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
        "low",
        "high",
        "ref_range",
    )

    def __init__(self, symbol: str, limits: SpikeThresholds, spike_filter: bool) -> None:
        self.symbol = symbol
        self.seen: dict[int, Row | set[_Key]] = {}
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
        self.calm = self.near if spike_filter else math.inf
        self.low, self.high = 0.0, math.inf  # the sanity band
        self.ref_range: tuple[float, float] | None = None  # the first tick's reference

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
        row = quick_row(fields, raw.recv_ms, self._min_ts_ms)
        if row is None:
            try:
                row = checked_row(fields, raw.recv_ms, self._min_ts_ms)
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
        if not state.low <= price <= state.high:
            detail = (
                f"price {price!r} is outside {symbol}'s sanity band [{state.low!r}, {state.high!r}]"
            )
            rejected.append(_reject(raw, OUT_OF_BAND, detail, symbol))
            return None
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
            if ref is None and state.ref_range is not None:
                ref = self._first_reference(state, price)
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
        else:
            state.ref_range = config.reference_ranges.get(symbol)
        band = config.price_bands.get(symbol)
        if band is not None:
            state.low, state.high = band
        return state

    @staticmethod
    def _first_reference(state: _Symbol, price: float) -> float:
        """A range's point nearest the first price: inside the range, the price itself
        (nothing to suspect); outside, the bound it left by (judged from there)."""
        assert state.ref_range is not None
        low, high = state.ref_range
        state.ref_range = None
        state.ref_price, state.ref_ts_ms = min(max(price, low), high), None
        return state.ref_price

    @staticmethod
    def _remember_another(
        state: _Symbol, row: Row, raw: RawTick, rejected: list[Rejection]
    ) -> bool:
        """A tick at an event time already remembered: a duplicate (rejected) or another."""
        ts_ms = row[1]
        kept = state.seen[ts_ms]
        key = (row[2], row[5], row[7])  # with symbol and ts_ms, the identity
        if type(kept) is tuple:  # one row so far
            first = (kept[2], kept[5], kept[7])
            repeated = first == key
            if not repeated:
                state.seen[ts_ms] = {first, key}
        else:
            repeated = key in kept
            if not repeated:
                kept.add(key)
        if repeated:
            identity = (row[0], ts_ms, row[2], row[5], row[7])
            detail = f"(symbol, ts_ms, price, size, seq) {identity!r} repeats an earlier tick"
            rejected.append(_reject(raw, DUPLICATE, detail, row[0]))
        return not repeated

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
