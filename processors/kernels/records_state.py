"""What the records kernel holds per symbol and per sync group, and its snapshot form.

Kept apart from the rules (records.py) and the level arithmetic (records_levels.py): a
snapshot must restore to exactly the state it was taken of, including what older
tickstream versions saved (first crossings as ``[k, ts]`` pairs, no ``instant``, no
``first_ts_ms``), and that is easier to keep right where it is all in one place.

``first_ts_ms`` is the stamp of the first tick the kernel saw of an unseeded symbol: its
records warm-up runs from it (records.py). It is kept, not the warm-up's end, so that a
changed ``record_warmup_ms`` applies to a restored state as it does to a fresh one. None
means "no warm-up": a seeded symbol, or a snapshot from before the warm-up existed (that
deployment already announced records: it must not fall silent on a restart).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from processors.kernels.records_levels import NEVER, Firsts, Grid


class SymbolState:
    __slots__ = ("ath", "ath_ts_ms", "atl", "atl_ts_ms", "first_ts_ms", "grids")

    def __init__(self, grids: list[Grid]) -> None:
        self.ath: float | None = None
        self.ath_ts_ms = 0
        self.atl = 0.0
        self.atl_ts_ms = 0
        self.first_ts_ms: int | None = None  # the first tick's stamp; None: no warm-up
        self.grids = grids

    def copy(self) -> SymbolState:
        state = SymbolState([g.copy() for g in self.grids])
        state.ath, state.ath_ts_ms = self.ath, self.ath_ts_ms
        state.atl, state.atl_ts_ms = self.atl, self.atl_ts_ms
        state.first_ts_ms = self.first_ts_ms
        return state


class SyncGroup:
    __slots__ = ("members", "pending", "last_ath", "last_sync_ms")

    def __init__(self, members: tuple[str, ...]) -> None:
        self.members = members
        # member -> its ATH events (ts, price), in its own (time) order
        self.pending: dict[str, deque[tuple[int, float]]] = {m: deque() for m in members}
        self.last_ath: dict[str, int] = {}
        self.last_sync_ms: int | None = None


def snapshot(symbols: dict[str, SymbolState], groups: Iterable[SyncGroup]) -> dict[str, Any]:
    return {
        "symbols": {
            symbol: {
                "ath": s.ath,
                "ath_ts_ms": s.ath_ts_ms,
                "atl": s.atl,
                "atl_ts_ms": s.atl_ts_ms,
                "first_ts_ms": s.first_ts_ms,
                "grids": [
                    {
                        "step": g.step,
                        "price": g.price,
                        "armed": [[k, up, down] for k, (up, down) in g.armed.items()],
                        "first_up": g.first_up.state(),
                        "first_down": g.first_down.state(),
                        "instant": [g.instant, sorted(g.fired)],
                    }
                    for g in s.grids
                ],
            }
            for symbol, s in symbols.items()
        },
        "groups": [
            {
                "members": list(g.members),
                "pending": {m: [list(e) for e in q] for m, q in g.pending.items()},
                "last_ath": dict(g.last_ath),
                "last_sync_ms": g.last_sync_ms,
            }
            for g in groups
        ],
    }


def restore_symbols(state: dict[str, Any], lo_f: float, hi_f: float) -> dict[str, SymbolState]:
    """The symbols of a snapshot; each grid's thresholds recomputed (they are a cache)."""
    symbols: dict[str, SymbolState] = {}
    for symbol, s in state["symbols"].items():
        grids = []
        for g in s["grids"]:
            grid = Grid(g["step"])
            grid.price = g["price"]
            grid.armed = {k: [up, down] for k, up, down in g["armed"]}
            grid.first_up = Firsts.restored(g["first_up"])
            grid.first_down = Firsts.restored(g["first_down"])
            instant, fired = g.get("instant", [NEVER, []])
            grid.instant, grid.fired = instant, {(d, k) for d, k in fired}
            if grid.price is not None:
                grid.refresh(lo_f, hi_f)
            grids.append(grid)
        sym = symbols[symbol] = SymbolState(grids)
        sym.ath, sym.ath_ts_ms = s["ath"], s["ath_ts_ms"]
        sym.atl, sym.atl_ts_ms = s["atl"], s["atl_ts_ms"]
        sym.first_ts_ms = s.get("first_ts_ms")  # absent (older snapshot): warmed up
    return symbols


def restore_groups(groups: Iterable[SyncGroup], state: dict[str, Any]) -> None:
    """Each configured group takes its saved state; a group the snapshot lacks stays new."""
    by_members = {tuple(g["members"]): g for g in state["groups"]}
    for group in groups:
        saved = by_members.get(group.members)
        if saved is None:
            continue
        for member, events in saved["pending"].items():
            group.pending[member] = deque((ts, price) for ts, price in events)
        group.last_ath = dict(saved["last_ath"])
        group.last_sync_ms = saved["last_sync_ms"]
