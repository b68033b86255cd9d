"""Clock heartbeats of quiet symbols: the publisher's side (tickstream.contracts.control).

Why: the processor's watermark of a symbol is its newest ts_ms minus its allowed
lateness, so when a market goes quiet its last ticks (and their provisional signals) stay
unconfirmed until its next tick, over a weekend for days. Wall time is not in the
stream, so the processor cannot tell quiet from slow; the publisher can, and says so in
the stream (``{"control": "heartbeat", "symbol": S, "ts_ms": T}`` on S's partition,
after S's ticks), where it is replayed with the ticks and keeps every result
deterministic.

The rule, per symbol, with ``N`` the newest ts_ms published for it, ``W`` the wall time
(``clock_ms``, injectable; monotonic ms by default) at which the message holding its
newest ticks was queued, ``L`` its allowed lateness (``--lateness-by-symbol``, else
``--allowed-lateness-ms``) and ``H`` ``--heartbeat-ms``:

- once no tick of it has been queued for ``H`` of wall time, a heartbeat is sent,
  stamped ``T = min(N + (now - W), N + L)`` (whole ms, rounded down), and again every
  ``H`` while it stays quiet: the source's clock has run on with the wall clock since its
  last tick, which is what "its next tick is stamped at about T or later" means for a live
  or paced source (an unpaced replay takes its next tick at once: it never idles);
- the spell's last heartbeat is the one stamped ``N + L``: the watermark ``T - L`` is then
  ``N``, every tick up to ``N`` is released, and there is nothing more to release. Going
  further would only make late the ticks a slow network delivers after a quiet spell (with
  ``L`` 0 no heartbeat is ever sent: the tick itself confirms everything);
- ``N <= T``, and each heartbeat of a spell is stamped later than the one before;
- a symbol with ticks taken but not yet queued is not quiet (no heartbeat may overtake
  them); a heartbeat is queued behind everything queued before it on its partition
  (producers.publisher: queue order is partition order), so it never overtakes a tick
  of its symbol;
- a stall (the broker refusing batches, during which the publisher reads no input, so
  the source may be holding ticks back) restarts every quiet spell's wall time: ``W`` is
  moved to the moment the stall was seen over, and nothing is sent while it lasts;
- at the end of input nothing more is sent (the processor flushed everything anyway).

Cost: nothing per tick. The publisher tells the tracker when a symbol's message is queued
(once per message), and one task wakes at most every ``H`` to send what is due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Protocol

from tickstream.contracts import encode_heartbeat
from tickstream.settings import Settings
from tickstream.topics import Topics

log = logging.getLogger(__name__)


def monotonic_ms() -> float:
    return time.monotonic_ns() / 1_000_000


@dataclass(slots=True)
class _Spell:
    newest_ms: int  # N
    vouched_ms: int  # the stamp of the last heartbeat (N at first)
    since: float  # the wall time ``vouched_ms`` was true at
    last_ms: int  # N + L: the spell's last heartbeat


class QuietClocks:
    """Per symbol, how long it has been quiet and what its next heartbeat says."""

    def __init__(
        self,
        heartbeat_ms: int,
        lateness_ms: int,
        lateness_by_symbol: dict[str, int] | None = None,
    ) -> None:
        if heartbeat_ms <= 0:
            raise ValueError("heartbeat_ms must be > 0 (0: no heartbeats, no QuietClocks)")
        self.heartbeat_ms = heartbeat_ms
        self._lateness_ms = lateness_ms
        self._lateness_by_symbol = dict(lateness_by_symbol or {})
        self._spells: dict[str, _Spell] = {}

    def shipped(self, symbol: str, newest_ms: int, now: float) -> None:
        """The symbol's ticks up to ``newest_ms`` were queued at ``now``: a new spell."""
        spell = self._spells.get(symbol)
        last = newest_ms + self._lateness_by_symbol.get(symbol, self._lateness_ms)
        if spell is None:
            self._spells[symbol] = _Spell(newest_ms, newest_ms, now, last)
        else:
            spell.newest_ms = spell.vouched_ms = newest_ms
            spell.since, spell.last_ms = now, last

    def due(self, now: float, busy: Container[str] = ()) -> list[tuple[str, int]]:
        """The heartbeats due at ``now`` as (symbol, ts_ms), each recorded as sent; the
        symbols in ``busy`` (ticks taken, not queued yet) are not quiet."""
        out: list[tuple[str, int]] = []
        ended: list[str] = []
        h = self.heartbeat_ms
        for symbol, spell in self._spells.items():
            if now - spell.since < h or symbol in busy:
                continue
            ts = min(spell.vouched_ms + int(now - spell.since), spell.last_ms)
            if ts > spell.vouched_ms:
                out.append((symbol, ts))
                spell.vouched_ms, spell.since = ts, now
            if ts >= spell.last_ms:
                ended.append(symbol)
        for symbol in ended:
            del self._spells[symbol]
        return out

    def next_due(self) -> float | None:
        """The wall time of the earliest heartbeat due (None: no symbol is in a spell)."""
        if not self._spells:
            return None
        return min(spell.since for spell in self._spells.values()) + self.heartbeat_ms

    def restart(self, now: float) -> None:
        """A stall: the quiet time of every spell counts from ``now`` only."""
        for spell in self._spells.values():
            spell.since = max(spell.since, now)

    def clear(self) -> None:
        self._spells.clear()

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._spells


class _Queue(Protocol):
    """What the sender needs of the publisher's ``_PartitionBatches``."""

    stalled: bool
    stall_events: int

    def put(self, topic: str, partition: int, key: bytes, value: bytes) -> None: ...

    async def submit_all(self) -> None: ...


class HeartbeatSender:
    """The publisher's heartbeat task: wakes when the earliest heartbeat is due (at least
    every heartbeat_ms, at most every millisecond) and queues what is due, on the
    symbol's partition (``partition(symbol, key)``, as its ticks: same key, same group)."""

    def __init__(
        self,
        settings: Settings,
        partition: Callable[[str, bytes], int],
        clock_ms: Callable[[], float] = monotonic_ms,
    ) -> None:
        self.clocks = QuietClocks(
            settings.heartbeat_ms,
            settings.allowed_lateness_ms,
            settings.parsed_lateness_by_symbol(),
        )
        self.topic = Topics(settings.namespace).ticks
        self.clock_ms = clock_ms
        self.sent = 0  # heartbeats queued so far
        self._partition = partition
        self._queue: _Queue | None = None
        self._busy: Callable[[], Container[str]] = lambda: ()
        self._stall_seen: tuple[bool, int] = (False, 0)
        self._task: asyncio.Task[None] | None = None

    def start(self, queue: _Queue, busy: Callable[[], Container[str]]) -> None:
        """Start the task; ``busy()``: the symbols with ticks taken but not queued yet."""
        self._queue, self._busy = queue, busy
        self._task = asyncio.create_task(self.run())
        self._task.add_done_callback(_report_failure)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def shipped(self, symbol: str, newest_ms: int) -> None:
        """The symbol's ticks up to ``newest_ms`` were just queued (once per message)."""
        self.clocks.shipped(symbol, newest_ms, self.clock_ms())

    async def send_due(self) -> int:
        """Queue and submit every heartbeat due now; none while the broker refuses batches
        and until the first look after it took one again (the spells restart then)."""
        queue = self._queue
        if queue is None:
            return 0
        now = self.clock_ms()
        stall = (queue.stalled, queue.stall_events)
        if stall != self._stall_seen or queue.stalled:
            self._stall_seen = stall
            self.clocks.restart(now)
            return 0
        due = self.clocks.due(now, self._busy())
        for symbol, ts_ms in due:  # no await until all are queued
            key = symbol.encode()
            queue.put(
                self.topic, self._partition(symbol, key), key, encode_heartbeat(symbol, ts_ms)
            )
        self.sent += len(due)
        if due:
            await queue.submit_all()
        return len(due)

    async def run(self) -> None:
        h = self.clocks.heartbeat_ms
        while True:
            next_due = self.clocks.next_due()
            wait = h if next_due is None else min(h, max(next_due - self.clock_ms(), 1.0))
            await asyncio.sleep(wait / 1000)
            await self.send_due()


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the heartbeat sender failed: %r; no more heartbeats", task.exception())
