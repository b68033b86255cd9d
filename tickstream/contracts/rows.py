"""Output rows: what the processor derives from ticks, one typed record per row kind.

Each row type is a frozen, slotted dataclass that the kernels build, plus a ``RowSpec``
saying everything other stages need to know about it: its ``kind`` on the wire, the
topic role it is published on, the ClickHouse table and the column of each field, its
key (the partitioning symbol or pair), its identity (what makes a later row replace an
earlier one), the desk feed's subscription name and frame type. The sink's insert
columns, the gateway's frames and the DDL checks are derived from these specs, so a
field cannot be silently dropped on its way to a table or a desk.

Column names: a field's column is its name without the ``_ms`` unit suffix (times are
``DateTime64(3)`` columns), unless ``renamed`` says otherwise.

On the wire a row is a JSON object of its fields plus ``kind`` (see ``OutputRow.encode``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import orjson

PAIR_JOIN = "/"  # a divergence pair's key: "XAU/XAG"
GROUP_JOIN = "+"  # a sync group's label: "XAU+XAG"


def pair_key(a: str, b: str) -> str:
    return f"{a}{PAIR_JOIN}{b}"


def group_label(members: list[str] | tuple[str, ...]) -> str:
    return GROUP_JOIN.join(sorted(members))


def key_members(key: str) -> tuple[str, ...]:
    """The symbols a row key stands for: a pair or a sync group names several."""
    if PAIR_JOIN in key:
        return tuple(key.split(PAIR_JOIN))
    if GROUP_JOIN in key:
        return tuple(key.split(GROUP_JOIN))
    return (key,)


@dataclass(frozen=True, slots=True)
class RowSpec:
    """Everything a stage needs to know about one kind of output row."""

    kind: str  # the row's "kind" on the wire
    topic: str  # "aggregates" or "signals": the Topics attribute it is published on
    table: str  # the ClickHouse table holding it
    key: str  # the field whose value keys the Kafka message (symbol or pair)
    identity: tuple[str, ...]  # fields naming the row: a newer row with them replaces it
    event_ts: Callable[[Mapping[str, Any]], int]  # the event time a desk replay filters on
    feed: str  # the desk feed's subscription name
    frame: str  # the desk feed's frame type
    partition_ts: str  # the event-time field whose month partitions the table
    fields: tuple[str, ...] = ()  # filled from the row type
    renamed: Mapping[str, str] = field(default_factory=dict)  # field -> column, if not derived
    derived: Mapping[str, Callable[[Mapping[str, Any]], Any]] = field(default_factory=dict)
    revision: tuple[str, ...] = ()  # fields telling apart revisions of one row (open/closed)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # missing in older rows

    @property
    def is_signal(self) -> bool:
        return self.topic == "signals"

    def column(self, name: str) -> str:
        if name in self.renamed:
            return self.renamed[name]
        return name[:-3] if name.endswith("_ms") else name

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's insert columns, in order: one per field, then the derived ones."""
        return (*(self.column(f) for f in self.fields), *self.derived)

    def values(self, doc: Mapping[str, Any]) -> list[Any]:
        """A row's values for ``columns``; raises KeyError when a required field is missing."""
        defaults = self.defaults
        out = [doc[f] if f not in defaults else doc.get(f, defaults[f]) for f in self.fields]
        out.extend(fn(doc) for fn in self.derived.values())
        return out

    def signal_identity(self, doc: Mapping[str, Any]) -> tuple[Any, ...]:
        """One signal, whoever sends it again (a processor restart, a replay)."""
        names = (*self.identity, *self.revision)
        return (self.kind, *(doc.get(f) for f in names))

    def key_of(self, doc: Mapping[str, Any]) -> str:
        return str(doc.get(self.key) or "")


class OutputRow:
    """Behaviour shared by every row type (the dataclasses below)."""

    __slots__ = ()
    SPEC: ClassVar[RowSpec]

    def encode(self) -> bytes:
        return orjson.dumps(self)

    def __getitem__(self, name: str) -> Any:
        """Read a field as from the row's JSON object (``row["ts_ms"]``)."""
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def to_doc(self) -> dict[str, Any]:
        """The row as a JSON object, exactly as it travels ("kind" included)."""
        return orjson.loads(orjson.dumps(self))  # type: ignore[no-any-return]

    @property
    def key(self) -> str:
        return str(getattr(self, self.SPEC.key))

    @property
    def symbols(self) -> tuple[str, ...]:
        return key_members(self.key)


def _ts(doc: Mapping[str, Any]) -> int:
    return int(doc.get("ts_ms") or 0)


@dataclass(frozen=True, slots=True)
class Bar(OutputRow):
    """One-minute OHLC bar of a symbol (``ts_ms`` is the minute's start)."""

    kind: str = field(default="bar_1m", init=False)
    symbol: str
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    ticks: int


@dataclass(frozen=True, slots=True)
class RollingHigh(OutputRow):
    """A symbol's high and low over a trailing window, as of a period's last tick."""

    kind: str = field(default="rolling_high", init=False)
    symbol: str
    window: str
    ts_ms: int
    high: float
    high_ts_ms: int
    low: float
    low_ts_ms: int


@dataclass(frozen=True, slots=True)
class RecordBreak(OutputRow):
    """An all-time high/low, a level crossing or a synchronized high (see records.py).

    A tick that jumps across several levels of a grid gives one row, of the furthest
    level (``level``); ``from_level`` is the nearest level it crossed, so the row shows
    the whole span (``level`` again for a single crossing; None on ath/atl/sync_ath rows
    and on rows from before the field existed). Last, with a default, so that rows built
    positionally and older JSON rows still read.
    """

    kind: str = field(default="record_break", init=False)
    symbol: str
    record: str  # ath | atl | level_up | level_down | sync_ath
    ts_ms: int
    price: float
    level: float
    step: float
    prev_ts_ms: int | None
    since_prev_s: float | None
    first_time: int
    from_level: float | None = None


@dataclass(frozen=True, slots=True)
class DivergenceWindow(OutputRow):
    """A window in which a pair's ratio or return spread left its usual range."""

    kind: str = field(default="divergence_window", init=False)
    pair: str
    metric: str
    direction: int
    opened_at_ms: int
    closed_at_ms: int | None
    open_value: float
    peak_value: float
    peak_at_ms: int
    close_value: float | None
    z_open_value: float | None
    z_peak: float | None


@dataclass(frozen=True, slots=True)
class RollingBreak(OutputRow):
    """A tick above every earlier tick of its trailing window (or below: ``new_low``).

    Per symbol, in event time: at a tick of time ``t`` and price ``p``, ``new_high`` when
    the window ``(t - window, t)`` holds earlier ticks (ts < t, or equal ts and arrived
    before) and ``p`` is strictly above all of them; ``prev``/``prev_ts_ms`` are that
    previous high and the latest tick at it. ``new_low`` likewise.
    """

    kind: str = field(default="rolling_break", init=False)
    symbol: str
    window: str
    record: str  # new_high | new_low
    ts_ms: int
    price: float
    prev: float
    prev_ts_ms: int


@dataclass(frozen=True, slots=True)
class SignalEvent(OutputRow):
    """One step in the life of a desk signal: provisional, then confirmed or retracted.

    ``id`` is ``signal_id`` of the signal row, so the provisional event, its confirmation
    (or retraction) and a replay of the same input all carry the same id. ``row`` is the
    signal row's JSON object (its own contract; for a retraction, the provisional row).
    ``recv_ms`` is the producer's receipt of the tick behind the signal, ``emitted_ms``
    when the processor emitted this event: together, the desk latency in plain SQL.
    ``announced`` (confirmed only) is 1 when a provisional event came first. ``reason``
    says why a signal was retracted.
    """

    kind: str = field(default="signal_event", init=False)
    id: str
    status: str  # provisional | confirmed | retracted
    signal: str  # the signal row's kind: record_break | rolling_break
    symbol: str  # the signal row's key (a symbol, or a sync group "XAU+XAG")
    ts_ms: int
    price: float
    recv_ms: int | None
    emitted_ms: int
    announced: int
    reason: str
    row: str


STATUSES = ("provisional", "confirmed", "retracted")


def signal_id(row: OutputRow) -> str:
    """What the signal is, as an id: kind, its identity (symbol, level or window, event
    time) and price. Deterministic, so a replay of the same file yields the same ids."""
    return signal_id_of(signal_parts(row))


def signal_parts(row: OutputRow) -> tuple[Any, ...]:
    """What ``signal_id`` hashes: (kind, *identity, price). Two rows with equal parts are
    one signal (the live stage keys its pending signals by them)."""
    spec = row.SPEC
    return (spec.kind, *(getattr(row, f) for f in spec.identity), row["price"])


def signal_id_of(parts: tuple[Any, ...] | list[Any]) -> str:
    """``signal_id`` from the parts already at hand (a JSON array hashes the same either way)."""
    return hashlib.blake2b(orjson.dumps(parts), digest_size=8).hexdigest()


def _window_event_ts(doc: Mapping[str, Any]) -> int:
    closed = doc.get("closed_at_ms")
    return int(closed if closed is not None else doc.get("opened_at_ms") or 0)


def _window_version(doc: Mapping[str, Any]) -> int:
    """The closed version of a window outranks its open version (ReplacingMergeTree)."""
    closed = doc.get("closed_at_ms")
    return int(closed if closed is not None else doc["peak_at_ms"])


def _spec(row_type: type[OutputRow], **kwargs: Any) -> RowSpec:
    names = tuple(f.name for f in fields(row_type) if f.name != "kind")  # type: ignore[arg-type]
    kind = next(f.default for f in fields(row_type) if f.name == "kind")  # type: ignore[arg-type]
    spec = RowSpec(kind=kind, fields=names, **kwargs)  # type: ignore[arg-type]
    row_type.SPEC = spec
    return spec


ROW_SPECS: tuple[RowSpec, ...] = (
    _spec(
        Bar,
        topic="aggregates",
        table="bars_1m",
        key="symbol",
        identity=("symbol", "ts_ms"),
        event_ts=_ts,
        partition_ts="ts_ms",
        feed="bars",
        frame="bar",
    ),
    _spec(
        RollingHigh,
        topic="aggregates",
        table="rolling_highs",
        key="symbol",
        identity=("symbol", "window", "ts_ms"),
        event_ts=_ts,
        partition_ts="ts_ms",
        feed="rolling_highs",
        frame="rolling_high",
    ),
    _spec(
        RecordBreak,
        topic="signals",
        table="record_breaks",
        key="symbol",
        identity=("symbol", "record", "step", "level", "ts_ms"),
        event_ts=_ts,
        partition_ts="ts_ms",
        feed="record_breaks",
        frame="record_break",
        renamed={"record": "kind"},
        defaults={"from_level": None},  # rows of processors from before schema version 7
    ),
    _spec(
        DivergenceWindow,
        topic="signals",
        table="divergence_windows",
        key="pair",
        identity=("pair", "metric", "opened_at_ms"),
        event_ts=_window_event_ts,
        partition_ts="opened_at_ms",
        feed="divergence_windows",
        frame="divergence_window",
        derived={"version": _window_version},
        revision=("closed_at_ms",),
        defaults={"z_open_value": None, "z_peak": None},
    ),
    _spec(
        RollingBreak,
        topic="signals",
        table="rolling_breaks",
        key="symbol",
        identity=("symbol", "window", "record", "ts_ms", "price"),
        event_ts=_ts,
        partition_ts="ts_ms",
        feed="rolling_breaks",
        frame="rolling_break",
    ),
    _spec(
        SignalEvent,
        topic="signals",
        table="signal_ledger",
        key="symbol",
        identity=("id", "status"),
        event_ts=_ts,
        partition_ts="ts_ms",
        feed="signal_events",
        frame="signal_event",
        renamed={"recv_ms": "recv_ts", "emitted_ms": "emitted_at"},
    ),
)
"""Every row kind. The desk feed serves ``signal_event`` rows under the subscription of
the signal they are about (``record_breaks``, ``rolling_breaks``), framed as that signal
with ``id`` and ``status`` added."""

ROW_TYPES: dict[str, type[OutputRow]] = {
    t.SPEC.kind: t
    for t in (Bar, RollingHigh, RecordBreak, DivergenceWindow, RollingBreak, SignalEvent)
}
_BY_KIND = {spec.kind: spec for spec in ROW_SPECS}
SPECS_BY_FEED = {spec.feed: spec for spec in ROW_SPECS}


def spec_for_kind(kind: object) -> RowSpec:
    """The spec of a row kind; ValueError names the kinds there are."""
    spec = _BY_KIND.get(kind)  # type: ignore[arg-type]
    if spec is None:
        raise ValueError(f"unknown row kind {str(kind)[:40]!r}; known: {sorted(_BY_KIND)}")
    return spec


def row_from_doc(doc: Mapping[str, Any]) -> OutputRow:
    """A typed row from its JSON object (the inverse of ``OutputRow.to_doc``)."""
    spec = spec_for_kind(doc.get("kind"))
    row_type = ROW_TYPES[spec.kind]
    return row_type(**{f: doc.get(f, spec.defaults.get(f)) for f in spec.fields})
