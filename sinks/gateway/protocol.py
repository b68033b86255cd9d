"""The desk feed protocol, apart from any socket: messages, subscriptions, access, frames.

Everything here is pure: the sessions (``session.py``) feed it decoded messages and
ask it what to send to whom (conflation: ``conflation.py``). See docs/gateway.md for the
protocol as a client sees it.

Client -> server (JSON text frames)::

    {"op": "subscribe", "symbols": ["XAU", "XAG"] | "*", "kinds": [...] | "*", "since_ms": 0,
     "history": false}
    {"op": "unsubscribe", "symbols": [...] | "*", "kinds": [...] | "*"}
    {"op": "snapshot", "history": false}
    {"op": "heartbeat"}

Server -> client: ``snapshot``, ``tick``, ``bar``, ``rolling_high``, ``record_break``,
``divergence_window``, ``replayed``, ``unsubscribed``, ``heartbeat`` and ``error`` frames.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tickstream.contracts import ROW_SPECS, TICK_FIELDS
from tickstream.contracts.rows import SPECS_BY_FEED, key_members
from tickstream.settings import check_token, parse_token_file, parse_token_list

# Every name below is derived from the row contracts (tickstream.contracts.rows): a new row
# kind is served with no change here.
# subscription kinds, in the order the protocol lists them
KINDS = ("ticks", *(spec.feed for spec in ROW_SPECS))
SIGNAL_KINDS = frozenset(spec.feed for spec in ROW_SPECS if spec.is_signal)
# row "kind" on the topics -> subscription kind, and -> frame "type"
ROW_KIND_TO_SUB = {"tick": "ticks", **{spec.kind: spec.feed for spec in ROW_SPECS}}
SUB_TO_TYPE = {"ticks": "tick", **{spec.feed: spec.frame for spec in ROW_SPECS}}
__all__ = ["TICK_FIELDS"]  # re-exported for the board state

MAX_SYMBOLS = 1_000
MAX_SYMBOL_LEN = 64
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


def parse_message(raw: str | bytes) -> Command:
    """One client frame -> a command; raises ProtocolError with a stable error code."""
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
        return Subscribe(
            _symbols(doc["symbols"]), _kinds(doc.get("kinds", ALL)), since, _flag(doc, "history")
        )
    if op == "unsubscribe":
        return Unsubscribe(_symbols(doc.get("symbols", ALL)), _kinds(doc.get("kinds", ALL)))
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


def _symbols(value: Any) -> frozenset[str] | None:
    if value == ALL:
        return None
    if not isinstance(value, list) or not value:
        raise ProtocolError("bad_request", "'symbols' must be a non-empty list of strings or \"*\"")
    if len(value) > MAX_SYMBOLS:
        raise ProtocolError("bad_request", f"at most {MAX_SYMBOLS} symbols per message")
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
    """The symbols a row key stands for: 'XAU/XAG' (pair) and 'XAU+XAG' (sync) -> both."""
    return key_members(key)


class _KindSelection:
    __slots__ = ("all", "symbols", "excluded")

    def __init__(self) -> None:
        self.all = False
        self.symbols: set[str] = set()
        self.excluded: set[str] = set()

    def matches(self, symbol: str) -> bool:
        return symbol in self.symbols or (self.all and symbol not in self.excluded)

    def empty(self) -> bool:
        return not self.all and not self.symbols


class Subscription:
    """What one client asked for: per kind, a set of symbols, or all but some.

    A row whose key joins several symbols (a pair 'XAU/XAG', a sync group 'XAU+XAG')
    matches when the key itself or any of its symbols is selected.
    """

    def __init__(self) -> None:
        self._kinds: dict[str, _KindSelection] = {}
        self._cache: dict[tuple[str, str], bool] = {}

    def subscribe(self, symbols: frozenset[str] | None, kinds: Iterable[str]) -> None:
        self._cache.clear()
        for kind in kinds:
            sel = self._kinds.setdefault(kind, _KindSelection())
            if symbols is None:
                sel.all = True
                sel.excluded.clear()
            else:
                sel.symbols |= symbols
                sel.excluded -= symbols

    def unsubscribe(self, symbols: frozenset[str] | None, kinds: Iterable[str]) -> None:
        self._cache.clear()
        for kind in kinds:
            sel = self._kinds.get(kind)
            if sel is None:
                continue
            if symbols is None:
                del self._kinds[kind]
                continue
            sel.symbols -= symbols
            if sel.all:
                sel.excluded |= symbols
            if sel.empty():
                del self._kinds[kind]

    def wants(self, kind: str, key: str) -> bool:
        """Whether a row of subscription kind ``kind`` keyed ``key`` goes to this client."""
        cached = self._cache.get((kind, key))
        if cached is not None:
            return cached
        sel = self._kinds.get(kind)
        if sel is None:
            result = False
        elif sel.matches(key):
            result = True
        else:
            parts = members(key)
            result = len(parts) > 1 and any(sel.matches(p) for p in parts)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(kind, key)] = result
        return result

    def kinds(self) -> frozenset[str]:
        return frozenset(self._kinds)

    def active(self) -> bool:
        return bool(self._kinds)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in KINDS:
            sel = self._kinds.get(kind)
            if sel is None:
                continue
            if sel.all:
                out[kind] = {"symbols": ALL, "except": sorted(sel.excluded)}
            else:
                out[kind] = {"symbols": sorted(sel.symbols)}
        return out


# --------------------------------------------------------------------------- access


@dataclass(frozen=True, slots=True)
class Access:
    """What one token may see: every symbol (allowed None) or an allow-list."""

    token_name: str
    allowed: frozenset[str] | None = None

    def check(self, symbols: frozenset[str] | None) -> None:
        """Refuse a subscription naming a symbol outside the allow-list ('*' is narrowed)."""
        if self.allowed is None or symbols is None:
            return
        refused = sorted(s for s in symbols if not self.allows(s))
        if refused:
            raise ProtocolError(
                "forbidden_symbol",
                f"this token may not subscribe to {refused}; allowed: {sorted(self.allowed)}",
            )

    def allows(self, key: str) -> bool:
        """A plain symbol must be listed; a pair or group needs itself or all its symbols."""
        allowed = self.allowed
        if allowed is None or key in allowed:
            return True
        parts = members(key)
        return len(parts) > 1 and all(p in allowed for p in parts)


class TokenTable:
    """The configured tokens, each with its optional symbol allow-list.

    The token grammar (characters, list and file formats) is the ``gateway.tokens``
    setting's, in tickstream.settings: one rule whether a token comes from a flag or code.
    """

    def __init__(self, tokens: Mapping[str, frozenset[str] | None]) -> None:
        for token in tokens:
            check_token(token)
        self._tokens = dict(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def lookup(self, presented: str | None) -> Access | None:
        """The access of a presented token, or None; compares in constant time per token."""
        if not presented:
            return None
        found: Access | None = None
        given = presented.encode()
        for i, (token, allowed) in enumerate(self._tokens.items()):
            if hmac.compare_digest(given, token.encode()) and found is None:
                found = Access(f"token#{i + 1}", allowed)
        return found

    def merged(self, other: TokenTable) -> TokenTable:
        return TokenTable({**self._tokens, **other._tokens})

    @classmethod
    def parse_list(cls, text: str) -> TokenTable:
        """``TOKEN[:SYM+SYM...]`` entries separated by commas (or whitespace)."""
        return cls(parse_token_list(text))

    @classmethod
    def parse_file(cls, text: str) -> TokenTable:
        """One token a line: ``TOKEN [SYM SYM ...]``; blank lines and '#' comments ignored."""
        return cls(parse_token_file(text))


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


def tick_frame(row: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "tick"}
    frame.update(zip(TICK_FIELDS, row, strict=False))
    return frame


class Delta:
    """One outgoing message, encoded at most once however many clients get it."""

    __slots__ = ("kind", "key", "created_ms", "seq", "_doc", "_row", "_data")

    def __init__(
        self,
        kind: str,
        key: str,
        created_ms: int | None,
        doc: dict[str, Any] | None = None,
        row: list[Any] | None = None,
        seq: int = 0,
    ) -> None:
        self.kind = kind  # subscription kind
        self.key = key  # symbol or pair
        self.created_ms = created_ms
        self.seq = seq  # signals: position in the gateway's signal log (1, 2, ...)
        self._doc = doc
        self._row = row
        self._data: bytes | None = None

    @property
    def doc(self) -> dict[str, Any]:
        if self._doc is None:
            self._doc = tick_frame(self._row or [])
        return self._doc

    def data(self) -> bytes:
        if self._data is None:
            doc = self.doc
            if self.created_ms is not None:
                doc = {**doc, "created_ms": self.created_ms}
            if self.seq:
                doc = {**doc, "signal_seq": self.seq}
            self._data = orjson.dumps(doc)
        return self._data


def error_frame(error: str, detail: str) -> bytes:
    return orjson.dumps({"type": "error", "error": error, "detail": detail})


def heartbeat_frame(now_ms: int) -> bytes:
    return orjson.dumps({"type": "heartbeat", "ts_ms": now_ms})
