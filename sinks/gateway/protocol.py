"""The desk feed protocol, apart from any socket: messages, subscriptions, access, conflation.

Everything here is pure: the server (``server.py``) feeds it decoded messages and
asks it what to send to whom. See docs/gateway.md for the protocol as a client sees it.

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
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

# subscription kinds, in the order the protocol lists them
KINDS = ("ticks", "bars", "rolling_highs", "record_breaks", "divergence_windows")
SIGNAL_KINDS = frozenset({"record_breaks", "divergence_windows"})

# row "kind" on the topics -> subscription kind, and -> frame "type"
ROW_KIND_TO_SUB = {
    "tick": "ticks",
    "bar_1m": "bars",
    "rolling_high": "rolling_highs",
    "record_break": "record_breaks",
    "divergence_window": "divergence_windows",
}
SUB_TO_TYPE = {
    "ticks": "tick",
    "bars": "bar",
    "rolling_highs": "rolling_high",
    "record_breaks": "record_break",
    "divergence_windows": "divergence_window",
}

TICK_FIELDS = ("symbol", "ts_ms", "price", "bid", "ask", "size", "venue", "seq", "recv_ms")

# the column naming which record a record_break row is: records.py calls it "record";
# older spellings are accepted so a mixed deployment still works
RECORD_KEYS = ("record", "record_kind", "kind_detail", "type")

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
    if "/" in key:
        return tuple(key.split("/"))
    if "+" in key:
        return tuple(key.split("+"))
    return (key,)


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

_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{1,256}$")


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
    """The configured tokens, each with its optional symbol allow-list."""

    def __init__(self, tokens: Mapping[str, frozenset[str] | None]) -> None:
        for token in tokens:
            if not _TOKEN_RE.match(token):
                raise ValueError(
                    f"token {token[:8]!r}...: use 1-256 of A-Z a-z 0-9 . _ ~ - (URL-safe)"
                )
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
        tokens: dict[str, frozenset[str] | None] = {}
        for entry in re.split(r"[,\s]+", text.strip()):
            if not entry:
                continue
            token, _, syms = entry.partition(":")
            tokens[token] = frozenset(s for s in syms.split("+") if s) if syms else None
        return cls(tokens)

    @classmethod
    def parse_file(cls, text: str) -> TokenTable:
        """One token a line: ``TOKEN [SYM SYM ...]``; blank lines and '#' comments ignored."""
        tokens: dict[str, frozenset[str] | None] = {}
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            token, *syms = line.split()
            tokens[token] = frozenset(syms) if syms else None
        return cls(tokens)


# --------------------------------------------------------------------------- rows and frames


def record_kind(row: Mapping[str, Any]) -> str | None:
    """Which record a record_break row is ('ath', 'atl', 'level_up', ...), whatever its key."""
    for key in RECORD_KEYS:
        value = row.get(key)
        if isinstance(value, str) and value != "record_break":
            return value
    return None


def row_key(sub_kind: str, row: Mapping[str, Any]) -> str:
    if sub_kind == "divergence_windows":
        return str(row.get("pair", ""))
    return str(row.get("symbol", ""))


def signal_identity(sub_kind: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two signals the same signal (a processor restart may send one twice)."""
    if sub_kind == "record_breaks":
        return (
            "record_break",
            row.get("symbol"),
            record_kind(row),
            row.get("ts_ms"),
            row.get("level"),
            row.get("step"),
        )
    return (
        "divergence_window",
        row.get("pair"),
        row.get("metric"),
        row.get("opened_at_ms"),
        row.get("closed_at_ms"),
    )


def event_ts(sub_kind: str, row: Mapping[str, Any]) -> int:
    """Event time a replay filters on: a window's close (or its open while open)."""
    if sub_kind == "divergence_windows":
        closed = row.get("closed_at_ms")
        return int(closed if closed is not None else row.get("opened_at_ms") or 0)
    return int(row.get("ts_ms") or 0)


def row_frame(sub_kind: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The frame of an aggregates/signals row: its fields, 'type' instead of 'kind'."""
    frame: dict[str, Any] = {"type": SUB_TO_TYPE[sub_kind]}
    for k, v in row.items():
        if k != "kind":
            frame[k] = v
    if sub_kind == "record_breaks":
        frame["record"] = record_kind(row)
        frame["type"] = "record_break"  # a row may carry its record under the key "type"
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


# --------------------------------------------------------------------------- delivered signals


class SeqSet:
    """The signal sequence numbers one client received: a bitmap from a moving base.

    One bit per signal of the log (25 KB for 200,000 signals), so a later replay can skip
    what the client already has; ``trim`` forgets the numbers the log no longer holds.
    """

    __slots__ = ("_base", "_bits")

    def __init__(self) -> None:
        self._base = 1  # sequence number of bit 0 (a multiple of 8, plus 1)
        self._bits = bytearray()

    def add(self, seq: int) -> None:
        i = seq - self._base
        if i < 0:
            return  # older than what is tracked: the log has evicted it anyway
        byte = i >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        self._bits[byte] |= 1 << (i & 7)

    def __contains__(self, seq: int) -> bool:
        i = seq - self._base
        if i < 0:
            return False
        byte = i >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (i & 7)))

    def trim(self, oldest: int) -> None:
        """Forget sequence numbers below ``oldest`` (whole bytes only)."""
        drop = (oldest - self._base) >> 3
        if drop > 0:
            del self._bits[:drop]
            self._base += drop * 8

    def __len__(self) -> int:
        return sum(bin(b).count("1") for b in self._bits)


# --------------------------------------------------------------------------- conflation


class Conflator:
    """Latest item per key until drained: the per-interval conflation of ticks."""

    __slots__ = ("_latest", "superseded")

    def __init__(self) -> None:
        self._latest: dict[str, Any] = {}
        self.superseded = 0  # items replaced before they were drained, ever

    def offer(self, key: str, item: Any) -> bool:
        """Keep ``item`` as the latest of ``key``; True when it replaced an undrained one."""
        latest = self._latest
        replaced = key in latest
        if replaced:
            self.superseded += 1
            del latest[key]  # re-insert: drain order follows the newest update
        latest[key] = item
        return replaced

    def pending(self) -> dict[str, Any]:
        """A copy of the undrained items by key."""
        return dict(self._latest)

    def drain(self) -> list[Any]:
        items = list(self._latest.values())
        self._latest.clear()
        return items

    def __len__(self) -> int:
        return len(self._latest)

    def __bool__(self) -> bool:
        return bool(self._latest)
