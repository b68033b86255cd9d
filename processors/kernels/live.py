"""Live signals: provisional on arrival, confirmed or retracted at the watermark.

Two paths, one truth. The exact kernels (records.py, rolling_breaks.py) decide in event
time once the watermark releases a tick, which costs the allowed lateness. This stage
tells the desk at once, and then owns up:

- **provisional**: every accepted (not late) tick is evaluated when it arrives, per
  symbol in arrival order, against the state as of the last confirmed point (the exact
  kernels' state) plus the ticks accepted since (the held ones):
  * all-time highs/lows and level crossings (with milestone velocity): a *shadow*
    ``RecordKernel`` holding "exact state + held ticks, in event order". An in-order
    arrival is simply fed to it. An out-of-order one rebuilds it (a copy of the exact
    state, then the held ticks with the newcomer in its place), so the newcomer is
    judged where it belongs in event time; signals of later-stamped held ticks that it
    brings about (a level re-armed, say) are announced then, those it undoes wait for
    the watermark to retract them. Past ``RESYNC_BUDGET`` rebuilds of a symbol in one
    step (a badly jittered feed in big batches), further out-of-order arrivals of the
    step are fed in arrival order and the shadow is rebuilt once, after the exact step;
  * new highs/lows of each rolling window: the contract's definition applied to every
    tick known at arrival (released or held) stamped in ``(t - W, t]``: the exact
    kernel's answer unless an earlier-stamped tick is still to come;
  * synchronized highs: the exact kernel's group state plus the members' provisional
    ATHs, in event order, up to the oldest of the members' newest ticks (every member
    has ticked past them); once per step, before the exact step; at the end of input,
    all of them.
  Each is a ``SignalEvent`` with status ``provisional`` (announced 0).
- **confirmed**: each exact ``RecordBreak``/``RollingBreak`` row gives a ``confirmed``
  event with the exact row, ``announced`` 1 if a provisional event with its id came
  first, else 0 (an id new to the desk).
- **retracted**: a provisional id still unconfirmed once its symbol's watermark is past
  its event time (for a sync, every member's of its group; at the end of input, all) is
  retracted, with the provisional row, ``announced`` 1 and a reason saying what happened
  in event order, e.g. "an earlier-stamped tick at 5001.0 (ts …) arrived later and set
  the all-time high first", "in event order the previous all-time high was 5000.5
  (ts …), not 4999.0: re-issued as <id>", "the group's synchronized high at ts … came
  first (within … ms)".

Ids are ``signal_id`` of the row (kind, identity, price), so the provisional and the
exact row of one signal share it, and replays reproduce it. Each id gets at most one
provisional event and exactly one confirmed or retracted event, across snapshot/restore
too. On an in-order stream (each symbol's ticks in event order, none late) nothing is
retracted and every confirmation was announced, with the very same row.

Time is injected: ``now_ms`` (the events' ``emitted_ms``) comes from the caller.
``recv_ms`` is the producer receipt of the tick behind the signal (for a sync, of the
ATH tick it fires on).

Speed: the ordering stage hands over only the arrivals outside the symbol's *quiet
band* (see ordering.py): an open price interval inside both the shadow's (no record,
no level threshold: records.py) and the shortest window's known low and high (no
rolling break in any window: longer windows hold those ticks too), valid until that
high or low leaves the shortest window. A tick inside costs one comparison. The held
ticks' extremes, needed when the band is rebuilt, are cached per symbol and extended by
the ticks held since, so no held tick is scanned twice.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import replace
from operator import attrgetter, itemgetter
from typing import Any

import orjson

from processors.kernels.ordering import LOUD, Band, Held, Released, Reorderer
from processors.kernels.records import RecordKernel
from processors.kernels.rolling_breaks import RollingBreakKernel
from tickstream.contracts import OutputRow, RecordBreak, RollingBreak, SignalEvent
from tickstream.contracts.rows import group_label, key_members, row_from_doc, signal_id_of
from tickstream.model import Tick

RESYNC_BUDGET = 16
"""Event-order rebuilds of one symbol's shadow per step; past it, arrival order."""

_NEVER = -(2**63)
_FOREVER = 2**63
_NO_MARKS: dict[str, int] = {}
_ts = attrgetter("ts_ms")
_first = itemgetter(0)
_price = itemgetter(3)  # of a held entry

Key = tuple[Any, ...]
"""(kind, *identity, price): what ``signal_id`` hashes; pending signals are keyed by it."""

Entry = tuple[int, int, Tick, float]  # a held tick: (ts_ms, arrival, tick, price)
Stairs = tuple[list[Tick], list[Tick]] | None  # the exact kernel's (highs, lows)

_PARTS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    t: attrgetter(*t.SPEC.identity, "price") for t in (RecordBreak, RollingBreak)
}
_REPLACEABLE = ("ath", "atl", "sync_ath")  # the previous record (or participants) is identity


def signal_key(row: RecordBreak | RollingBreak) -> Key:
    return (row.kind, *_PARTS[type(row)](row))


class _Pending:
    """A provisional signal waiting for the exact path."""

    __slots__ = ("id", "row", "json", "recv_ms", "arrival", "members")

    def __init__(
        self,
        id_: str,
        row: RecordBreak | RollingBreak,
        json: str,
        recv_ms: int | None,
        arrival: int,
        members: tuple[str, ...],
    ) -> None:
        self.id = id_
        self.row = row
        self.json = json
        self.recv_ms = recv_ms
        self.arrival = arrival  # of the tick behind it (-1: a sync)
        self.members = members  # whose watermarks make it final


class _Live:
    """Per symbol: the shortest window's known extremes, the held ticks' extremes (a
    cache over ``held[:hn]``), out-of-order arrivals, the shadow's order."""

    __slots__ = ("hi", "lo", "until", "hn", "hmax", "hmin", "early", "dirty", "resyncs")

    def __init__(self) -> None:
        self.hi: Tick | None = None  # latest known tick at the shortest window's high
        self.lo: Tick | None = None
        self.until = _NEVER  # hi and lo stay in that window for ticks stamped before this
        self.hn = 0
        self.hmax: Entry | None = None
        self.hmin: Entry | None = None
        self.early: list[tuple[int, Tick]] = []  # out-of-order arrivals: (arrival, tick)
        self.dirty = False  # the shadow holds this step's held ticks in arrival order
        self.resyncs = 0  # event-order rebuilds in this step


class LiveSignals:
    """Provisional signals on arrival; confirmation or retraction at the watermark.

    Wired by ``Analytics``: ``arrive`` is the ordering stage's ``ArrivalWatcher``;
    ``announce_syncs`` runs after the arrivals, before the exact step; ``settle`` after
    the exact kernels, with their rows. It reads (never writes) the exact kernels.
    """

    def __init__(
        self, records: RecordKernel, rolling: RollingBreakKernel, ordering: Reorderer
    ) -> None:
        self._records = records
        self._rolling = rolling
        self._ordering = ordering
        self._shadow = RecordKernel(replace(records.config, sync_groups=()))
        self._windows = rolling.ascending
        self._window_ms = dict(self._windows)
        self._w0 = self._windows[0][1]
        self._span = records.config.sync_span_ms
        self._groups = records.sync_groups()
        self._groups_of: dict[str, list[int]] = {}
        for gi, group in enumerate(self._groups):
            for member in group.members:
                self._groups_of.setdefault(member, []).append(gi)
        # per group, per member: ATH events [ts, price, recv_ms] the exact has not taken
        self._aths: list[dict[str, list[list[Any]]]] = [
            {m: [] for m in g.members} for g in self._groups
        ]
        self._sim_marks: list[Any] = [None] * len(self._groups)
        self._symbols: dict[str, _Live] = {}
        self._busy: set[str] = set()  # symbols with out-of-order arrivals to look after
        self._pending: dict[Key, _Pending] = {}
        self._done: dict[Key, tuple[tuple[str, ...], int]] = {}  # confirmed or retracted
        # recent exact ath/atl/sync rows by the tick they fired on, with their symbols
        self._exact: dict[tuple[Any, ...], tuple[Any, tuple[str, ...]]] = {}
        self._events: list[SignalEvent] = []
        self.now_ms = 0

    # -- arrivals -------------------------------------------------------------------------

    def arrive(self, tick: Tick, arrival: int, held: Held, newest_ms: int) -> Band:
        """Evaluate one accepted arrival (``held``: the symbol's held ticks before it)."""
        symbol = tick.symbol
        live = self._symbols.get(symbol)
        if live is None:
            live = self._symbols[symbol] = _Live()
        ts = tick.ts_ms
        in_order = ts >= newest_ms
        rows: list[Any]
        if in_order or live.resyncs >= RESYNC_BUDGET:
            quiet = self._shadow.quiet_band(symbol)
            if quiet is not None and quiet[0] < tick.price < quiet[1]:
                rows = []  # the shadow would not move: spare it the call
            else:
                rows = self._shadow.update((tick,), _NO_MARKS)
                if rows:
                    self._note_aths(rows, tick.recv_ms)
            if not in_order:
                live.dirty = True
        else:
            live.resyncs += 1
            rows = self._resync(symbol, held, (tick, arrival))
        stairs = self._rolling.staircases(symbol)
        if in_order:
            if live.hi is None or ts >= live.until:  # the extremes left the window: again
                self._rebase(live, held, stairs, ts, None)
            if live.hi is None:  # nothing earlier in the shortest window
                self._evaluate(tick, live, held, stairs, True, rows)
                self._rebase(live, held, stairs, ts, tick)
            else:
                self._in_band(tick, live, held, stairs, rows)
        else:
            live.early.append((arrival, tick))
            self._busy.add(symbol)
            self._evaluate(tick, live, held, stairs, False, rows)
            self._rebase(live, held, stairs, newest_ms, tick)
            self._held_insert(live, held, (ts, arrival, tick, tick.price))
        recv = tick.recv_ms
        for row in rows:
            self._announce(row, recv, arrival, (symbol,))
        return self._band(symbol, live)

    def _in_band(
        self, tick: Tick, live: _Live, held: Held, stairs: Stairs, rows: list[Any]
    ) -> None:
        """In order, the shortest window's extremes known: a tick beyond them breaks that
        window; longer ones are looked up only then."""
        symbol, ts, price = tick.symbol, tick.ts_ms, tick.price
        hi, lo = live.hi, live.lo
        assert hi is not None and lo is not None
        if price >= hi.price:
            if price > hi.price:
                first = self._windows[0][0]
                rows.append(RollingBreak(symbol, first, "new_high", ts, price, hi.price, hi.ts_ms))
                for label, w in self._windows[1:]:
                    prev = self._older(ts, w, hi, held, stairs, 0)
                    if prev.price >= price:
                        break
                    rows.append(
                        RollingBreak(symbol, label, "new_high", ts, price, prev.price, prev.ts_ms)
                    )
            live.hi = hi = tick
        if price <= lo.price:
            if price < lo.price:
                first = self._windows[0][0]
                rows.append(RollingBreak(symbol, first, "new_low", ts, price, lo.price, lo.ts_ms))
                for label, w in self._windows[1:]:
                    prev = self._older(ts, w, lo, held, stairs, 1)
                    if prev.price <= price:
                        break
                    rows.append(
                        RollingBreak(symbol, label, "new_low", ts, price, prev.price, prev.ts_ms)
                    )
            live.lo = lo = tick
        live.until = min(hi.ts_ms, lo.ts_ms) + self._w0

    def _older(
        self, ts: int, window: int, best: Tick, held: Held, stairs: Stairs, side: int
    ) -> Tick:
        """The high (side 0) or low (1) of ``(ts - window, ts]`` given ``best``, that of the
        shortest window: released ticks from the staircase, and the held ticks older than
        the shortest window (normally none: the lateness is shorter than the window)."""
        cutoff = ts - window
        if stairs is not None:
            stair = stairs[side]
            j = bisect_right(stair, cutoff, key=_ts)
            if j < len(stair):
                best = _better(stair[j], best, side)
        inner = ts - self._w0
        if held and held[0][0] <= inner:
            for e_ts, _, t, _ in held[bisect_right(held, (cutoff, _FOREVER)) :]:
                if e_ts > inner:
                    break
                best = _better(t, best, side)
        return best

    def _evaluate(
        self, tick: Tick, live: _Live, held: Held, stairs: Stairs, in_order: bool, rows: list[Any]
    ) -> None:
        """Every window from its definition over the known ticks (the slow path)."""
        symbol, ts, price = tick.symbol, tick.ts_ms, tick.price
        end = len(held) if in_order else bisect_right(held, (ts, _FOREVER))
        whole: tuple[Entry | None, Entry | None] | None = None  # held[:end]'s extremes
        highs: list[RollingBreak] = []
        lows: list[RollingBreak] = []
        for label, w in self._windows:
            cutoff = ts - w
            mx, mn = _stair_extremes(stairs, cutoff)
            start = 0 if not held or held[0][0] > cutoff else bisect_right(held, (cutoff, _FOREVER))
            if start < end:
                if start == 0:
                    if whole is None:
                        whole = self._held_extremes(live, held) if in_order else _scan(held, 0, end)
                    hmx, hmn = whole
                else:
                    hmx, hmn = _scan(held, start, end)
                mx, mn = _with(mx, mn, hmx, hmn)
            if mx is None or mn is None:
                continue  # no earlier tick in this window
            if price > mx.price:
                highs.append(RollingBreak(symbol, label, "new_high", ts, price, mx.price, mx.ts_ms))
            if price < mn.price:
                lows.append(RollingBreak(symbol, label, "new_low", ts, price, mn.price, mn.ts_ms))
        rows.extend(highs)
        rows.extend(lows)

    def _rebase(
        self, live: _Live, held: Held, stairs: Stairs, at: int, tick: Tick | None
    ) -> None:
        """The shortest window's extremes over the known ticks stamped in (at - W, at]
        (all of them are at or before ``at``), with ``tick`` if given."""
        cutoff = at - self._w0
        mx, mn = _stair_extremes(stairs, cutoff)
        if held:
            if held[0][0] > cutoff:
                hmx, hmn = self._held_extremes(live, held)
            else:
                hmx, hmn = _scan(held, bisect_right(held, (cutoff, _FOREVER)), len(held))
            mx, mn = _with(mx, mn, hmx, hmn)
        if tick is not None and tick.ts_ms > cutoff:  # out of order, it may not be the latest
            if mx is None or tick.price > mx.price or (
                tick.price == mx.price and tick.ts_ms >= mx.ts_ms
            ):
                mx = tick
            if mn is None or tick.price < mn.price or (
                tick.price == mn.price and tick.ts_ms >= mn.ts_ms
            ):
                mn = tick
        live.hi, live.lo = mx, mn
        live.until = _NEVER if mx is None or mn is None else min(mx.ts_ms, mn.ts_ms) + self._w0

    def _held_extremes(self, live: _Live, held: Held) -> tuple[Entry | None, Entry | None]:
        """Highest and lowest held ticks (the latest at each), extending the cache."""
        if live.hn < len(held):
            mx, mn = _scan(held, live.hn, len(held))  # later than the cached: wins ties
            if live.hmax is not None and mx is not None and live.hmax[3] > mx[3]:
                mx = live.hmax
            if live.hmin is not None and mn is not None and live.hmin[3] < mn[3]:
                mn = live.hmin
            live.hn, live.hmax, live.hmin = len(held), mx, mn
        return live.hmax, live.hmin

    @staticmethod
    def _held_insert(live: _Live, held: Held, entry: Entry) -> None:
        """An out-of-order tick goes into held at its place: keep the cache a prefix."""
        if bisect_right(held, (entry[0], _FOREVER)) >= live.hn:
            return  # lands in the part not scanned yet
        live.hn += 1
        mx, mn = live.hmax, live.hmin
        key = entry[:2]
        if mx is None or entry[3] > mx[3] or (entry[3] == mx[3] and key > mx[:2]):
            live.hmax = entry
        if mn is None or entry[3] < mn[3] or (entry[3] == mn[3] and key > mn[:2]):
            live.hmin = entry

    def _band(self, symbol: str, live: _Live) -> Band:
        quiet = self._shadow.quiet_band(symbol)
        if quiet is None or live.hi is None or live.lo is None:
            return LOUD
        return (max(quiet[0], live.lo.price), min(quiet[1], live.hi.price), live.until)

    def _note_aths(self, rows: list[Any], recv_ms: int | None) -> None:
        for row in rows:
            if row.record == "ath":
                for gi in self._groups_of.get(row.symbol, ()):
                    self._aths[gi][row.symbol].append([row.ts_ms, row.price, recv_ms])

    def _announce(
        self,
        row: RecordBreak | RollingBreak,
        recv_ms: int | None,
        arrival: int,
        members: tuple[str, ...],
    ) -> None:
        key = signal_key(row)
        if key in self._pending or key in self._done:
            return
        sid = signal_id_of(key)
        json = orjson.dumps(row).decode()
        self._pending[key] = _Pending(sid, row, json, recv_ms, arrival, members)
        self._events.append(
            SignalEvent(
                sid, "provisional", row.kind, row.symbol, row.ts_ms, row.price,
                recv_ms, self.now_ms, 0, "", json,
            )  # fmt: skip
        )

    # -- the shadow, rebuilt ----------------------------------------------------------------

    def _resync(
        self, symbol: str, held: Held, insert: tuple[Tick, int] | None = None
    ) -> list[Any]:
        """Shadow := exact state + the held ticks in event order, with ``insert`` (an
        out-of-order arrival, not held yet) in its place; returns that tick's own rows.

        Signals of held ticks not announced yet are announced now; those no longer made
        stay pending until the watermark retracts them."""
        self._shadow.adopt(self._records, symbol)
        for gi in self._groups_of.get(symbol, ()):
            old = {(e[0], e[1]): e[2] for e in self._aths[gi][symbol]}
            waiting = self._groups[gi].pending[symbol]
            self._aths[gi][symbol] = [[ts, p, old.get((ts, p))] for ts, p in waiting]
            self._sim_marks[gi] = None
        cut = len(held) if insert is None else bisect_right(held, (insert[0].ts_ms, _FOREVER))
        self._refeed(held[:cut])
        own: list[Any] = []
        if insert is not None:
            tick = insert[0]
            own = self._shadow.update((tick,), _NO_MARKS)
            if own:
                self._note_aths(own, tick.recv_ms)
            self._refeed(held[cut:])
        return own

    def _refeed(self, entries: Held) -> None:
        """Feed held ticks to the shadow in one go; note and announce what they make."""
        if not entries:
            return
        rows: list[Any] = self._shadow.update([e[2] for e in entries], _NO_MARKS)
        for row in rows:
            i = bisect_left(entries, (row.ts_ms,))
            while entries[i][3] != row.price:  # the tick behind the row: same ts and price
                i += 1
            _, arrival, tick, _ = entries[i]
            self._note_aths([row], tick.recv_ms)
            self._announce(row, tick.recv_ms, arrival, (tick.symbol,))

    # -- synchronized highs ---------------------------------------------------------------

    def announce_syncs(self, final: bool = False) -> None:
        """Provisional sync rows: the exact group state plus the members' ATHs seen since,
        in event order, up to the oldest of the members' newest ticks (all if final)."""
        for gi, group in enumerate(self._groups):
            aths = self._aths[gi]
            if not any(aths.values()):
                continue
            if final:
                limit = _FOREVER
            else:
                newest = [self._ordering.newest(m) for m in group.members]
                if None in newest:
                    continue  # a member without ticks holds the group (as the exact does)
                limit = min(newest)  # type: ignore[type-var]
            mark = (limit, sum(len(v) for v in aths.values()))
            if mark == self._sim_marks[gi]:
                continue  # nothing new since the last evaluation
            self._sim_marks[gi] = mark
            queues = [(m, sorted(aths[m], key=_first)) for m in group.members]
            pos = dict.fromkeys(group.members, 0)
            last_ath = dict(group.last_ath)
            last_sync = group.last_sync_ms
            span = self._span
            while True:  # the exact kernel's _sync, on the provisional events
                symbol, head, event = "", limit, None
                for member, queue in queues:
                    p = pos[member]
                    if p < len(queue) and queue[p][0] < head:
                        symbol, head, event = member, queue[p][0], queue[p]
                if event is None:
                    break
                pos[symbol] += 1
                ts, price, recv = event
                others = [
                    (m, t) for m, t in last_ath.items() if m != symbol and ts - span <= t <= ts
                ]
                last_ath[symbol] = ts
                if not others or (last_sync is not None and ts - last_sync <= span):
                    continue
                prev = min(t for _, t in others)
                label = group_label([symbol, *(m for m, _ in others)])
                since = (ts - prev) / 1000.0
                row = RecordBreak(label, "sync_ath", ts, price, 0.0, 0.0, prev, since, 0)
                last_sync = ts
                self._announce(row, recv, -1, group.members)

    # -- the exact step -------------------------------------------------------------------

    def settle(
        self,
        rows: list[OutputRow],
        released: Released,
        watermarks: Mapping[str, int] | None,
        now_ms: int,
    ) -> list[SignalEvent]:
        """After the exact kernels: confirm, retract, tidy up.

        ``watermarks`` None means the end of input (a flush): everything is final.
        Returns this step's events: provisional first, then confirmations, retractions.
        """
        self.now_ms = now_ms
        final = watermarks is None
        for symbol, ticks in released.by_symbol.items():
            live = self._symbols.get(symbol)
            if live is not None:
                _released(live, self._ordering.held(symbol), len(ticks))
        for symbol in self._busy:
            live = self._symbols[symbol]
            if live.dirty:
                live.dirty = False
                self._resync(symbol, self._ordering.held(symbol))
                self._ordering.set_quiet(symbol, self._band(symbol, live))
            live.resyncs = 0
        events = self._events
        self._events = []
        pending, done, exact = self._pending, self._done, self._exact
        for row in rows:
            parts = _PARTS.get(type(row))
            if parts is None:
                continue
            sig: Any = row
            key = (sig.kind, *parts(sig))
            if key in done:
                continue  # the same signal again (a level re-crossed within one instant)
            p = pending.pop(key, None)
            if p is not None:
                json = p.json if p.row == sig else orjson.dumps(sig).decode()
                events.append(
                    SignalEvent(
                        p.id, "confirmed", sig.kind, sig.symbol, sig.ts_ms, sig.price,
                        p.recv_ms, now_ms, 1, "", json,
                    )  # fmt: skip
                )
                members = p.members
            else:
                events.append(
                    SignalEvent(
                        signal_id_of(key), "confirmed", sig.kind, sig.symbol, sig.ts_ms,
                        sig.price, self._recv_of(sig, released), now_ms, 0, "",
                        orjson.dumps(sig).decode(),
                    )  # fmt: skip
                )
                members = key_members(sig.symbol)
            done[key] = (members, sig.ts_ms)
            if sig.kind == "record_break" and sig.record in _REPLACEABLE:
                exact[_exact_key(sig)] = (sig, members)
        marks: Mapping[str, int] = watermarks if watermarks is not None else {}
        if pending:
            for key, p in list(pending.items()):
                if final or all(marks.get(m, _NEVER) > p.row.ts_ms for m in p.members):
                    del pending[key]
                    events.append(
                        SignalEvent(
                            p.id, "retracted", p.row.kind, p.row.symbol, p.row.ts_ms,
                            p.row.price, p.recv_ms, now_ms, 1, self._reason(p), p.json,
                        )  # fmt: skip
                    )
        self._prune(marks, final)
        return events

    def _recv_of(self, row: Any, released: Released) -> int | None:
        """The receipt time of the tick behind an exact row nobody announced."""
        if row.record == "sync_ath":
            for aths in self._aths:
                for member in key_members(row.symbol):
                    for ts, price, recv in aths.get(member, ()):
                        if ts == row.ts_ms and price == row.price:
                            return recv  # type: ignore[no-any-return]
            return None
        ticks = released.by_symbol.get(row.symbol, ())
        i = bisect_left(ticks, row.ts_ms, key=_ts)
        while i < len(ticks) and ticks[i].ts_ms == row.ts_ms:
            if ticks[i].price == row.price:
                return ticks[i].recv_ms
            i += 1
        return None

    def _prune(self, marks: Mapping[str, int], final: bool) -> None:
        """Forget what can no longer change: final instants, ATH events the exact took."""
        if final:
            self._done.clear()
            self._exact.clear()
            for aths in self._aths:
                for events in aths.values():
                    events.clear()
            for live in self._symbols.values():
                live.early.clear()
            self._busy.clear()
            return
        done = self._done
        for key, (members, ts) in list(done.items()):
            if all(marks.get(m, _NEVER) > ts for m in members):
                del done[key]
        exact = self._exact
        for key, (row, members) in list(exact.items()):
            if all(marks.get(m, _NEVER) > row.ts_ms for m in members):
                del exact[key]
        for gi, group in enumerate(self._groups):
            limit = min(marks.get(m, _NEVER) for m in group.members)
            for member, events in self._aths[gi].items():
                if events and min(e[0] for e in events) < limit:
                    self._aths[gi][member] = [e for e in events if e[0] >= limit]
        for symbol in list(self._busy):
            live = self._symbols[symbol]
            horizon = marks.get(symbol, _NEVER) - self._ordering.lateness_of(symbol)
            live.early = [(a, t) for a, t in live.early if t.ts_ms >= horizon]
            if not live.early:
                self._busy.discard(symbol)

    # -- reasons --------------------------------------------------------------------------

    def _reason(self, p: _Pending) -> str:
        """Why the exact path did not confirm a provisional signal, in desk words."""
        row: Any = p.row
        up = row.record in ("ath", "level_up", "new_high", "sync_ath")
        side = "high" if up else "low"
        if row.kind == "record_break":
            if row.record == "sync_ath":
                return self._sync_reason(p)
            if row.record in ("ath", "atl"):
                found = self._exact.get(_exact_key(row))
                if found is not None:
                    exact = found[0]
                    return (
                        f"in event order the previous all-time {side} was {exact.level} "
                        f"(ts {exact.prev_ts_ms}), not {row.level}: re-issued as "
                        f"{signal_id_of(signal_key(exact))}"
                    )
        # what the signal claimed, and the price an earlier tick had to reach to take it
        if row.kind == "rolling_break":
            done = claim = f"set the {row.window} {side}"
            bar, floor = row.price, row.ts_ms - self._window_ms[row.window]
        elif row.record in ("ath", "atl"):
            done = claim = f"set the all-time {side}"
            bar, floor = row.price, _NEVER
        else:
            way = "up" if up else "down"
            done, claim = f"crossed {row.level} {way}", f"cross {row.level} {way}"
            bar, floor = row.level, _NEVER
        live = self._symbols.get(row.symbol)
        early = live.early if live is not None else []
        culprits = [t for a, t in early if a > p.arrival and floor < t.ts_ms <= row.ts_ms]
        if culprits:
            if up:
                c = max(culprits, key=lambda t: (t.price, t.ts_ms))
                beats = c.price >= bar
            else:
                c = min(culprits, key=lambda t: (t.price, -t.ts_ms))
                beats = c.price <= bar
            late = f"an earlier-stamped tick at {c.price} (ts {c.ts_ms}) arrived later"
            if beats:
                return f"{late} and {done} first"
            return f"{late}: in event order this tick did not {claim}"
        if any(a == p.arrival for a, _ in early):
            return (
                f"this tick was stamped before ticks that arrived ahead of it: in event "
                f"order it did not {claim}"
            )
        return f"in event order this tick did not {claim} (ticks arrived out of order)"

    def _sync_reason(self, p: _Pending) -> str:
        row: Any = p.row
        found = self._exact.get(_exact_key(row))
        if found is not None:
            exact = found[0]
            return (
                f"in event order the participants were {exact.symbol}, not {row.symbol}: "
                f"re-issued as {signal_id_of(signal_key(exact))}"
            )
        group = next((g for g in self._groups if g.members == p.members), None)
        last = group.last_sync_ms if group is not None else None
        if last is not None and last != row.ts_ms and 0 <= row.ts_ms - last <= self._span:
            return (
                f"the group's synchronized high at ts {last} came first "
                f"(within {self._span} ms)"
            )
        return (
            f"in event order the all-time highs of {group_label(p.members)} were not within "
            f"{self._span} ms of each other at ts {row.ts_ms}"
        )

    # -- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything but caches (the bands and extremes are rebuilt on the next arrival)."""
        return {
            "shadow": self._shadow.snapshot(),
            "early": {
                s: [[a, _tick_state(t)] for a, t in live.early]
                for s, live in self._symbols.items()
                if live.early
            },
            "pending": [
                [list(k), p.id, p.json, p.recv_ms, p.arrival, list(p.members)]
                for k, p in self._pending.items()
            ],
            "done": [[list(k), list(members), ts] for k, (members, ts) in self._done.items()],
            "exact": [[orjson.dumps(r).decode(), list(m)] for r, m in self._exact.values()],
            "aths": [
                {"members": list(g.members), "events": {m: list(e) for m, e in a.items()}}
                for g, a in zip(self._groups, self._aths, strict=True)
            ],
        }

    def restore(self, state: dict[str, Any] | None) -> None:
        """Restore; without a state (a snapshot from before this stage), rebuild the shadow
        from the exact kernels and the held ticks (their signals were never announced)."""
        self._symbols = {}
        self._busy = set()
        self._events = []
        self._sim_marks = [None] * len(self._groups)
        self._pending, self._done, self._exact = {}, {}, {}
        if state is None:
            self._shadow = RecordKernel(self._shadow.config)
            self._aths = [{m: [] for m in g.members} for g in self._groups]
            for symbol in self._ordering.watermarks():
                self._shadow.adopt(self._records, symbol)
                for gi in self._groups_of.get(symbol, ()):
                    waiting = self._groups[gi].pending[symbol]
                    self._aths[gi][symbol] = [[ts, p, None] for ts, p in waiting]
                held = self._ordering.held(symbol)
                if held:
                    rows = self._shadow.update([e[2] for e in held], _NO_MARKS)
                    self._note_aths(rows, None)
            return
        self._shadow.restore(state["shadow"])
        for s, early in state["early"].items():
            live = self._symbols[s] = _Live()
            live.early = [(a, Tick(*t)) for a, t in early]
            self._busy.add(s)
        for k, sid, json, recv, arrival, members in state["pending"]:
            row: Any = row_from_doc(orjson.loads(json))
            self._pending[tuple(k)] = _Pending(sid, row, json, recv, arrival, tuple(members))
        self._done = {tuple(k): (tuple(m), ts) for k, m, ts in state["done"]}
        for json, members in state["exact"]:
            row = row_from_doc(orjson.loads(json))
            self._exact[_exact_key(row)] = (row, tuple(members))
        saved = {tuple(a["members"]): a["events"] for a in state["aths"]}  # groups may change
        self._aths = [
            {m: [list(e) for e in saved.get(g.members, {}).get(m, [])] for m in g.members}
            for g in self._groups
        ]


def _released(live: _Live, held: Held, count: int) -> None:
    """``count`` ticks left the front of held: keep the cache if its ticks are still held."""
    live.hn -= count
    mx, mn = live.hmax, live.hmin
    if live.hn < 0 or not held or mx is None or mn is None or min(mx[:2], mn[:2]) < held[0][:2]:
        live.hn, live.hmax, live.hmin = 0, None, None


def _stair_extremes(stairs: Stairs, cutoff: int) -> tuple[Tick | None, Tick | None]:
    """High and low of the released ticks stamped after ``cutoff`` (staircase heads)."""
    if stairs is None:
        return None, None
    hi, lo = stairs
    j = bisect_right(hi, cutoff, key=_ts)
    k = bisect_right(lo, cutoff, key=_ts)
    return (hi[j] if j < len(hi) else None), (lo[k] if k < len(lo) else None)


def _scan(held: Held, start: int, end: int) -> tuple[Entry | None, Entry | None]:
    """Highest and lowest of held[start:end] (the latest at each: scanned backwards)."""
    if start >= end:
        return None, None
    part = held[start:end]
    return max(reversed(part), key=_price), min(reversed(part), key=_price)


def _with(
    mx: Tick | None, mn: Tick | None, hmx: Entry | None, hmn: Entry | None
) -> tuple[Tick | None, Tick | None]:
    """Released extremes joined with held ones (held come later: they win ties)."""
    if hmx is not None and (mx is None or hmx[3] >= mx.price):
        mx = hmx[2]
    if hmn is not None and (mn is None or hmn[3] <= mn.price):
        mn = hmn[2]
    return mx, mn


def _exact_key(row: Any) -> tuple[Any, ...]:
    """An exact ath/atl/sync row by the tick it fired on: a provisional row of that tick
    with another previous record (or other participants) was re-issued as it."""
    return (row.record, "" if row.record == "sync_ath" else row.symbol, row.ts_ms, row.price)


def _better(t: Tick, best: Tick, side: int) -> Tick:
    """The higher (side 0) or lower (1) of two ticks; at equal prices the later stamp."""
    if side == 0:
        if t.price > best.price or (t.price == best.price and t.ts_ms > best.ts_ms):
            return t
    elif t.price < best.price or (t.price == best.price and t.ts_ms > best.ts_ms):
        return t
    return best


def _tick_state(tick: Tick) -> list[Any]:
    return [getattr(tick, name) for name in Tick.__slots__]
