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
    The records warm-up (records.py) comes with the shadow: same configuration, and its
    state's ``first_ts_ms`` is the exact kernel's (adopted) or, for a symbol the exact
    kernel has not seen yet, that of the earliest held tick (a rebuild puts an arrival
    stamped before the first one first). So an in-order stream is judged exactly as the
    exact kernel will; out of order, the shadow's first stamp is never earlier than the
    exact one, so a warm-up never makes a provisional all-time high or low the exact
    path retracts (it may confirm one nobody announced);
  * new highs/lows of each rolling window, with the same coverage rule: live_windows.py;
  * synchronized highs: live_syncs.py, once per step, before the exact step; at the end
    of input, all of them.
  Each is a ``SignalEvent`` with status ``provisional`` (announced 0).
- **confirmed**: each exact ``RecordBreak``/``RollingBreak`` row gives a ``confirmed``
  event with the exact row, ``announced`` 1 if a provisional event with its id came
  first, else 0 (an id new to the desk).
- **retracted**: a provisional id still unconfirmed once its symbol's watermark is past
  its event time (for a sync, every member's of its group; at the end of input, all) is
  retracted, with the provisional row, ``announced`` 1 and a reason saying what happened
  in event order (live_reasons.py).

Each id gets at most one provisional event and exactly one confirmed or retracted event,
across snapshot/restore too (live_ledger.py). On an in-order stream (each symbol's ticks
in event order, none late) nothing is retracted and every confirmation was announced,
with the very same row.

Time is injected: ``now_ms`` (the events' ``emitted_ms``) comes from the caller.
``recv_ms`` is the producer receipt of the tick behind the signal (for a sync, of the
ATH tick it fires on).

Speed: the ordering stage hands over only the arrivals outside the symbol's *quiet
band* (see ordering.py): an open price interval inside both the shadow's (no record,
no level threshold: records.py) and the shortest window's known low and high (no
rolling break in any window), valid until that high or low leaves the shortest window.
A tick inside costs one comparison.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import replace
from operator import attrgetter
from typing import Any

from processors.kernels.live_ledger import Key, Ledger, Pending, signal_key
from processors.kernels.live_reasons import retraction_reason, sync_reason
from processors.kernels.live_syncs import SyncWatch
from processors.kernels.live_windows import ArrivalWindows
from processors.kernels.ordering import Band, Held, Released, Reorderer, tick_state
from processors.kernels.records import RecordKernel
from processors.kernels.rolling_breaks import RollingBreakKernel
from tickstream.contracts import OutputRow, RecordBreak, RollingBreak, SignalEvent
from tickstream.model import Tick

__all__ = ["RESYNC_BUDGET", "Key", "LiveSignals", "signal_key"]

RESYNC_BUDGET = 16
"""Event-order rebuilds of one symbol's shadow per step; past it, arrival order."""

_NEVER = -(2**63)
_FOREVER = 2**63
_NO_MARKS: dict[str, int] = {}
_ts = attrgetter("ts_ms")


class _Disorder:
    """Per symbol with out-of-order arrivals: those arrivals (what retraction reasons
    name), and what they did to the shadow in this step."""

    __slots__ = ("early", "dirty", "resyncs")

    def __init__(self) -> None:
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
        self._window_ms = dict(rolling.ascending)
        self._windows = ArrivalWindows(rolling)
        self._syncs = SyncWatch(records, ordering)
        self._ledger = Ledger()
        self._disorder: dict[str, _Disorder] = {}  # symbols with out-of-order arrivals
        self.now_ms = 0

    # -- arrivals -------------------------------------------------------------------------

    def arrive(self, tick: Tick, arrival: int, held: Held, newest_ms: int) -> Band:
        """Evaluate one accepted arrival (``held``: the symbol's held ticks before it)."""
        symbol = tick.symbol
        rows: list[Any]
        if tick.ts_ms >= newest_ms:  # in order
            rows = self._shadow_feed(tick)
        else:
            disorder = self._disorder.get(symbol)
            if disorder is None:
                disorder = self._disorder[symbol] = _Disorder()
            disorder.early.append((arrival, tick))
            if disorder.resyncs >= RESYNC_BUDGET:
                rows = self._shadow_feed(tick)
                disorder.dirty = True
            else:
                disorder.resyncs += 1
                rows = self._resync(symbol, held, (tick, arrival))
        self._windows.arrive(tick, arrival, held, newest_ms, rows)
        recv = tick.recv_ms
        for row in rows:
            self._announce(row, recv, arrival, (symbol,))
        return self._windows.band(symbol, self._shadow.quiet_band(symbol))

    def _shadow_feed(self, tick: Tick) -> list[Any]:
        """The shadow's rows of one tick, in arrival order."""
        quiet = self._shadow.quiet_band(tick.symbol)
        if quiet is not None and quiet[0] < tick.price < quiet[1]:
            return []  # the shadow would not move: spare it the call
        rows: list[Any] = self._shadow.update((tick,), _NO_MARKS)
        if rows:
            self._syncs.note(rows, tick.recv_ms)
        return rows

    def _announce(
        self,
        row: RecordBreak | RollingBreak,
        recv_ms: int | None,
        arrival: int,
        members: tuple[str, ...],
    ) -> None:
        self._ledger.announce(row, recv_ms, arrival, members, self.now_ms)

    def announce_syncs(self, final: bool = False) -> None:
        """Provisional sync rows: the exact group state plus the members' ATHs seen since,
        in event order, up to the oldest of the members' newest ticks (all if final)."""
        self._syncs.announce(self._announce, final)

    # -- the shadow, rebuilt ----------------------------------------------------------------

    def _resync(self, symbol: str, held: Held, insert: tuple[Tick, int] | None = None) -> list[Any]:
        """Shadow := exact state + the held ticks in event order, with ``insert`` (an
        out-of-order arrival, not held yet) in its place; returns that tick's own rows.

        Signals of held ticks not announced yet are announced now; those no longer made
        stay pending until the watermark retracts them."""
        self._shadow.adopt(self._records, symbol)
        self._syncs.adopt(symbol)
        cut = len(held) if insert is None else bisect_right(held, (insert[0].ts_ms, _FOREVER))
        self._refeed(held[:cut])
        own: list[Any] = []
        if insert is not None:
            tick = insert[0]
            own = self._shadow.update((tick,), _NO_MARKS)
            if own:
                self._syncs.note(own, tick.recv_ms)
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
            self._syncs.note([row], tick.recv_ms)
            self._announce(row, tick.recv_ms, arrival, (tick.symbol,))

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
            self._windows.released(symbol, self._ordering.held(symbol), len(ticks))
        for symbol, disorder in self._disorder.items():
            if disorder.dirty:
                disorder.dirty = False
                self._resync(symbol, self._ordering.held(symbol))
                band = self._windows.band(symbol, self._shadow.quiet_band(symbol))
                self._ordering.set_quiet(symbol, band)
            disorder.resyncs = 0
        marks: Mapping[str, int] = watermarks if watermarks is not None else {}

        def recv_of(row: Any) -> int | None:
            return self._recv_of(row, released)

        events = self._ledger.settle(rows, marks, final, now_ms, recv_of, self._reason)
        self._syncs.prune(marks, final)
        self._prune_early(marks, final)
        return events

    def _recv_of(self, row: Any, released: Released) -> int | None:
        """The receipt time of the tick behind an exact row nobody announced."""
        if row.record == "sync_ath":
            return self._syncs.recv_of(row)
        ticks = released.by_symbol.get(row.symbol, ())
        i = bisect_left(ticks, row.ts_ms, key=_ts)
        while i < len(ticks) and ticks[i].ts_ms == row.ts_ms:
            if ticks[i].price == row.price:
                return ticks[i].recv_ms
            i += 1
        return None

    def _reason(self, p: Pending) -> str:
        """Why the exact path did not confirm a provisional signal, in desk words."""
        row: Any = p.row
        exact = self._ledger.exact_row(row)
        if row.kind == "record_break" and row.record == "sync_ath":
            last_sync = self._syncs.last_sync_ms(p.members)
            return sync_reason(p, exact, last_sync, self._syncs.span_ms)
        disorder = self._disorder.get(row.symbol)
        early = disorder.early if disorder is not None else []
        return retraction_reason(p, exact, early, self._window_ms)

    def _prune_early(self, marks: Mapping[str, int], final: bool) -> None:
        """Forget the out-of-order arrivals no retraction can name any more."""
        if final:
            self._disorder.clear()
            return
        for symbol, disorder in list(self._disorder.items()):
            horizon = marks.get(symbol, _NEVER) - self._ordering.lateness_of(symbol)
            disorder.early = [(a, t) for a, t in disorder.early if t.ts_ms >= horizon]
            if not disorder.early:
                del self._disorder[symbol]

    # -- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything but caches (the bands and extremes are rebuilt on the next arrival)."""
        return {
            "shadow": self._shadow.snapshot(),
            "early": {
                s: [[a, tick_state(t)] for a, t in d.early]
                for s, d in self._disorder.items()
                if d.early
            },
            **self._ledger.snapshot(),
            "aths": self._syncs.snapshot(),
        }

    def restore(self, state: dict[str, Any] | None) -> None:
        """Restore; without a state (a snapshot from before this stage), rebuild the shadow
        from the exact kernels and the held ticks (their signals were never announced)."""
        self._windows = ArrivalWindows(self._rolling)
        self._disorder = {}
        if state is None:
            self._ledger = Ledger()
            self._shadow = RecordKernel(self._shadow.config)
            self._syncs.restore(None)
            for symbol in self._ordering.watermarks():
                self._shadow.adopt(self._records, symbol)
                self._syncs.adopt(symbol)
                held = self._ordering.held(symbol)
                if held:
                    rows = self._shadow.update([e[2] for e in held], _NO_MARKS)
                    self._syncs.note(rows, None)
            return
        self._shadow.restore(state["shadow"])
        for s, early in state["early"].items():
            disorder = self._disorder[s] = _Disorder()
            disorder.early = [(a, Tick(*t)) for a, t in early]
        self._ledger = Ledger.restored(state)
        self._syncs.restore(state["aths"])
