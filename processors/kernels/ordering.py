"""Event-time ordering with an allowed lateness, per symbol.

Every kernel downstream sees each symbol's ticks in (ts_ms, arrival) order, so
its result does not depend on how ticks were batched or partitioned. The price
is latency: a tick is released only once its symbol's watermark has reached it
(or on flush).

Rules, per symbol, with ``max_ts`` the newest ts_ms seen so far (the symbol's *clock*;
but see clock jumps below) and ``lateness`` the symbol's allowed lateness
(``lateness_by_symbol[symbol]``, else ``allowed_lateness_ms``):
- the *watermark* is ``max(max_ts - lateness, floor)``: no tick stamped before it will
  be accepted any more;
- a tick is *late* iff ``ts_ms < max_ts - lateness`` or ``ts_ms <= floor``, where
  ``floor`` is the newest ts_ms released by a flush (a flushed instant is final: a
  second copy of its last tick, as in a second replay of a file, must not count twice);
  late ticks are returned apart;
- other ticks are held and released once ``ts_ms <= watermark``. A tick stamped exactly
  at the watermark may still arrive, but it sorts after those released (same ts_ms,
  later arrival), so releasing them is exact. With lateness 0 an in-order feed is
  therefore released, and its signals confirmed, with the tick that makes them.

Per-symbol lateness: a feed known to be in order (one venue, one connection) can run at
0 while a merged or multi-partition feed keeps a margin; the watermarks, and so every
kernel's emission, follow each symbol's own setting.

Clock jumps. ``max_ts`` above is the symbol's *clock*, and one tick must not be able to
move it far: validation lets through ticks stamped minutes ahead of the wall clock, and
with the clock at such a tick every good tick after it would be late and vanish from
every kernel. So, with ``jump`` the symbol's ``max_jump_ms`` (0: off) and ``confirm``
``jump_confirm_ticks``:
- an arrival stamped at most ``jump`` past the clock is *in reach*: it moves the clock
  as above, and refutes every candidate (next rule): the feed is still where it was;
- an arrival stamped further is *ahead*: it is held like any tick (never late, released
  in its event-time place once the clock gets there, or on flush) but does not move the
  clock; it becomes a *candidate*, and confirms each earlier candidate it is stamped no
  more than ``jump`` before (the feed moved on to it, or past it);
- a candidate with ``confirm`` confirmations is a genuine jump (a weekend gap, a sparse
  feed, a restart after an outage): the clock moves to it and then, in stamp order, to
  every candidate in reach of the clock so moved; candidates beyond stay candidates;
- a symbol's first tick has no clock to be in reach of: until a candidate is confirmed
  the symbol has no clock (nothing is late, nothing is released but by flush), so an
  outlier first tick cannot set one either.
One tick ahead therefore never makes later ticks late; a tick ahead by less than
``jump`` still can, by at most ``jump`` - lateness of event time, which is what sizing
``jump`` weighs against the extra wait of a sparse feed (a tick more than ``jump`` after
its predecessor is released only once ``confirm`` more ticks followed it). Every
decision is taken per arrival, in arrival order, from the clock and the candidates, which
releases never change: the result does not depend on batching, and survives a restart
(the candidates are part of the snapshot). At most ``MAX_CANDIDATES`` candidates are
kept per symbol; past that the one that arrived first is dropped (it stays held, it just
never moves the clock).

Clock heartbeats (tickstream.contracts.Heartbeat: "the source's clock for this symbol
is at T", sent by the publisher while a symbol is quiet) move a clock as an in-reach
tick with no price would, so a quiet market's held ticks are released without waiting
for its next tick. For a heartbeat at ``T`` (``heartbeat``):
- if the symbol has a clock and ``max_ts < T <= max_ts + jump`` (any ``T > max_ts`` with
  clock jumps off), the clock moves to ``T`` and the candidates are refuted, as by an
  in-reach tick; the watermark ``max(T - lateness, floor)`` then releases what it passes;
- otherwise (no clock yet, ``T <= max_ts``, or ``T`` beyond the jump limit) it changes
  nothing; it never confirms a candidate, and it is not an arrival (no arrival number,
  never held, never released, never seen by the watcher).
A tick stamped after a heartbeat is judged against the clock so moved: late iff
``ts_ms < T - lateness`` (exactly as after a tick at ``T``), and in order among the ticks
iff stamped at or after the newest *tick* (``newest_ms`` counts ticks only), so the
watcher's notion of order is the ticks' own. A heartbeat is applied in its arrival
position among the ticks (the processor core splits a batch at heartbeats), and the clock
it moved is the snapshot's ``max_ts_ms``: results still do not depend on batching.

The live stage (live.py) sees every accepted tick on arrival through an optional
``ArrivalWatcher``: this loop is the one every tick passes through, so it also sorts out
the arrivals the watcher must evaluate. Per symbol the watcher leaves a *quiet band*
(an open price interval and a time limit) inside which an in-order arrival can change
no provisional signal; such a tick costs one comparison here. Out-of-order arrivals,
and those outside the band, are handed to the watcher before they are held.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Protocol

from tickstream.model import Tick

END_OF_TIME_MS = 2**62
MAX_JUMP_MS = 60_000
JUMP_CONFIRM_TICKS = 1
MAX_CANDIDATES = 64
HEARTBEAT_ADVANCED = "advanced"
HEARTBEAT_NO_CLOCK = "no_clock"
HEARTBEAT_BEHIND = "behind"
HEARTBEAT_BEYOND_JUMP = "beyond_jump"
HEARTBEAT_OUTCOMES = (
    HEARTBEAT_ADVANCED,
    HEARTBEAT_NO_CLOCK,
    HEARTBEAT_BEHIND,
    HEARTBEAT_BEYOND_JUMP,
)
_UNCHECKED = 2**64  # a jump limit nothing exceeds, not even from "no clock" (-END_OF_TIME_MS)

Held = list[tuple[int, int, Tick, float]]
"""A symbol's held ticks as (ts_ms, arrival number, tick, price), sorted: event order
((ts_ms, arrival) is unique, so ticks and prices are never compared)."""

Band = tuple[float, float, int]
"""A quiet band: (low, high, until_ms); an in-order arrival with low < price < high and
ts_ms < until_ms needs no evaluation."""

LOUD: Band = (float("inf"), float("-inf"), -END_OF_TIME_MS)
"""The band that lets nothing through quietly (the state before the watcher set one)."""


class ArrivalWatcher(Protocol):
    def arrive(self, tick: Tick, arrival: int, held: Held, newest_ms: int) -> Band:
        """Evaluate an accepted arrival (not yet held: ``held`` is what came before it);
        ``newest_ms`` is the symbol's max ts_ms including it. Returns the new quiet band."""
        ...


class Released(list[Tick]):
    """Released ticks, symbol after symbol, with the per-symbol split kept for the kernels.

    Every kernel loops per symbol; ``by_symbol`` spares each of them splitting the batch
    again (see ``rolling.group_by_symbol``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_symbol: dict[str, list[Tick]] = {}

    def add(self, symbol: str, ticks: list[Tick]) -> None:
        self.by_symbol[symbol] = ticks
        self.extend(ticks)


@dataclass(slots=True)
class _SymbolClock:
    lateness_ms: int
    jump_ms: int  # _UNCHECKED when clock jumps are not checked
    max_ts_ms: int = -END_OF_TIME_MS  # the clock (-END_OF_TIME_MS: none yet)
    floor_ms: int = -END_OF_TIME_MS
    newest_ms: int = -END_OF_TIME_MS  # newest accepted tick's stamp (candidates: yes, beats: no)
    candidates: list[list[int]] = field(default_factory=list)  # [ts, arrival, confirmations]
    held: Held = field(default_factory=list)
    # the watcher's quiet band (see ArrivalWatcher); not state: a restored clock is loud
    quiet_lo: float = LOUD[0]
    quiet_hi: float = LOUD[1]
    quiet_until: int = LOUD[2]


class Reorderer:
    """Holds ticks until their symbol's watermark passes them; sets late ones apart."""

    def __init__(
        self,
        allowed_lateness_ms: int,
        lateness_by_symbol: Mapping[str, int] | None = None,
        max_jump_ms: int = MAX_JUMP_MS,
        max_jump_ms_by_symbol: Mapping[str, int] | None = None,
        jump_confirm_ticks: int = JUMP_CONFIRM_TICKS,
    ) -> None:
        by_symbol = dict(lateness_by_symbol or {})
        if allowed_lateness_ms < 0 or any(v < 0 for v in by_symbol.values()):
            raise ValueError("allowed lateness must be >= 0 ms")
        jumps = dict(max_jump_ms_by_symbol or {})
        if max_jump_ms < 0 or any(v < 0 for v in jumps.values()):
            raise ValueError("max_jump_ms must be >= 0 ms (0: clock jumps are not checked)")
        if jump_confirm_ticks < 1:
            raise ValueError("jump_confirm_ticks must be >= 1")
        self.allowed_lateness_ms = allowed_lateness_ms
        self.lateness_by_symbol = by_symbol
        self.max_jump_ms = max_jump_ms
        self.max_jump_ms_by_symbol = jumps
        self.jump_confirm_ticks = jump_confirm_ticks
        self._clocks: dict[str, _SymbolClock] = {}
        self._touched: dict[str, _SymbolClock] = {}
        self._arrivals = 0

    def lateness_of(self, symbol: str) -> int:
        return self.lateness_by_symbol.get(symbol, self.allowed_lateness_ms)

    def max_jump_of(self, symbol: str) -> int:
        """The symbol's max_jump_ms (0: clock jumps are not checked)."""
        return self.max_jump_ms_by_symbol.get(symbol, self.max_jump_ms)

    def _new_clock(self, symbol: str) -> _SymbolClock:
        # no clock yet (-END_OF_TIME_MS): every first arrival is ahead, unless unchecked
        return _SymbolClock(self.lateness_of(symbol), self.max_jump_of(symbol) or _UNCHECKED)

    def watermarks(self) -> dict[str, int]:
        return {s: max(c.max_ts_ms - c.lateness_ms, c.floor_ms) for s, c in self._clocks.items()}

    def newest(self, symbol: str) -> int | None:
        """The symbol's clock: the newest ts_ms accepted for it (or heartbeat applied),
        unconfirmed jumps aside (None before it has one). Ticks stamped before it may still
        come, but none before its watermark."""
        clock = self._clocks.get(symbol)
        if clock is None or clock.max_ts_ms == -END_OF_TIME_MS:
            return None
        return clock.max_ts_ms

    def held(self, symbol: str) -> Held:
        """The symbol's held ticks in event order (read-only: the live stage's view)."""
        clock = self._clocks.get(symbol)
        return [] if clock is None else clock.held

    def set_quiet(self, symbol: str, band: Band) -> None:
        clock = self._clocks.get(symbol)
        if clock is not None:
            clock.quiet_lo, clock.quiet_hi, clock.quiet_until = band

    def push(self, ticks: Iterable[Tick]) -> tuple[list[Tick], list[Tick]]:
        """Take ticks in arrival order; return (released in order, late)."""
        late = self.accept(ticks)
        return self.release(), late

    def accept(self, ticks: Iterable[Tick], watcher: ArrivalWatcher | None = None) -> list[Tick]:
        """Take ticks in arrival order and hold them; return the late ones.

        With a watcher, every accepted out-of-order tick and every in-order tick outside
        its symbol's quiet band is handed to ``watcher.arrive`` first, in arrival order;
        order there is against every accepted tick, candidates (ahead of the clock)
        included.
        """
        late: list[Tick] = []
        touched = self._touched
        clocks = self._clocks
        get = clocks.get
        arrivals = self._arrivals
        watch = watcher is not None
        for tick in ticks:
            ts = tick.ts_ms
            symbol = tick.symbol
            clock = get(symbol)
            if clock is None:
                clock = clocks[symbol] = self._new_clock(symbol)
            if ts > clock.newest_ms and ts >= clock.max_ts_ms:  # in order: the common case
                clock.newest_ms = ts
                if ts - clock.max_ts_ms <= clock.jump_ms:  # in reach
                    clock.max_ts_ms = ts
                    if clock.candidates:
                        clock.candidates = []  # refuted: the feed is where the clock is
                else:
                    self._ahead(clock, ts, arrivals + 1)
            elif ts < clock.max_ts_ms - clock.lateness_ms or ts <= clock.floor_ms:
                late.append(tick)
                continue
            else:
                if ts < clock.newest_ms:
                    clock.quiet_until = LOUD[2]  # out of order: the band assumes order
                elif ts > clock.newest_ms:  # in order, behind a clock a heartbeat moved
                    clock.newest_ms = ts
                if ts - clock.max_ts_ms <= clock.jump_ms:
                    if ts > clock.max_ts_ms:
                        clock.max_ts_ms = ts
                    if clock.candidates:
                        clock.candidates = []
                else:
                    self._ahead(clock, ts, arrivals + 1)
            arrivals += 1
            held = clock.held
            if watch and not (
                clock.quiet_lo < tick.price < clock.quiet_hi and ts < clock.quiet_until
            ):
                band = watcher.arrive(tick, arrivals, held, clock.newest_ms)  # type: ignore[union-attr]
                clock.quiet_lo, clock.quiet_hi, clock.quiet_until = band
            if not held or ts >= held[-1][0]:
                held.append((ts, arrivals, tick, tick.price))  # in order: the common case
            else:
                insort(held, (ts, arrivals, tick, tick.price))
            touched[symbol] = clock
        self._arrivals = arrivals
        return late

    def _ahead(self, clock: _SymbolClock, ts: int, arrival: int) -> None:
        """An arrival stamped beyond the clock's reach: a candidate, and a confirmation of
        the earlier candidates it is not far behind; a confirmed one moves the clock."""
        jump = clock.jump_ms
        candidates = clock.candidates
        confirmed = False
        for candidate in candidates:
            if ts >= candidate[0] - jump:
                candidate[2] += 1
                confirmed = confirmed or candidate[2] >= self.jump_confirm_ticks
        candidates.append([ts, arrival, 0])
        if len(candidates) > MAX_CANDIDATES:
            del candidates[0]  # the earliest arrival: in arrival order, so the first
        if not confirmed:
            return
        need = self.jump_confirm_ticks
        now = clock.max_ts_ms
        rest = sorted(candidates)  # stamp order
        while True:
            firm = next((c for c in rest if c[2] >= need), None)
            if firm is None:
                break
            now = max(now, firm[0])
            kept = []
            for c in rest:  # in stamp order, each in reach of the clock moved so far
                if c[0] <= now + jump:
                    now = max(now, c[0])
                else:
                    kept.append(c)
            rest = kept
        clock.max_ts_ms = now
        clock.candidates = sorted(rest, key=lambda c: c[1])  # back to arrival order

    def heartbeat(self, symbol: str, ts_ms: int) -> str:
        """Apply a clock heartbeat (module docstring); returns what it did: ``advanced``
        (the clock moved to ``ts_ms``; the next ``release`` releases what it passed), or
        why it changed nothing: ``no_clock``, ``behind`` (at or below the clock),
        ``beyond_jump``."""
        clock = self._clocks.get(symbol)
        if clock is None or clock.max_ts_ms == -END_OF_TIME_MS:
            return HEARTBEAT_NO_CLOCK
        if ts_ms <= clock.max_ts_ms:
            return HEARTBEAT_BEHIND
        if ts_ms - clock.max_ts_ms > clock.jump_ms:
            return HEARTBEAT_BEYOND_JUMP
        clock.max_ts_ms = ts_ms
        if clock.candidates:
            clock.candidates = []  # refuted, as by an in-reach tick
        self._touched[symbol] = clock
        return HEARTBEAT_ADVANCED

    def release(self) -> Released:
        """Release, per symbol touched since the last release, the ticks at or before its
        watermark, in event order."""
        released = Released()
        for symbol, clock in self._touched.items():
            held = clock.held
            cut = bisect_right(held, (clock.max_ts_ms - clock.lateness_ms, END_OF_TIME_MS))
            if cut:
                released.add(symbol, [entry[2] for entry in held[:cut]])
                del held[:cut]
        self._touched = {}
        return released

    def flush(self) -> Released:
        """Release everything held (end of input); later ticks at or before these are late."""
        released = Released()
        for symbol, clock in self._clocks.items():
            if clock.held:
                released.add(symbol, [entry[2] for entry in clock.held])
            clock.held = []
            clock.floor_ms = max(clock.floor_ms, clock.newest_ms)
            # what was flushed is final, candidates too (a heartbeat may be past them all)
            clock.max_ts_ms = max(clock.max_ts_ms, clock.newest_ms)
            clock.candidates = []
        self._touched = {}
        return released

    def snapshot(self, deferred: bool = False) -> dict[str, Any]:
        """The state as plain data; ``deferred``: each symbol's held ticks as a
        ``HeldTicks`` capture instead, converted only when encoded (``HeldTicks.state``)."""
        return {
            "arrivals": self._arrivals,
            "clocks": {
                symbol: {
                    "max_ts_ms": c.max_ts_ms,
                    "floor_ms": c.floor_ms,
                    "newest_ms": c.newest_ms,
                    "candidates": [list(candidate) for candidate in c.candidates],
                    "held": HeldTicks(symbol, c.held.copy()) if deferred else held_state(c.held),
                }
                for symbol, c in self._clocks.items()
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore held ticks, clocks and candidates; lateness and max_jump_ms come from
        this Reorderer's settings (a snapshot from before clock jumps were checked has
        no candidates, and its clock is its newest tick)."""
        self._arrivals = state["arrivals"]
        self._clocks = {}
        self._touched = {}
        for symbol, c in state["clocks"].items():
            clock = self._new_clock(symbol)
            clock.max_ts_ms = c["max_ts_ms"]
            clock.floor_ms = c["floor_ms"]
            clock.newest_ms = c.get("newest_ms", c["max_ts_ms"])
            clock.candidates = [list(candidate) for candidate in c.get("candidates", [])]
            clock.held = [(ts, n, tick, tick.price) for ts, n, tick in _ticks(c["held"])]
            self._clocks[symbol] = clock


class HeldTicks:
    """A symbol's held ticks captured for a snapshot, not yet in their saved form.

    With 2 s of lateness at 20k ticks/s a symbol holds 40,000 ticks, and converting them
    takes about 0.5 µs a tick: too long to hold the processor's batches up for. A copy of
    the list is a consistent capture for one C call (its entries are immutable), so the
    conversion can wait, and run between later batches. Not a dataclass: orjson would
    encode one as an object of its fields, where the snapshot's encoder must be asked
    (core.py).
    """

    __slots__ = ("symbol", "entries")

    def __init__(self, symbol: str, entries: Held) -> None:
        self.symbol = symbol  # the encoder's memo is per symbol
        self.entries = entries


def held_state(entries: Held) -> list[tuple[int, int, tuple[Any, ...]]]:
    """Held ticks in their saved form: (ts_ms, arrival, tick fields) each, a JSON array
    in the snapshot (the encoder in core.py saves them so, a chunk at a time)."""
    return [(ts, n, tick_state(t)) for ts, n, t, _ in entries]


def _ticks(saved: list[list[Any]]) -> list[tuple[int, int, Tick]]:
    return [(ts, n, Tick(*t)) for ts, n, t in saved]


tick_state = attrgetter(*Tick.__slots__)
"""A tick's fields as a tuple, in Tick's order (a JSON array in the snapshot): one C call."""
