"""The live stage's word to the desk: each signal id opened once and closed once.

A provisional event is a promise that the exact path will, under the same id, either
confirm the signal or retract it. The ledger is what keeps that promise across steps,
replays and snapshot/restore: an id is announced at most once (an id pending or already
closed is not announced again), and gets exactly one ``confirmed`` or ``retracted`` event.
Closed ids are remembered until every watermark that could bring the signal back is past
it, so a level re-crossed within one instant is not closed twice.

Ids are ``signal_id`` of the row's parts (kind, identity, price): the provisional and
the exact row of one signal share it, and replays reproduce it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

import orjson

from tickstream.contracts import OutputRow, RecordBreak, RollingBreak, SignalEvent
from tickstream.contracts.rows import key_members, row_from_doc, signal_id_of

_NEVER = -(2**63)
_LATEST = 2**63

Key = tuple[Any, ...]
"""(kind, *identity, price): what ``signal_id`` hashes; pending signals are keyed by it."""

_PARTS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    t: attrgetter(*t.SPEC.identity, "price") for t in (RecordBreak, RollingBreak)
}
_REPLACEABLE = ("ath", "atl", "sync_ath")  # the previous record (or participants) is identity


def signal_key(row: RecordBreak | RollingBreak) -> Key:
    return (row.kind, *_PARTS[type(row)](row))


def exact_key(row: Any) -> tuple[Any, ...]:
    """An exact ath/atl/sync row by the tick it fired on: a provisional row of that tick
    with another previous record (or other participants) was re-issued as it."""
    return (row.record, "" if row.record == "sync_ath" else row.symbol, row.ts_ms, row.price)


def _event(
    sid: str,
    status: str,
    row: Any,
    recv_ms: int | None,
    now_ms: int,
    announced: int,
    reason: str,
    json: str,
) -> SignalEvent:
    return SignalEvent(
        sid, status, row.kind, row.symbol, row.ts_ms, row.price,
        recv_ms, now_ms, announced, reason, json,
    )  # fmt: skip


class Pending:
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


class Ledger:
    """Pending and closed signal ids, and the events of the current step."""

    def __init__(self) -> None:
        self.pending: dict[Key, Pending] = {}
        self.done: dict[Key, tuple[tuple[str, ...], int]] = {}  # confirmed or retracted
        # recent exact ath/atl/sync rows by the tick they fired on, with their symbols:
        # what a retraction names as the signal re-issued in its place
        self.exact: dict[tuple[Any, ...], tuple[Any, tuple[str, ...]]] = {}
        self.events: list[SignalEvent] = []
        # per set of members, at most the event time of their oldest pending signal: no
        # pending signal can be final before the members' watermarks pass it (``_due``)
        self._oldest: dict[tuple[str, ...], int] = {}

    def announce(
        self,
        row: RecordBreak | RollingBreak,
        recv_ms: int | None,
        arrival: int,
        members: tuple[str, ...],
        now_ms: int,
    ) -> None:
        key = signal_key(row)
        if key in self.pending or key in self.done:
            return
        sid = signal_id_of(key)
        json = orjson.dumps(row).decode()
        self.pending[key] = Pending(sid, row, json, recv_ms, arrival, members)
        self._note_pending(members, row.ts_ms)
        self.events.append(_event(sid, "provisional", row, recv_ms, now_ms, 0, "", json))

    def settle(
        self,
        rows: list[OutputRow],
        marks: Mapping[str, int],
        final: bool,
        now_ms: int,
        recv_of: Callable[[Any], int | None],
        reason: Callable[[Pending], str],
    ) -> list[SignalEvent]:
        """Confirm the exact rows, retract what the watermarks made final, forget what can
        no longer change; returns the step's events: provisional, confirmed, retracted.

        ``recv_of`` gives the receipt time behind an exact row nobody announced; ``reason``
        says why a pending signal is retracted (asked before anything is forgotten)."""
        events = self.events
        self.events = []
        pending, done, exact = self.pending, self.done, self.exact
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
                events.append(_event(p.id, "confirmed", sig, p.recv_ms, now_ms, 1, "", json))
                members = p.members
            else:
                json = orjson.dumps(sig).decode()
                sid = signal_id_of(key)
                events.append(_event(sid, "confirmed", sig, recv_of(sig), now_ms, 0, "", json))
                members = key_members(sig.symbol)
            done[key] = (members, sig.ts_ms)
            if sig.kind == "record_break" and sig.record in _REPLACEABLE:
                exact[exact_key(sig)] = (sig, members)
        if final or self._due(marks):
            self._oldest = {}
            for key, p in list(pending.items()):
                if final or all(marks.get(m, _NEVER) > p.row.ts_ms for m in p.members):
                    del pending[key]
                    why = reason(p)
                    events.append(
                        _event(p.id, "retracted", p.row, p.recv_ms, now_ms, 1, why, p.json)
                    )
                else:
                    self._note_pending(p.members, p.row.ts_ms)
        self._prune(marks, final)
        return events

    def _note_pending(self, members: tuple[str, ...], ts_ms: int) -> None:
        if ts_ms < self._oldest.get(members, _LATEST):
            self._oldest[members] = ts_ms

    def _due(self, marks: Mapping[str, int]) -> bool:
        """Whether a pending signal may have become final: checked per set of members, not
        per signal (2 s of a rising market's signals are hundreds, and this runs on every
        batch). Signals confirmed since leave ``_oldest`` behind, which only means a scan
        that finds nothing."""
        return any(
            all(marks.get(m, _NEVER) > ts for m in members) for members, ts in self._oldest.items()
        )

    def _prune(self, marks: Mapping[str, int], final: bool) -> None:
        if final:
            self.done.clear()
            self.exact.clear()
            return
        done = self.done
        for key, (members, ts) in list(done.items()):
            if all(marks.get(m, _NEVER) > ts for m in members):
                del done[key]
        exact = self.exact
        for key, (row, members) in list(exact.items()):
            if all(marks.get(m, _NEVER) > row.ts_ms for m in members):
                del exact[key]

    def exact_row(self, row: Any) -> Any:
        """The exact row that fired on the tick behind ``row`` with another previous
        record (or other participants), if one is still remembered."""
        found = self.exact.get(exact_key(row))
        return None if found is None else found[0]

    def snapshot(self) -> dict[str, Any]:
        return {
            "pending": [
                [list(k), p.id, p.json, p.recv_ms, p.arrival, list(p.members)]
                for k, p in self.pending.items()
            ],
            "done": [[list(k), list(members), ts] for k, (members, ts) in self.done.items()],
            "exact": [[orjson.dumps(r).decode(), list(m)] for r, m in self.exact.values()],
        }

    @classmethod
    def restored(cls, state: Mapping[str, Any]) -> Ledger:
        ledger = cls()
        for k, sid, json, recv, arrival, members in state["pending"]:
            row: Any = row_from_doc(orjson.loads(json))
            ledger.pending[tuple(k)] = Pending(sid, row, json, recv, arrival, tuple(members))
            ledger._note_pending(tuple(members), row.ts_ms)
        ledger.done = {tuple(k): (tuple(m), ts) for k, m, ts in state["done"]}
        for json, members in state["exact"]:
            row = row_from_doc(orjson.loads(json))
            ledger.exact[exact_key(row)] = (row, tuple(members))
        return ledger
