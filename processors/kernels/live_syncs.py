"""Synchronized highs, announced before the exact kernel can decide them.

A sync high depends on several symbols' all-time highs, and the exact kernel decides it
only once every member's watermark is past them. To announce it earlier, this replays
the exact kernel's own sync rule on the exact group state plus the members' provisional
ATHs (those the shadow found and the exact kernel has not taken yet), in event order, up
to the oldest of the members' newest ticks: past that point a member could still bring
an earlier ATH. At the end of input everything is replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

from processors.kernels.ordering import Reorderer
from processors.kernels.records import RecordKernel
from tickstream.contracts import RecordBreak
from tickstream.contracts.rows import group_label, key_members

_NEVER = -(2**63)
_FOREVER = 2**63
_first = itemgetter(0)

Announce = Callable[[RecordBreak, int | None, int, tuple[str, ...]], None]
"""(row, recv_ms, arrival, members): hands a provisional row to the ledger."""


class SyncWatch:
    """Per sync group, per member: the ATH events ``[ts, price, recv_ms]`` the exact
    kernel has not taken yet, and where the last replay stopped."""

    def __init__(self, records: RecordKernel, ordering: Reorderer) -> None:
        self._ordering = ordering
        self.span_ms = records.config.sync_span_ms
        self._groups = records.sync_groups()  # the exact kernel's, read only
        self._groups_of: dict[str, list[int]] = {}
        for gi, group in enumerate(self._groups):
            for member in group.members:
                self._groups_of.setdefault(member, []).append(gi)
        self._aths: list[dict[str, list[list[Any]]]] = [
            {m: [] for m in g.members} for g in self._groups
        ]
        # per group, (limit, events) of the last replay: nothing new, nothing to replay
        self._marks: list[Any] = [None] * len(self._groups)
        # per group, the limit of the last prune: no event below it is left (None: unknown)
        self._pruned: list[int | None] = [None] * len(self._groups)

    def note(self, rows: list[Any], recv_ms: int | None) -> None:
        """Take the provisional ATHs among the shadow's ``rows``."""
        for row in rows:
            if row.record == "ath":
                for gi in self._groups_of.get(row.symbol, ()):
                    self._aths[gi][row.symbol].append([row.ts_ms, row.price, recv_ms])
                    pruned = self._pruned[gi]
                    if pruned is not None and row.ts_ms < pruned:
                        self._pruned[gi] = None

    def adopt(self, symbol: str) -> None:
        """Start the symbol's ATH events again from the exact kernel's (its shadow is being
        rebuilt); the receipt times already known are kept."""
        for gi in self._groups_of.get(symbol, ()):
            old = {(e[0], e[1]): e[2] for e in self._aths[gi][symbol]}
            waiting = self._groups[gi].pending[symbol]
            self._aths[gi][symbol] = [[ts, p, old.get((ts, p))] for ts, p in waiting]
            self._marks[gi] = self._pruned[gi] = None

    def announce(self, announce: Announce, final: bool = False) -> None:
        """Replay each group's sync rule up to the oldest of its members' newest ticks (all
        if final), handing every sync row it makes to ``announce``."""
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
            if mark == self._marks[gi]:
                continue  # nothing new since the last evaluation
            self._marks[gi] = mark
            queues = [(m, sorted(aths[m], key=_first)) for m in group.members]
            pos = dict.fromkeys(group.members, 0)
            last_ath = dict(group.last_ath)
            last_sync = group.last_sync_ms
            span = self.span_ms
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
                announce(row, recv, -1, group.members)

    def recv_of(self, row: Any) -> int | None:
        """The receipt time of the ATH tick an exact sync row fired on, if still known."""
        for aths in self._aths:
            for member in key_members(row.symbol):
                for ts, price, recv in aths.get(member, ()):
                    if ts == row.ts_ms and price == row.price:
                        return recv  # type: ignore[no-any-return]
        return None

    def last_sync_ms(self, members: tuple[str, ...]) -> int | None:
        """The exact kernel's last sync high of the group of ``members``."""
        group = next((g for g in self._groups if g.members == members), None)
        return group.last_sync_ms if group is not None else None

    def prune(self, marks: Mapping[str, int], final: bool) -> None:
        """Forget the ATH events the exact kernel took (all of them at the end of input).

        A group's events are looked at only when its limit moved past the last prune's:
        while a member has no ticks (a feed that is down) the limit stays put, and the
        other members' ATH events pile up until it ticks. Scanning them on every batch
        made every tick dearer by the minute (at 20 ATHs a second with the partner silent,
        as in ``bench latency``: 2.1 us a tick in the first minute, 3.5 in the fourth).
        """
        if final:
            for aths in self._aths:
                for events in aths.values():
                    events.clear()
            return
        pruned = self._pruned
        for gi, group in enumerate(self._groups):
            limit = min(marks.get(m, _NEVER) for m in group.members)
            last = pruned[gi]
            if last is not None and limit <= last:
                continue  # every event left is at or past ``last``
            pruned[gi] = limit
            for member, events in self._aths[gi].items():
                if events and min(e[0] for e in events) < limit:
                    self._aths[gi][member] = [e for e in events if e[0] >= limit]

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"members": list(g.members), "events": {m: list(e) for m, e in a.items()}}
            for g, a in zip(self._groups, self._aths, strict=True)
        ]

    def restore(self, saved: list[dict[str, Any]] | None) -> None:
        """Restore a snapshot; None: start empty (the caller adopts each symbol). The
        groups may have changed since: a member's events are kept if its group is the
        same."""
        self._marks = [None] * len(self._groups)
        self._pruned = [None] * len(self._groups)
        events = {tuple(a["members"]): a["events"] for a in saved or ()}
        self._aths = [
            {m: [list(e) for e in events.get(g.members, {}).get(m, [])] for m in g.members}
            for g in self._groups
        ]
