"""What a desk sees on joining: the current state, and the signal log replays come from.

Pure: the server applies every decoded tick and row here, in consumption order, and asks
for a snapshot filtered by a client's subscription and access.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sinks.gateway.protocol import (
    EVENT_ROW_KIND,
    FINAL_STATUSES,
    PROVISIONAL,
    TICK_FIELDS,
    Delta,
    event_ts,
    record_kind,
    signal_identity,
)

# the record kernel's default level grids (processors/kernels/records.py); the steps seen
# in record_break rows are added to these
DEFAULT_LEVEL_STEPS: Mapping[str, Sequence[float]] = {"XAU": (100.0, 1000.0), "XAG": (1.0, 10.0)}

Wants = Callable[[str, str], bool]  # (subscription kind, key) -> delivered?


class BoardState:
    """Last price per symbol, last bar, current rolling highs, ATH and open windows, and the
    current status of each key's recent signals (what a desk that was away missed: a
    confirmation of an older signal is not in a replay ``since`` a later one)."""

    def __init__(
        self,
        level_steps: Mapping[str, Sequence[float]] | None = None,
        history_points: int = 600,
        history_spacing_ms: int = 1_000,
        recent_signals: int = 50,
    ) -> None:
        self.last: dict[str, list[Any]] = {}  # symbol -> tick row (newest event time)
        # symbol -> recent [ts_ms, price] points, at most one per spacing (the latest in it)
        self.history: dict[str, deque[list[Any]]] = {}
        self.history_points = history_points
        self.history_spacing_ms = history_spacing_ms
        self.bars: dict[str, dict[str, Any]] = {}  # symbol -> newest bar
        self.rolling: dict[str, dict[str, dict[str, Any]]] = {}  # symbol -> window -> row
        self.ath: dict[str, dict[str, Any]] = {}  # symbol -> {price, ts_ms, source}
        self.open_windows: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.steps: dict[str, set[float]] = {
            s: set(v) for s, v in (level_steps or DEFAULT_LEVEL_STEPS).items()
        }
        # key -> signal id -> delta of its latest status, least recently changed first
        self.signals: dict[str, dict[str, Delta]] = {}
        self.recent_signals = recent_signals

    # ---- updates

    def apply_tick(self, row: list[Any]) -> None:
        symbol, ts_ms, price = row[0], row[1], row[2]
        last = self.last.get(symbol)
        if last is None or ts_ms >= last[1]:
            self.last[symbol] = row
            points = self.history.get(symbol)
            if points is None:
                points = self.history[symbol] = deque(maxlen=self.history_points)
            spacing = self.history_spacing_ms
            if points and ts_ms // spacing == points[-1][0] // spacing:
                points[-1] = [ts_ms, price]
            else:
                points.append([ts_ms, price])
        ath = self.ath.get(symbol)
        if ath is None or price > ath["price"]:
            self.ath[symbol] = {"price": price, "ts_ms": ts_ms, "source": "tick"}

    def apply_row(self, kind: str, row: Mapping[str, Any]) -> None:
        """A row of subscription kind ``kind`` (bars, rolling_highs, record_breaks, ...)."""
        if kind == "bars":
            symbol = row["symbol"]
            bar = self.bars.get(symbol)
            if bar is None or row["ts_ms"] >= bar["ts_ms"]:
                self.bars[symbol] = dict(row)
        elif kind == "rolling_highs":
            windows = self.rolling.setdefault(row["symbol"], {})
            current = windows.get(row["window"])
            if current is None or row["ts_ms"] >= current["ts_ms"]:
                windows[row["window"]] = dict(row)
        elif kind == "record_breaks":
            symbol = row["symbol"]
            step = row.get("step")
            if step and record_kind(row) in ("level_up", "level_down"):
                self.steps.setdefault(symbol, set()).add(float(step))
            if record_kind(row) == "ath":
                ath = self.ath.get(symbol)
                price = row["price"]
                if (
                    ath is None
                    or price > ath["price"]
                    or (price == ath["price"] and ath["source"] == "tick")
                ):
                    self.ath[symbol] = {"price": price, "ts_ms": row["ts_ms"], "source": "record"}
        elif kind == "divergence_windows":
            ident = (row.get("pair"), row.get("metric"), row.get("opened_at_ms"))
            if row.get("closed_at_ms") is None:
                self.open_windows[ident] = dict(row)
            else:
                self.open_windows.pop(ident, None)

    def apply_signal(self, signal_id: str, delta: Delta) -> None:
        """A signal's new status (a delta the log accepted): the latest per id, bounded per key."""
        recent = self.signals.get(delta.key)
        if recent is None:
            recent = self.signals[delta.key] = {}
        recent.pop(signal_id, None)  # re-inserted: the bound drops the least recently changed
        recent[signal_id] = delta
        if len(recent) > self.recent_signals:
            del recent[next(iter(recent))]

    # ---- snapshot

    def snapshot(
        self, wants: Wants, now_ms: int, history: bool = False, confirmed_only: bool = False
    ) -> dict[str, Any]:
        """The current state a client subscribed to (``wants`` combines subscription and access).

        ``ath`` and ``levels`` come with ticks or record_breaks subscriptions; ``history``
        (recent [ts_ms, price] points of the ticks subscribed) only when asked for;
        ``signals``: the latest frame of each recent signal id, in log order (only the
        confirmed ones for a ``confirmed_only`` client).
        """
        out: dict[str, Any] = {"type": "snapshot", "as_of_ms": now_ms}
        out["ticks"] = {
            s: {"type": "tick", **dict(zip(TICK_FIELDS, row, strict=False))}
            for s, row in sorted(self.last.items())
            if wants("ticks", s)
        }
        if history:
            out["history"] = {
                s: list(points) for s, points in sorted(self.history.items()) if wants("ticks", s)
            }
        out["bars"] = {
            s: _framed("bar", r) for s, r in sorted(self.bars.items()) if wants("bars", s)
        }
        out["rolling_highs"] = {
            s: {w: _framed("rolling_high", r) for w, r in sorted(ws.items())}
            for s, ws in sorted(self.rolling.items())
            if wants("rolling_highs", s)
        }

        def either(s: str) -> bool:
            return wants("ticks", s) or wants("record_breaks", s)

        out["ath"] = {s: dict(a) for s, a in sorted(self.ath.items()) if either(s)}
        out["levels"] = {s: sorted(v) for s, v in sorted(self.steps.items()) if v and either(s)}
        out["divergence_windows"] = [
            _framed("divergence_window", r)
            for _, r in sorted(self.open_windows.items(), key=lambda kv: repr(kv[0]))
            if wants("divergence_windows", r.get("pair", ""))
        ]
        picked = [
            d
            for recent in self.signals.values()
            for d in recent.values()
            if wants(d.kind, d.key) and not (confirmed_only and d.unconfirmed)
        ]
        picked.sort(key=lambda d: d.seq)
        out["signals"] = [d.frame() for d in picked]
        return out


def _framed(frame_type: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": frame_type, **{k: v for k, v in row.items() if k != "kind"}}


class SignalLog:
    """Every signal consumed so far (record breaks, window changes), deduplicated, bounded.

    The gateway reads the signals topic from its beginning into this log; a subscribe with
    ``since_ms`` replays the matching entries, and live signals continue from the log's
    head in the same event-loop step, so there is neither gap nor duplicate. Each entry has
    a sequence number (1, 2, ...); a signal whose identity is already in the log (a
    processor restart re-sending it) is refused.

    A signal with a life (a record or rolling break) is logged per step: one entry per
    (id, status). A provisional step for an id the log already holds as confirmed or
    retracted is refused too: a processor restart re-announcing a settled signal would
    otherwise show a desk a confirmed signal turning provisional again.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        self.capacity = capacity
        self._entries: deque[tuple[int, Delta]] = deque()  # (event ts, delta)
        self._identities: set[tuple[Any, ...]] = set()
        self._ident_of: dict[int, tuple[Any, ...]] = {}
        self._settled: dict[str, int] = {}  # id -> its final (confirmed, retracted) entries held
        self.head = 0  # sequence number of the newest entry
        self.evicted_before_ms: int | None = None  # newest event time evicted, if any

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self, kind: str, row: Mapping[str, Any], delta_factory: Callable[[int], Delta]
    ) -> Delta | None:
        """Append a signal; returns its delta (with its sequence number), None if a duplicate."""
        return self._append(signal_identity(kind, row), event_ts(kind, row), delta_factory)

    def add_step(
        self, signal_id: str, status: str, ts_ms: int, delta_factory: Callable[[int], Delta]
    ) -> Delta | None:
        """Append one step of a signal's life; None if a duplicate or a stale provisional."""
        if status == PROVISIONAL and signal_id in self._settled:
            return None
        delta = self._append((EVENT_ROW_KIND, signal_id, status), ts_ms, delta_factory)
        if delta is not None and status in FINAL_STATUSES:
            self._settled[signal_id] = self._settled.get(signal_id, 0) + 1
        return delta

    def _append(
        self, ident: tuple[Any, ...], ts: int, delta_factory: Callable[[int], Delta]
    ) -> Delta | None:
        if ident in self._identities:
            return None
        self.head += 1
        delta = delta_factory(self.head)
        self._entries.append((ts, delta))
        self._identities.add(ident)
        self._ident_of[self.head] = ident
        while len(self._entries) > self.capacity:
            old_ts, old = self._entries.popleft()
            self._forget(self._ident_of.pop(old.seq))
            if self.evicted_before_ms is None or old_ts > self.evicted_before_ms:
                self.evicted_before_ms = old_ts
        return delta

    def _forget(self, ident: tuple[Any, ...]) -> None:
        self._identities.discard(ident)
        if ident[0] == EVENT_ROW_KIND and ident[2] in FINAL_STATUSES:
            left = self._settled[ident[1]] - 1
            if left:
                self._settled[ident[1]] = left
            else:
                del self._settled[ident[1]]

    def settled(self, signal_id: str) -> bool:
        """Whether the log holds a confirmation or retraction of ``signal_id``."""
        return signal_id in self._settled

    @property
    def oldest_seq(self) -> int:
        """Sequence number of the oldest entry still held (head + 1 when empty)."""
        return self._entries[0][1].seq if self._entries else self.head + 1

    def since(self, since_ms: int) -> Iterator[Delta]:
        """Entries with event time >= since_ms, in log order."""
        for ts, delta in self._entries:
            if ts >= since_ms:
                yield delta

    def complete_since(self, since_ms: int) -> bool:
        """False when entries at or after since_ms may have been evicted."""
        return self.evicted_before_ms is None or self.evicted_before_ms < since_ms
