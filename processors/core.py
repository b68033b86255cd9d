"""The processor's batch step, apart from Faust: messages in, messages out.

It decodes a batch of ticks-topic messages, skips those already reflected in
the restored state (their offsets are part of it), runs the analytics, and says
what to publish where. Every message is checked by the tick contract on the way in
(other producers may write the topic): a bad tick or message is counted and sent to
the dead-letter topic with its reason, and never reaches the kernels' state.

It also follows end-of-input markers: once every partition of the ticks topic has
delivered the marker of a run, the held ticks are released and what they make is
emitted (an open divergence window stays open: more input may continue it), and the
marker is passed on to every output topic (the dead-letter topic included: the
processor's own dead letters come before it), so the sink knows when everything
derived from that input has arrived.

It also applies clock heartbeats (tickstream.contracts.Heartbeat, the publisher's word
that a quiet symbol's source clock has moved on): each is applied to the ordering stage
in its arrival position among the ticks, so a batch is cut at its heartbeats (ticks
before one are analysed, then it moves its symbol's clock, then the ticks after it; the
held ticks it passes are released by the next analysis, run even when no tick follows).
Results are therefore those of a one-by-one run, whatever the batching (ordering.py).
A heartbeat that changes nothing (no clock yet, not ahead of the clock, beyond the jump
limit) is counted by outcome (``tickstream_processor_heartbeats_total``); a malformed
one is a bad message like any other: dead letter with its reason, counted.

A core may own one ticks partition (``partition``): the unit of scale-out, since a
partition holds whole symbol groups (tickstream.groups). Its marker then ends its own
input, and everything it derives, the marker last, goes to that same partition of every
output topic: the marker on output partition p covers exactly the rows derived from
ticks partition p, whichever worker owns it, so the sink's count of markers still means
"everything is in". Its snapshot carries the group layout, and a restore under another
layout is refused (``LayoutChanged``).
"""

from __future__ import annotations

import logging
import time
import zlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeVar

import orjson

from processors.kernels.analytics import Analytics, AnalyticsConfig
from processors.kernels.ordering import (
    HEARTBEAT_ADVANCED,
    HEARTBEAT_OUTCOMES,
    Held,
    HeldTicks,
    held_state,
)
from tickstream import metrics
from tickstream.contracts import (
    BadTick,
    DeadLetter,
    EndOfInput,
    Heartbeat,
    OutputRow,
    SignalEvent,
    decode_ticks_message,
    encode_end_of_input,
    encode_ticks,
)
from tickstream.groups import GroupLayout, describe_change
from tickstream.model import Tick
from tickstream.settings import ConfigError
from tickstream.topics import Topics

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Incoming:
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes
    value: bytes
    partition: int | None = None


@dataclass(slots=True)
class StepOutput:
    messages: list[Outgoing] = field(default_factory=list)
    ticks: int = 0


class LayoutChanged(ConfigError):
    """State written under other symbol groups: restoring it would split a group."""

    def __init__(self, namespace: str, stored: GroupLayout, current: GroupLayout) -> None:
        super().__init__("divergence_pairs", describe_change(namespace, stored, current))


class StateSettingsChanged(ConfigError):
    """State folded under other kernel settings: going on would silently ignore the change."""

    def __init__(self, namespace: str, stored: Mapping[str, str], current: Mapping[str, str]):
        changed = [name for name in current if stored.get(name, current[name]) != current[name]]
        name = changed[0]
        super().__init__(
            name,
            f"namespace {namespace!r} was processed with {name} {stored[name]}, now "
            f"{current[name]}: the kernels cannot apply it to the history already in their "
            f"state. Set it back, or start a new --namespace and replay the ticks into it "
            f"(changed: {', '.join(changed)})",
        )


def check_restorable(
    namespace: str,
    state: Mapping[str, Any],
    layout: GroupLayout | None,
    shaping: Mapping[str, str] | None,
) -> None:
    """Refuse a snapshot written under another group layout, or folded under other
    state-shaping settings (older snapshots carry none: accepted). One rule for the
    start-up check and for every restore."""
    if layout is not None:
        stored_layout = GroupLayout.from_json(state.get("layout", []))
        if stored_layout != layout:
            raise LayoutChanged(namespace, stored_layout, layout)
    stored = state.get("settings")
    if stored is None or shaping is None:
        return
    if any(stored.get(name, value) != value for name, value in shaping.items()):
        raise StateSettingsChanged(namespace, stored, shaping)


class ProcessorCore:
    def __init__(
        self,
        topics: Topics,
        config: AnalyticsConfig,
        output_partitions: int,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        partition: int | None = None,
        layout: GroupLayout | None = None,
        state_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.topics = topics
        self.clock_ms = clock_ms  # the signal events' emission time (injected in tests)
        self.analytics = Analytics(config)
        self.output_partitions = output_partitions
        self.partition = partition  # the ticks partition this core owns; None: all of them
        self.layout = layout  # checked on restore, kept in the snapshot
        self.state_settings = state_settings  # likewise (processors.config.STATE_SHAPING)
        self.applied: dict[int, int] = {}  # ticks-topic partition -> last offset in the state
        metrics.PROCESSOR_ERRORS.labels("undecodable")  # exported at 0 from the start
        self.eof_seen: dict[str, set[int]] = {}
        self._placed: set[str] = set()  # symbols whose partition was checked
        self.heartbeats: Counter[str] = Counter()  # by outcome (ordering.heartbeat)
        self._encoder = SnapshotEncoder()
        for outcome in HEARTBEAT_OUTCOMES:
            metrics.PROCESSOR_HEARTBEATS.labels(outcome)  # exported at 0 from the start

    def step(self, batch: Iterable[Incoming]) -> StepOutput:
        out = StepOutput()
        ticks: list[Tick] = []
        beats: list[tuple[int, Heartbeat]] = []  # (ticks before it, heartbeat)
        finished: list[str] = []
        applied = self.applied
        for msg in batch:
            if msg.offset <= applied.get(msg.partition, -1):
                continue  # already reflected in the restored state
            applied[msg.partition] = msg.offset
            decoded = decode_ticks_message(msg.value)
            ticks.extend(decoded.ticks)
            if decoded.bad:
                self._dead_letter(msg, decoded.bad, out)
            control = decoded.control
            if control is None:
                continue
            if isinstance(control, Heartbeat):
                beats.append((len(ticks), control))
            elif self._eof(control):
                finished.append(control.run_id)
        if ticks:
            symbols = self._count(ticks)
            if self.layout is not None and not symbols <= self._placed:
                self._check_placement(symbols)
        if beats:
            self._step_with_heartbeats(ticks, beats, out)
        elif ticks:
            self._analyse(ticks, out)
        if ticks or beats:
            self._report_open_windows()
        for run_id in finished:
            flushed = self.analytics.flush(now_ms=self.clock_ms())
            self._publish([*flushed.events, *flushed.rows], flushed.late, out)
            _observe_signal_latency(flushed.events)
            ends = range(self.output_partitions) if self.partition is None else [self.partition]
            for topic in self.topics.processor_outputs():
                for p in ends:
                    marker = encode_end_of_input(run_id, p, self.output_partitions)
                    out.messages.append(Outgoing(topic, b"", marker, p))
            log.info("end of input %s: open windows flushed, marker passed on", run_id)
        out.ticks = len(ticks)
        return out

    def _analyse(self, ticks: list[Tick], out: StepOutput) -> None:
        result = self.analytics.update(ticks, now_ms=self.clock_ms())
        # signal events first: a provisional signal is what a desk waits for
        self._publish([*result.events, *result.rows], result.late, out)
        _observe_signal_latency(result.events)

    def _step_with_heartbeats(
        self, ticks: list[Tick], beats: list[tuple[int, Heartbeat]], out: StepOutput
    ) -> None:
        """The batch cut at its heartbeats: each applied after the ticks that came before
        it and before those after it (a run of heartbeats needs no analysis between them:
        none is an arrival); what they released goes out with the next analysis."""
        ordering = self.analytics.ordering
        start = 0
        moved = False  # a clock moved since the last analysis
        for position, beat in beats:
            if position > start:
                self._analyse(ticks[start:position], out)
                start, moved = position, False
            outcome = ordering.heartbeat(beat.symbol, beat.ts_ms)
            self.heartbeats[outcome] += 1
            metrics.PROCESSOR_HEARTBEATS.labels(outcome).inc()
            moved = moved or outcome == HEARTBEAT_ADVANCED
        if start < len(ticks) or moved:
            self._analyse(ticks[start:], out)

    def _report_open_windows(self) -> None:
        divergence = self.analytics.kernels["divergence"]
        for (pair, metric), direction in divergence.open_windows().items():  # type: ignore[attr-defined]
            metrics.DIVERGENCE_OPEN.labels(pair, metric).set(direction)

    def _eof(self, marker: EndOfInput) -> bool:
        if self.partition is not None:
            return True  # the marker on its own partition ends all this core will see
        seen = self.eof_seen.setdefault(marker.run_id, set())
        seen.add(marker.partition)
        if len(seen) >= marker.partitions:
            del self.eof_seen[marker.run_id]
            return True
        return False

    def _dead_letter(self, msg: Incoming, bad: list[BadTick], out: StepOutput) -> None:
        """Refused ticks go to the dead-letter topic (and so to rejected_ticks), with why."""
        position = f"partition {msg.partition} offset {msg.offset}"
        now_ms = time.time_ns() // 1_000_000
        for item in bad:
            metrics.PROCESSOR_ERRORS.labels(item.reason).inc()
            letter = DeadLetter(
                raw=item.excerpt,
                source="processor",
                position=position,
                reason=item.reason,
                detail=f"{item.detail} (input of {item.size} bytes)",
                recv_ms=now_ms,
                symbol=item.symbol,
            )
            key = (item.symbol or "").encode()
            out.messages.append(Outgoing(self.topics.dlq, key, letter.encode(), self.partition))
        log.error("%s: %d refused tick(s), first: %s", position, len(bad), bad[0].detail)

    def _publish(self, rows: list[OutputRow], late: list[Tick], out: StepOutput) -> None:
        kinds: Counter[str] = Counter()
        topics = self.topics
        partition = self.partition
        for row in rows:
            spec = row.SPEC
            kinds[spec.kind] += 1
            out.messages.append(
                Outgoing(getattr(topics, spec.topic), row.key.encode(), row.encode(), partition)
            )
        for kind, n in kinds.items():
            metrics.PROCESSOR_OUTPUTS.labels(kind).inc(n)
        for tick in late:
            metrics.PROCESSOR_LATE.labels(tick.symbol).inc()
            out.messages.append(
                Outgoing(self.topics.late, tick.symbol.encode(), encode_ticks([tick]), partition)
            )

    def _check_placement(self, symbols: set[str]) -> None:
        """Warn, once per symbol, of a tick on another partition than its group's.

        Ticks from a producer that keys by symbol (not by group, as the publisher does)
        split a group across cores, whose pairs and syncs then never meet.
        """
        assert self.layout is not None and self.partition is not None
        for symbol in symbols - self._placed:
            self._placed.add(symbol)
            home = self.layout.partition_of(symbol, self.output_partitions)
            if home != self.partition:
                log.warning(
                    "%s arrived on ticks partition %d, but its group %s belongs on %d: its "
                    "producer does not key ticks by group, so the group's pairs and syncs "
                    "are incomplete (docs/scaling.md)",
                    symbol, self.partition, self.layout.group_of(symbol), home,
                )  # fmt: skip

    @staticmethod
    def _count(ticks: list[Tick]) -> set[str]:
        """Per-batch metrics, latency sampled on each symbol's last tick; the symbols."""
        per_symbol: Counter[str] = Counter()
        newest: dict[str, int] = {}
        last: dict[str, Tick] = {}
        for t in ticks:
            per_symbol[t.symbol] += 1
            last[t.symbol] = t
            if t.ts_ms > newest.get(t.symbol, -1):
                newest[t.symbol] = t.ts_ms
        now_s = time.time()
        for symbol, n in per_symbol.items():
            metrics.PROCESSOR_TICKS.labels(symbol).inc(n)
            metrics.LAST_TICK_TS.labels("processor", symbol).set(newest[symbol] / 1000)
            metrics.EVENT_LAG.labels("processor").observe(max(0.0, now_s - newest[symbol] / 1000))
            recv_ms = last[symbol].recv_ms
            if recv_ms is not None:
                metrics.E2E_LATENCY.labels("processor").observe(max(0.0, now_s - recv_ms / 1000))
        return set(per_symbol)

    def snapshot(self) -> bytes:
        return finish(self.capture())

    def capture(self) -> Encoding[bytes]:
        """The state as of now, encoded in steps run later (``finish``), while this core
        goes on. Only the held ticks' conversion is left to the encoding
        (ordering.HeldTicks), which is most of a big state's cost; the rest is copied."""
        state: dict[str, Any] = {
            "applied": dict(self.applied),
            "eof_seen": {k: sorted(v) for k, v in self.eof_seen.items()},
            "analytics": self.analytics.snapshot(deferred=True),
        }
        if self.partition is not None:
            state["partition"] = self.partition
        if self.layout is not None:
            state["layout"] = self.layout.to_json()
        if self.state_settings is not None:
            state["settings"] = dict(self.state_settings)
        return self._encoder.steps(state)

    def restore(self, blob: bytes) -> None:
        state = decode_state(blob)
        self._encoder = SnapshotEncoder()  # the chunks of the state replaced are of no use
        check_restorable(self.topics.namespace, state, self.layout, self.state_settings)
        self.applied = {int(k): v for k, v in state["applied"].items()}
        self.eof_seen = {k: set(v) for k, v in state["eof_seen"].items()}
        self.analytics.restore(state["analytics"])


class SnapshotEncoder:
    """Encodes a core's snapshots: JSON, deflated, held ticks reused from the last one.

    Most of a big state is held ticks (with 2 s of lateness at 20k ticks/s, 40,000 of
    them), and most of those were already held at the last snapshot, a few hundred
    milliseconds before. Each symbol's held ticks are encoded and deflated in chunks of
    consecutive ticks, and a chunk whose ticks are all still held, side by side, is taken
    as it was last time, already deflated: finding it is a bisection and a list
    comparison, both in C. Only the ticks around a change are encoded again (the new ones
    at the end, the survivors of a chunk partly released, a chunk a late tick was inserted
    into), a chunk at a time in one orjson call.

    The blob is one raw deflate stream (``PIECES``) made of pieces deflated apart, each
    ending on a byte boundary (a sync flush): the rest of the state, each chunk, the
    commas between. Deflate allows that: a piece's back-references stay inside it, and
    the decoder reads one stream. So only what changed is deflated again. For 40,000
    held ticks, 8,000 of them new, a snapshot took 18.6 ms when each new tick was
    converted alone, 9.6-10.1 ms with chunks reused but the whole state deflated at once
    (about 5 of them zlib's), and took 4.3-4.6 ms so in chunks of 1,024 ticks (on a
    slower night: 6.0-7.0 ms, and 5.0-5.4 in chunks of 512, which leave fewer ticks of a
    chunk partly changed to encode again). Deflated, the held ticks shrink
    twentyfold (3.7 MB of JSON to 182 kB): every byte of a snapshot is copied
    and checksummed on the event loop when it is sent, then written by the broker, which
    shares the machine.

    The encoding runs in steps (``steps``), a chunk encoded in each, so that the
    processor's event loop can run it between its batches (checkpoints.py): a step takes
    about 0.3 ms (512 ticks at about 0.55 µs each). In a thread it held the batches up
    instead: at 20k ticks/s an encoding took 41-146 ms of wall time, for some 15 ms of
    work, as the two threads took turns at the GIL, and the batches processed meanwhile
    (4% of them) took 11 ms from the tick's append to the signal's send at the median and
    44 ms at p99, against 4.3 and 14.6 ms for the others: most of the 40 slowest. On the
    loop an encoding took 5-38 ms of wall time, with 16-23 batches in some 3,200 run
    meanwhile (README, "Snapshots encoded between batches").

    A chunk's bytes depend only on its ticks, and a chunk is reused only when its ticks
    compare equal: so two encodings at once are safe (whichever memo is kept last is
    right), and so is a memo from before a restore.
    """

    def __init__(self, chunk: int = 512) -> None:
        self._chunk = chunk  # ticks per chunk, and per step: big enough to amortise a call
        self._last: dict[str, list[_Chunk]] = {}  # symbol -> its chunks in the last snapshot

    def encode(self, state: dict[str, Any]) -> bytes:
        return finish(self.steps(state))

    def steps(self, state: dict[str, Any]) -> Encoding[bytes]:
        """The encoding of ``state``, a chunk of new held ticks per step; the blob is the
        generator's value. Nothing is done before the first step."""
        last = self._last
        held: list[HeldTicks] = []  # in the order orjson meets them

        def held_json(obj: object) -> orjson.Fragment:
            if not isinstance(obj, HeldTicks):
                raise TypeError(f"{type(obj).__name__} is not part of a snapshot")
            held.append(obj)
            return orjson.Fragment(_NUL)  # orjson never writes a NUL itself: strings escape it

        raw = orjson.dumps(state, held_json, orjson.OPT_NON_STR_KEYS)
        chunked = []
        for obj in held:
            chunked.append((yield from self._chunks(obj.entries, last.get(obj.symbol, ()))))
        self._last = {obj.symbol: chunks for obj, chunks in zip(held, chunked, strict=True)}
        texts = raw.split(_NUL)  # the state around its held ticks
        pieces = [PIECES]
        text = texts[0]
        for chunks, after in zip(chunked, texts[1:], strict=True):
            text += b"["
            for i, (_, piece) in enumerate(chunks):
                if i:
                    text += b","
                pieces.append(_COMMA if text == b"," else _deflated(text))
                pieces.append(piece)
                text = b""
            text += b"]" + after
        pieces.append(_deflated(text, last=True))
        return b"".join(pieces)

    def _chunks(self, entries: Held, previous: Sequence[_Chunk]) -> Encoding[list[_Chunk]]:
        """``entries`` in chunks: the previous ones still intact, new ones for the rest.

        Held ticks are kept in event order, and so are the chunks: a previous chunk can
        only be found at or after the end of the last one found."""
        out: list[_Chunk] = []
        done, end = 0, len(entries)
        for old, piece in previous:
            if done >= end:
                break
            at = bisect_left(entries, old[0][:2], lo=done, key=_ts_arrival)
            if entries[at : at + len(old)] == old:
                yield from self._encode(entries, done, at, out)  # what is new or changed before it
                out.append((old, piece))
                done = at + len(old)
        yield from self._encode(entries, done, end, out)
        return out

    def _encode(self, entries: Held, lo: int, hi: int, out: list[_Chunk]) -> Encoding[None]:
        for i in range(lo, hi, self._chunk):
            part = entries[i : min(i + self._chunk, hi)]
            data = orjson.dumps(held_state(part))
            out.append((part, _deflated(data[1:-1])))  # the chunk's items, without brackets
            yield


Encoding = Generator[None, None, T]
"""A snapshot's encoding in steps: each ``next`` does a bounded piece of the work (a
chunk of held ticks), and the result is the generator's value (``finish``)."""


def finish(steps: Encoding[T]) -> T:
    """Every step of an encoding at once: its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


PIECES = b"TSD1"
"""A snapshot blob that is a raw deflate stream of pieces follows this (SnapshotEncoder);
neither JSON (``{``) nor a zlib stream (whose first byte names deflate) starts so."""


def _deflated(data: bytes, last: bool = False) -> bytes:
    """``data`` as a piece of a raw deflate stream: on its own, ending on a byte boundary
    (or ending the stream)."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflate.compress(data) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


_COMMA = _deflated(b",")
_NUL = b"\x00"  # where held ticks go in the JSON of the rest of the state
_ts_arrival = itemgetter(0, 1)  # a held tick's place: (ts_ms, arrival) is unique
_Chunk = tuple[Held, bytes]
"""Consecutive held ticks, and their items in the snapshot's JSON (comma-separated),
deflated as a piece."""


def decode_state(blob: bytes) -> dict[str, Any]:
    """A snapshot read back: pieces of raw deflate (SnapshotEncoder), or as written before
    them: a zlib stream, or plain JSON before compression."""
    if blob[:1] == b"{":
        raw = blob
    elif blob[: len(PIECES)] == PIECES:
        raw = zlib.decompress(blob[len(PIECES) :], -zlib.MAX_WBITS)
    else:
        raw = zlib.decompress(blob)
    return orjson.loads(raw)  # type: ignore[no-any-return]


def _observe_signal_latency(events: list[SignalEvent]) -> None:
    """A signal's latency from the producer's receipt of the tick that *caused* it (not the
    tick that released it at the watermark), by status; and its event-time lag."""
    now_ms = time.time_ns() // 1_000_000
    for event in events:
        if event.recv_ms is not None:
            stage = f"signal_{event.status}"
            metrics.E2E_LATENCY.labels(stage).observe(max(0, now_ms - event.recv_ms) / 1000)
        metrics.EVENT_LAG.labels("signal").observe(max(0, now_ms - event.ts_ms) / 1000)
