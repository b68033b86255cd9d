"""Why a provisional signal was retracted, in the desk's words.

A desk that saw a signal announced and then withdrawn needs to know whether the feed or
the system was wrong, so every retraction says what happened in event order: which
earlier-stamped tick arrived later and took the signal, which signal was re-issued in
its place (another previous record, other participants), or which synchronized high
came first. The wording is part of the desk contract (tests and docs quote it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from processors.kernels.live_ledger import Pending, signal_key
from tickstream.contracts.rows import group_label, signal_id_of
from tickstream.model import Tick

_NEVER = -(2**63)


def retraction_reason(
    p: Pending,
    exact: Any,
    early: Sequence[tuple[int, Tick]],
    window_ms: Mapping[str, int],
) -> str:
    """Why the exact path did not confirm ``p`` (not a sync: ``sync_reason``).

    ``exact``: the exact row fired on the same tick with another previous record, if
    any; ``early``: the symbol's out-of-order arrivals, as (arrival, tick)."""
    row: Any = p.row
    up = row.record in ("ath", "level_up", "new_high", "sync_ath")
    side = "high" if up else "low"
    if exact is not None and row.kind == "record_break" and row.record in ("ath", "atl"):
        return (
            f"in event order the previous all-time {side} was {exact.level} "
            f"(ts {exact.prev_ts_ms}), not {row.level}: re-issued as "
            f"{signal_id_of(signal_key(exact))}"
        )
    # what the signal claimed, and the price an earlier tick had to reach to take it
    if row.kind == "rolling_break":
        done = claim = f"set the {row.window} {side}"
        bar, floor = row.price, row.ts_ms - window_ms[row.window]
    elif row.record in ("ath", "atl"):
        done = claim = f"set the all-time {side}"
        bar, floor = row.price, _NEVER
    else:
        way = "up" if up else "down"
        done, claim = f"crossed {row.level} {way}", f"cross {row.level} {way}"
        bar, floor = row.level, _NEVER
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


def sync_reason(p: Pending, exact: Any, last_sync_ms: int | None, span_ms: int) -> str:
    """Why a provisional synchronized high was retracted; ``exact`` as above,
    ``last_sync_ms`` the group's last exact sync."""
    row: Any = p.row
    if exact is not None:
        return (
            f"in event order the participants were {exact.symbol}, not {row.symbol}: "
            f"re-issued as {signal_id_of(signal_key(exact))}"
        )
    last = last_sync_ms
    if last is not None and last != row.ts_ms and 0 <= row.ts_ms - last <= span_ms:
        return f"the group's synchronized high at ts {last} came first (within {span_ms} ms)"
    return (
        f"in event order the all-time highs of {group_label(p.members)} were not within "
        f"{span_ms} ms of each other at ts {row.ts_ms}"
    )
