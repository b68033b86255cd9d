"""The desk feed protocol, apart from any socket: messages and frames.

Everything here is pure: the sessions (``session.py``) feed it decoded messages and
ask it what to send to whom (what a client subscribed to, within its cap:
``subscription.py``; conflation: ``conflation.py``; who may see what: ``access.py``).
See docs/gateway.md for the protocol as a client sees it.

Client -> server (JSON text frames)::

    {"op": "subscribe", "symbols": ["XAU", "XAG"] | "*", "kinds": [...] | "*", "since_ms": 0,
     "history": false, "confirmed_only": false}
    {"op": "unsubscribe", "symbols": [...] | "*", "kinds": [...] | "*"}
    {"op": "snapshot", "history": false}
    {"op": "heartbeat"}

Server -> client: ``snapshot``, ``tick``, ``bar``, ``rolling_high``, ``record_break``,
``rolling_break``, ``divergence_window``, ``replayed``, ``unsubscribed``, ``heartbeat`` and
``error`` frames.

Record and rolling breaks reach desks as *signal events* (``signal_event`` rows): a
``provisional`` frame when the causing tick arrives, then the same ``id`` ``confirmed`` or
``retracted``. ``signal_step`` turns such a row into a frame of the signal's own type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tickstream.contracts import ROW_SPECS, TICK_FIELDS, row_from_doc, signal_id
from tickstream.contracts.rows import SPECS_BY_FEED, STATUSES, key_members, spec_for_kind

# A signal_event row is no kind of its own on the desk feed: it is one step (provisional,
# confirmed, retracted) in the life of another signal, and is served under that signal's
# subscription as a frame of that signal's type. Its spec is therefore set apart before
# anything is derived, so that "signal_events" never becomes a subscription kind.
EVENT_ROW_KIND = "signal_event"
_FEED_SPECS = tuple(spec for spec in ROW_SPECS if spec.kind != EVENT_ROW_KIND)

# Every name below is derived from the row contracts (tickstream.contracts.rows): a new row
# kind is served with no change here.
# subscription kinds, in the order the protocol lists them
KINDS = ("ticks", *(spec.feed for spec in _FEED_SPECS))
SIGNAL_KINDS = frozenset(spec.feed for spec in _FEED_SPECS if spec.is_signal)
# row "kind" on the topics -> subscription kind, and -> frame "type"
ROW_KIND_TO_SUB = {"tick": "ticks", **{spec.kind: spec.feed for spec in _FEED_SPECS}}
SUB_TO_TYPE = {"ticks": "tick", **{spec.feed: spec.frame for spec in _FEED_SPECS}}
# The signals the processor sends signal events about (SignalEvent.signal): the ones with an
# id (contracts.signal_id needs a price). Their plain rows, served before any event of their
# kind is seen, carry an id too, so that either form of a signal is one log entry.
EVENTED_KINDS = frozenset(
    spec.feed for spec in _FEED_SPECS if spec.is_signal and "price" in spec.fields
)
CONFIRMED = "confirmed"
PROVISIONAL = "provisional"
FINAL_STATUSES = frozenset(STATUSES) - {PROVISIONAL}
# what an event adds to its signal's fields in a frame
EVENT_FIELDS = ("id", "status", "announced", "reason", "recv_ms", "emitted_ms")
__all__ = ["TICK_FIELDS"]  # re-exported for the board state

# The most symbols (pairs and sync groups count as one each) a client may name in one message
# and in all its subscriptions together: GatewayConfig.max_symbols_per_client's default. A
# desk watches a few hundred symbols at most; a thousand leaves it room and still bounds
# what one connection holds (subscription.py says why it must be bounded).
MAX_SYMBOLS = 1_000
MAX_SYMBOL_LEN = 64
TOO_MANY_SYMBOLS = "too_many_symbols"  # the error code of a subscription over the cap
ALL = "*"

CLOSE_SLOW_CONSUMER = 4008  # application close code: send buffer over the limit


class ProtocolError(Exception):
    """A client message the server refuses; becomes an ``error`` frame, never a crash."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Subscribe:
    symbols: frozenset[str] | None  # None = every symbol ("*")
    kinds: frozenset[str]
    since_ms: int | None = None
    history: bool = False  # snapshot with recent price points per symbol (for charts)
    # only confirmed signal events (no provisional, no retracted); None = keep the setting
    confirmed_only: bool | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    symbols: frozenset[str] | None
    kinds: frozenset[str]


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    history: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


Command = Subscribe | Unsubscribe | SnapshotRequest | Heartbeat


def parse_message(raw: str | bytes, max_symbols: int = MAX_SYMBOLS) -> Command:
    """One client frame -> a command; raises ProtocolError with a stable error code.

    ``max_symbols``: the client's cap. A message naming more symbols than the client may
    hold at all is refused before any set is built from it (``too_many_symbols``).
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("bad_request", "a message is a JSON object with an 'op'")
    op = doc.get("op")
    if op == "subscribe":
        since = doc.get("since_ms")
        if since is not None and (type(since) is not int or since < 0):
            raise ProtocolError("bad_request", "since_ms must be an integer >= 0 (epoch ms)")
        if "symbols" not in doc:
            raise ProtocolError("bad_request", "subscribe needs 'symbols': a list or \"*\"")
        confirmed_only = _flag(doc, "confirmed_only") if "confirmed_only" in doc else None
        return Subscribe(
            _symbols(doc["symbols"], max_symbols),
            _kinds(doc.get("kinds", ALL)),
            since,
            _flag(doc, "history"),
            confirmed_only,
        )
    if op == "unsubscribe":
        symbols = _symbols(doc.get("symbols", ALL), max_symbols)
        return Unsubscribe(symbols, _kinds(doc.get("kinds", ALL)))
    if op == "snapshot":
        return SnapshotRequest(_flag(doc, "history"))
    if op == "heartbeat":
        return Heartbeat()
    if op is None:
        raise ProtocolError("bad_request", "missing 'op'")
    raise ProtocolError(
        "unknown_op",
        f"{str(op)[:40]!r} is not one of subscribe, unsubscribe, snapshot, heartbeat",
    )


def _flag(doc: dict[str, Any], name: str) -> bool:
    value = doc.get(name, False)
    if not isinstance(value, bool):
        raise ProtocolError("bad_request", f"'{name}' must be true or false")
    return value


def _symbols(value: Any, max_symbols: int) -> frozenset[str] | None:
    if value == ALL:
        return None
    if not isinstance(value, list) or not value:
        raise ProtocolError("bad_request", "'symbols' must be a non-empty list of strings or \"*\"")
    if len(value) > max_symbols:
        raise ProtocolError(
            TOO_MANY_SYMBOLS,
            f"this message names {len(value)} symbols; a client may name at most "
            f"{max_symbols}, in one message and in all its subscriptions together. "
            'Nothing changed: send fewer, or subscribe to "*"',
        )
    for s in value:
        if not isinstance(s, str) or not s or len(s) > MAX_SYMBOL_LEN:
            raise ProtocolError(
                "bad_request", f"a symbol is a string of 1-{MAX_SYMBOL_LEN} characters"
            )
        if s == ALL:
            raise ProtocolError("bad_request", '\'*\' stands alone: "symbols": "*"')
    return frozenset(value)


def _kinds(value: Any) -> frozenset[str]:
    if value == ALL:
        return frozenset(KINDS)
    if not isinstance(value, list) or not value:
        raise ProtocolError("bad_request", f"'kinds' must be a non-empty list of {KINDS} or \"*\"")
    unknown = [k for k in value if k not in KINDS]
    if unknown:
        raise ProtocolError("bad_request", f"unknown kinds {unknown!r}; known: {list(KINDS)}")
    return frozenset(value)


# --------------------------------------------------------------------------- matching


def members(key: str) -> tuple[str, ...]:
    """The symbols a row key stands for: 'XAU/XAG' (pair) and 'XAU+XAG' (sync) -> both.

    What one client subscribed to, and its cap, is ``subscription.py``.
    """
    return key_members(key)


# --------------------------------------------------------------------------- rows and frames


def record_kind(row: Mapping[str, Any]) -> str | None:
    """Which record a record_break row is ('ath', 'atl', 'level_up', ...)."""
    value = row.get("record")
    return value if isinstance(value, str) else None


def row_key(sub_kind: str, row: Mapping[str, Any]) -> str:
    return SPECS_BY_FEED[sub_kind].key_of(row)


def signal_identity(sub_kind: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two signals the same signal (a processor restart may send one twice)."""
    return SPECS_BY_FEED[sub_kind].signal_identity(row)


def event_ts(sub_kind: str, row: Mapping[str, Any]) -> int:
    """Event time a replay filters on: a window's close (or its open while open)."""
    return SPECS_BY_FEED[sub_kind].event_ts(row)


def row_frame(sub_kind: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The frame of an aggregates/signals row: its fields, 'type' instead of 'kind'."""
    frame: dict[str, Any] = {"type": SUB_TO_TYPE[sub_kind]}
    for k, v in row.items():
        if k != "kind":
            frame[k] = v
    return frame


@dataclass(frozen=True, slots=True)
class SignalStep:
    """A ``signal_event`` row as the desk feed serves it: the frame, and what routes it."""

    sub_kind: str  # the signal's subscription kind: record_breaks, rolling_breaks
    key: str  # the signal's key (a symbol, or a sync group "XAU+XAG")
    id: str
    status: str  # provisional | confirmed | retracted
    signal: str  # the signal row's kind: record_break | rolling_break
    ts_ms: int  # the signal's event time: what a replay filters on
    recv_ms: int | None  # the producer's receipt of the causing tick (latency metric)
    row: dict[str, Any]  # the signal row (for the board state, once confirmed)
    frame: dict[str, Any]


def signal_step(doc: Mapping[str, Any]) -> SignalStep:
    """Decode a ``signal_event`` row; KeyError, TypeError or ValueError when malformed.

    The frame is the signal row's own (its type and fields, as a plain row of its kind
    would be served) plus ``EVENT_FIELDS``, so a desk handles one frame type per signal
    whatever its status. The embedded row must carry every field of its contract: a
    provisional frame is not checked by anything else before it reaches a desk.
    """
    status = doc["status"]
    if status not in STATUSES:
        raise ValueError(f"unknown status {str(status)[:20]!r}")
    sid = doc["id"]
    if not isinstance(sid, str) or not sid:
        raise ValueError("a signal event needs an id")
    spec = spec_for_kind(doc["signal"])
    if spec.kind == EVENT_ROW_KIND or not spec.is_signal:
        raise ValueError(f"{spec.kind} rows have no signal events")
    row = orjson.loads(doc["row"])  # orjson.JSONDecodeError is a ValueError
    if not isinstance(row, dict) or row.get("kind", spec.kind) != spec.kind:
        raise ValueError("the event's row is not a row of its signal")
    missing = [f for f in spec.fields if f not in row and f not in spec.defaults]
    if missing:
        raise KeyError(f"the event's row lacks {missing}")
    row["kind"] = spec.kind
    key = spec.key_of(row)
    if not key:
        raise ValueError("the event's row has no key")
    recv_ms = doc.get("recv_ms")
    if recv_ms is not None and type(recv_ms) is not int:
        raise TypeError("recv_ms must be an integer (epoch ms) or null")
    frame = row_frame(spec.feed, row)
    frame.update(
        id=sid,
        status=status,
        announced=int(doc.get("announced") or 0),
        reason=str(doc.get("reason") or ""),
        recv_ms=recv_ms,
        emitted_ms=doc.get("emitted_ms"),
    )
    return SignalStep(
        spec.feed, key, sid, status, spec.kind, int(doc["ts_ms"]), recv_ms, row, frame
    )


def confirmed_frame(sub_kind: str, row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A plain (exact) signal row served as its signal's confirmation: (id, frame).

    For a kind of which no signal event has been seen (a processor that does not send them,
    or topic history from before it did): the frame has the fields an event's would have,
    ``id`` the one the processor gives the same signal, so that an event confirming it later
    is the same (id, status) and reaches nobody twice.
    """
    sid = signal_id(row_from_doc(row))
    frame = row_frame(sub_kind, row)
    frame.update(id=sid, status=CONFIRMED, announced=0, reason="", recv_ms=None, emitted_ms=None)
    return sid, frame


def tick_frame(row: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "tick"}
    frame.update(zip(TICK_FIELDS, row, strict=False))
    return frame


class Delta:
    """One outgoing message, encoded at most once however many clients get it."""

    __slots__ = ("kind", "key", "created_ms", "seq", "status", "_doc", "_row", "_data")

    def __init__(
        self,
        kind: str,
        key: str,
        created_ms: int | None,
        doc: dict[str, Any] | None = None,
        row: list[Any] | None = None,
        seq: int = 0,
        status: str | None = None,
    ) -> None:
        self.kind = kind  # subscription kind
        self.key = key  # symbol or pair
        self.created_ms = created_ms
        self.seq = seq  # signals: position in the gateway's signal log (1, 2, ...)
        # a signal with a life (provisional, confirmed, retracted), else None: what
        # confirmed_only clients are filtered on
        self.status = status
        self._doc = doc
        self._row = row
        self._data: bytes | None = None

    @property
    def doc(self) -> dict[str, Any]:
        if self._doc is None:
            self._doc = tick_frame(self._row or [])
        return self._doc

    def frame(self) -> dict[str, Any]:
        """The frame as sent: the doc plus its creation stamp and log position."""
        doc = self.doc
        if self.created_ms is not None:
            doc = {**doc, "created_ms": self.created_ms}
        if self.seq:
            doc = {**doc, "signal_seq": self.seq}
        return doc

    @property
    def unconfirmed(self) -> bool:
        """A provisional or retracted signal: not for a confirmed_only client."""
        return self.status is not None and self.status != CONFIRMED

    def data(self) -> bytes:
        if self._data is None:
            self._data = orjson.dumps(self.frame())
        return self._data


def error_frame(error: str, detail: str) -> bytes:
    return orjson.dumps({"type": "error", "error": error, "detail": detail})


def heartbeat_frame(now_ms: int) -> bytes:
    return orjson.dumps({"type": "heartbeat", "ts_ms": now_ms})
