"""Validation: one test per reason, the spike quarantine, and oracle properties."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.records import RawTick, Verdicts
from producers.validation import (
    CROSSED_QUOTE,
    DUPLICATE,
    FUTURE_TS,
    INVALID_PRICE,
    MALFORMED,
    SPIKE,
    SpikeThresholds,
    ValidationConfig,
    Validator,
)
from tickstream import contracts
from tickstream.model import Tick
from tickstream.timestamps import TimestampError, parse_ts_ms

T0 = 1_769_385_600_000  # 2026-01-26T00:00:00Z
NOW = T0 + 86_400_000


def now() -> int:
    return NOW


def raw(pos: int, fields: dict[str, Any] | None, error: str | None = None) -> RawTick:
    return RawTick(
        raw=repr(fields),
        source="test",
        position=f"n={pos}",
        recv_ms=NOW,
        fields=fields,
        error=error,
    )


def tick_fields(price: float, ts_ms: int, symbol: str = "XAU", seq: int | None = None, **extra):
    fields: dict[str, Any] = {"symbol": symbol, "ts": ts_ms, "price": price}
    if seq is not None:
        fields["seq"] = seq
    fields.update(extra)
    return fields


def run(inputs: list[RawTick], config: ValidationConfig | None = None) -> Verdicts:
    validator = Validator(config or ValidationConfig(), now_ms=now)
    out = validator.feed_many(inputs)
    out.extend(validator.finish())
    assert validator.held_count() == 0
    return out


def one(fields: dict[str, Any] | None, error: str | None = None) -> Verdicts:
    return run([raw(0, fields, error)])


def reason_of(fields: dict[str, Any] | None) -> tuple[str, str]:
    out = one(fields)
    assert not out.accepted, out.accepted
    [rejection] = out.rejected
    return rejection.reason, rejection.detail


# ------------------------------------------------------------------ parsing


def test_accepts_csv_strings_and_keeps_recv_ms() -> None:
    fields = {
        "symbol": " XAU ",
        "ts": "2026-01-26T00:00:00.250Z",
        "price": "5000.5",
        "bid": "5000.25",
        "ask": "5000.75",
        "size": "",
        "venue": "",
        "seq": "17",
    }
    [tick] = one(fields).accepted
    assert (tick.symbol, tick.ts_ms, tick.price, tick.bid, tick.ask) == (
        "XAU",
        T0 + 250,
        5000.5,
        5000.25,
        5000.75,
    )
    assert (tick.size, tick.venue, tick.seq, tick.recv_ms) == (None, None, 17, NOW)


def test_accepts_json_types() -> None:
    fields = tick_fields(107.25, T0, "XAG", seq=3, bid=107, ask=107.5, size=2, venue="LBMA")
    [tick] = one(fields).accepted
    assert tick == tick.__class__("XAG", T0, 107.25, 107.0, 107.5, 2.0, "LBMA", 3, NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-26T00:00:00Z", T0),
        ("2026-01-26T00:00:00", T0),
        ("2026-01-26 00:00:00.001", T0 + 1),
        ("2026-01-26T01:00:00+01:00", T0),
        ("2026-01-25T19:00:00.5-05:00", T0 + 500),
        (str(T0), T0),
        (T0, T0),
        (float(T0), T0),
    ],
)
def test_ts_formats(text: Any, expected: int) -> None:
    assert parse_ts_ms(text) == expected


@pytest.mark.parametrize("value", ["not a time", "", "\u0661" * 13, True, 1.5, None, [T0]])
def test_bad_ts_is_a_timestamp_error_and_malformed(value: Any) -> None:
    """The shared reader raises its own ValueError; validation reports it as malformed."""
    with pytest.raises(TimestampError, match="neither ISO-8601 nor epoch milliseconds") as bad:
        parse_ts_ms(value)
    assert isinstance(bad.value, ValueError)
    if value is not None and value != "":  # absent: the required-field check comes first
        reason, detail = reason_of(tick_fields(100.0, value))
        assert reason == MALFORMED and detail.startswith(f"ts {value!r} is neither")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"ts": T0, "price": 1.0}, "symbol"),
        ({"symbol": "", "ts": T0, "price": 1.0}, "symbol"),
        ({"symbol": "XAU", "price": 1.0}, "ts"),
        ({"symbol": "XAU", "ts": T0}, "price"),
        ({"symbol": "XAU", "ts": T0, "price": ""}, "price"),
        ({"symbol": 5, "ts": T0, "price": 1.0}, "symbol"),
        ({"symbol": "XAU", "ts": "yesterday", "price": 1.0}, "yesterday"),
        ({"symbol": "XAU", "ts": 1.5e12 + 0.5, "price": 1.0}, "ts"),
        ({"symbol": "XAU", "ts": True, "price": 1.0}, "ts"),
        ({"symbol": "XAU", "ts": T0 // 1000, "price": 1.0}, "epoch seconds"),
        ({"symbol": "XAU", "ts": T0, "price": "abc"}, "abc"),
        ({"symbol": "XAU", "ts": T0, "price": [1.0]}, "price"),
        ({"symbol": "XAU", "ts": T0, "price": 1.0, "bid": "x"}, "bid"),
        ({"symbol": "XAU", "ts": T0, "price": 1.0, "seq": "1.5"}, "seq"),
        ({"symbol": "XAU", "ts": T0, "price": 1.0, "seq": "--5"}, "seq"),
        ({"symbol": "XAU", "ts": T0, "price": 1.0, "venue": 7}, "venue"),
    ],
)
def test_malformed_names_field(fields: dict[str, Any], field: str) -> None:
    reason, detail = reason_of(fields)
    assert reason == MALFORMED
    assert field in detail


def test_malformed_without_fields_keeps_source_error_and_position() -> None:
    out = run([raw(0, tick_fields(1.0, T0)), raw(1, None, error="3 columns, expected 8")])
    [rejection] = out.rejected
    assert (rejection.reason, rejection.detail) == (MALFORMED, "3 columns, expected 8")
    assert (rejection.position, rejection.source, rejection.recv_ms) == ("n=1", "test", NOW)
    assert rejection.raw == "None" and rejection.symbol is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"price": 0}, "price"),
        ({"price": -5.0}, "price"),
        ({"price": "nan"}, "price"),
        ({"price": math.inf}, "price"),
        ({"price": 10**400}, "price"),
        ({"bid": 0.0}, "bid"),
        ({"ask": "-1"}, "ask"),
        ({"size": -1}, "size"),
        ({"size": "inf"}, "size"),
    ],
)
def test_invalid_price(extra: dict[str, Any], field: str) -> None:
    reason, detail = reason_of({**tick_fields(100.0, T0), **extra})
    assert reason == INVALID_PRICE
    assert detail.startswith(field)


def test_zero_size_and_locked_quote_pass() -> None:
    assert one(tick_fields(100.0, T0, size=0, bid=100.0, ask=100.0)).accepted


def test_crossed_quote() -> None:
    reason, detail = reason_of(tick_fields(100.0, T0, bid=100.5, ask=100.25))
    assert reason == CROSSED_QUOTE
    assert "100.5" in detail and "100.25" in detail


def test_future_ts_uses_injected_clock() -> None:
    limit = ValidationConfig().max_future_ms
    assert one(tick_fields(100.0, NOW + limit)).accepted
    reason, detail = reason_of(tick_fields(100.0, NOW + limit + 1))
    assert reason == FUTURE_TS
    assert str(NOW + limit + 1) in detail


def test_rejection_carries_symbol_when_known() -> None:
    [rejection] = one(tick_fields(-1.0, T0, symbol=" XAG")).rejected
    assert rejection.symbol == "XAG"


# ------------------------------------------------------------------ duplicates


def test_duplicate_exact_identity() -> None:
    base = tick_fields(100.0, T0, seq=1, size=2.0)
    inputs = [
        raw(0, base),
        raw(1, dict(base)),  # exact repeat
        raw(2, {**base, "seq": 2}),  # another seq: a different tick
        raw(3, {**base, "size": 3.0}),  # another size: a different tick
        raw(4, {**base, "venue": "X", "bid": 99.0}),  # not part of the identity
    ]
    out = run(inputs)
    assert [r.position for r in out.rejected] == ["n=1", "n=4"]
    assert {r.reason for r in out.rejected} == {DUPLICATE}
    assert len(out.accepted) == 3


def test_duplicate_memory_is_bounded_by_event_time_horizon() -> None:
    config = ValidationConfig(duplicate_horizon_ms=1_000)
    validator = Validator(config, now_ms=now)
    for i in range(5_000):
        out = validator.feed(raw(i, tick_fields(100.0, T0 + i * 10, seq=i)))
        assert len(out.accepted) == 1
        assert validator.remembered_count() <= 1_000 // 10 + 1
    # beyond the horizon an old repeat is no longer recognised (documented trade-off)
    assert validator.feed(raw(-1, tick_fields(100.0, T0, seq=0))).accepted
    # within it, it is
    late = tick_fields(100.0, T0 + 4_999 * 10 - 500, seq=4_949)
    assert validator.feed(raw(-2, late)).rejected[0].reason == DUPLICATE


# ------------------------------------------------------------------ spikes


def steady(n: int, start: int = 0, price: float = 100.0, symbol: str = "XAU") -> list[RawTick]:
    """A calm series: +0.01 per tick, one tick a second."""
    return [
        raw(
            start + i,
            tick_fields(price + 0.01 * i, T0 + (start + i) * 1_000, symbol, seq=start + i),
        )
        for i in range(n)
    ]


def test_ten_x_spike_in_steady_series_is_rejected() -> None:
    inputs = steady(20)
    spike = raw(100, tick_fields(1000.0, T0 + 10_500, seq=100))
    inputs.insert(11, spike)
    out = run(inputs)
    assert [(r.position, r.reason) for r in out.rejected] == [("n=100", SPIKE)]
    assert "1000.0" in out.rejected[0].detail
    assert [t.seq for t in out.accepted] == list(range(20))


def test_genuine_step_move_is_accepted_after_confirmation() -> None:
    validator = Validator(ValidationConfig(), now_ms=now)
    before = validator.feed_many(steady(5))
    assert len(before.accepted) == 5
    step = [
        raw(10 + i, tick_fields(108.0 + 0.01 * i, T0 + 10_000 + i, seq=10 + i)) for i in range(6)
    ]
    held = validator.feed_many(step[:3])
    assert held.accepted == [] and held.rejected == [] and validator.held_count() == 3
    confirmed = validator.feed(step[3])  # third confirmation after the suspect
    assert [t.seq for t in confirmed.accepted] == [10, 11, 12, 13]
    rest = validator.feed_many(step[4:])
    assert [t.seq for t in rest.accepted] == [14, 15]
    assert validator.held_count() == 0


def test_spike_at_end_of_input_is_rejected_by_finish() -> None:
    validator = Validator(ValidationConfig(), now_ms=now)
    validator.feed_many(steady(3))
    assert not validator.feed(raw(9, tick_fields(150.0, T0 + 5_000, seq=9))).rejected
    assert validator.held_count() == 1
    end = validator.finish()
    [rejection] = end.rejected
    assert (rejection.position, rejection.reason) == ("n=9", SPIKE)
    assert "end of input" in rejection.detail and "150.0" in rejection.detail
    assert end.accepted == [] and validator.held_count() == 0


def test_finish_rejects_each_unconfirmed_suspect_in_turn() -> None:
    validator = Validator(ValidationConfig(), now_ms=now)
    validator.feed_many(steady(2))
    validator.feed(raw(5, tick_fields(150.0, T0 + 5_000, seq=5)))
    validator.feed(raw(6, tick_fields(151.0, T0 + 6_000, seq=6)))
    validator.feed(raw(7, tick_fields(150.5, T0 + 7_000, seq=7)))  # two confirmations of 3
    end = validator.finish()
    # 5 goes; 6 and 7, re-evaluated against 100, are suspects in turn and go too
    assert [(r.position, r.reason) for r in end.rejected] == [
        ("n=5", SPIKE),
        ("n=6", SPIKE),
        ("n=7", SPIKE),
    ]
    assert end.accepted == []


def test_held_ticks_are_reevaluated_after_a_rejected_spike() -> None:
    inputs = steady(3)
    inputs += [
        raw(10, tick_fields(1000.0, T0 + 3_000, seq=10)),  # spike up: suspect
        raw(11, tick_fields(10.0, T0 + 3_100, seq=11)),  # far from both: 10 rejected, 11 suspect
        raw(12, tick_fields(100.05, T0 + 3_200, seq=12)),  # back near: 11 rejected, 12 accepted
        raw(13, tick_fields(100.06, T0 + 3_300, seq=13)),
    ]
    out = run(inputs)
    assert [(r.position, r.reason) for r in out.rejected] == [("n=10", SPIKE), ("n=11", SPIKE)]
    assert [t.seq for t in out.accepted] == [0, 1, 2, 12, 13]


def test_far_threshold_applies_after_a_long_gap() -> None:
    inputs = steady(2)
    inputs.append(raw(5, tick_fields(110.0, T0 + 10 * 60_000, seq=5)))  # +10% after 10 minutes
    inputs.append(raw(6, tick_fields(125.0, T0 + 10 * 60_000 + 1, seq=6)))  # +13.6% at once
    out = run(inputs)
    assert [t.seq for t in out.accepted] == [0, 1, 5]
    assert [(r.position, r.reason) for r in out.rejected] == [("n=6", SPIKE)]


def test_per_symbol_override_and_seeded_reference() -> None:
    config = ValidationConfig(
        spike_overrides={"BTC": SpikeThresholds(near_pct=30.0, far_pct=50.0, near_ms=1_000)},
        reference_prices={"XAU": 5000.0},
    )
    inputs = [
        raw(0, tick_fields(100.0, T0, "BTC")),
        raw(1, tick_fields(120.0, T0 + 1, "BTC")),  # +20%: fine for BTC
        raw(2, tick_fields(500.0, T0 + 2, "XAU")),  # first XAU tick, 10x below the seeded close
        raw(3, tick_fields(5010.0, T0 + 3, "XAU")),
    ]
    out = run(inputs, config)
    assert [t.price for t in out.accepted] == [100.0, 120.0, 5010.0]
    assert [(r.position, r.reason) for r in out.rejected] == [("n=2", SPIKE)]


def test_first_tick_of_a_symbol_is_accepted_without_reference() -> None:
    out = run([raw(0, tick_fields(1e6, T0, "NEW"))])
    assert len(out.accepted) == 1


def test_spike_filter_can_be_disabled() -> None:
    inputs = steady(3) + [raw(9, tick_fields(1000.0, T0 + 9_000, seq=9))]
    assert len(run(inputs, ValidationConfig(spike_filter=False)).accepted) == 4


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        ValidationConfig(confirm_ticks=0)
    with pytest.raises(ValueError):
        ValidationConfig(spike_near_pct=30.0, spike_far_pct=20.0)
    with pytest.raises(ValueError):
        ValidationConfig(reference_prices={"XAU": 0.0})


# ------------------------------------------------------------------ properties

SYMBOLS = ("XAU", "XAG", "EUR")
BASES = {"XAU": 5000.0, "XAG": 107.0, "EUR": 1.08}
KINDS = ("valid", "valid", "valid", "malformed", "invalid", "dup", "crossed", "spike", "burst")
MALFORMED_FIELDS: list[dict[str, Any] | None] = [
    None,
    {"ts": T0, "price": 1.0},
    {"symbol": "XAU", "ts": "not a time", "price": 1.0},
    {"symbol": "XAU", "ts": T0, "price": "one"},
    {"symbol": "XAU", "ts": T0, "price": 1.0, "seq": "x"},
]
INVALID_EXTRA = [{"price": 0.0}, {"price": "nan"}, {"bid": -1.0}, {"size": -2.0}]


def build_stream(ops: list[tuple[str, int, int, int, float]]) -> tuple[list[RawTick], list[str]]:
    """A random mix and, for each input, the reason expected (or 'accept')."""
    inputs: list[RawTick] = []
    expected: list[str] = []
    walk = {s: BASES[s] for s in SYMBOLS}
    clock = {s: T0 for s in SYMBOLS}
    spike_run = dict.fromkeys(SYMBOLS, 0)
    started: set[str] = set()
    tickable: list[dict[str, Any]] = []  # inputs that reached the duplicate check
    expanded = []
    for kind, sym_i, step_ms, pick, move in ops:  # a burst: up to 3 spikes in a row, one way
        burst = kind == "burst"
        for _ in range(1 + pick % 3 if burst else 1):
            expanded.append(("spike" if burst else kind, sym_i, step_ms, pick, move))
    for pos, (kind, sym_i, step_ms, pick, move) in enumerate(expanded):
        symbol = SYMBOLS[sym_i]
        clock[symbol] += step_ms
        walk[symbol] *= 1.0 + move
        if kind == "dup" and not tickable:
            kind = "valid"
        if kind == "spike" and (symbol not in started or spike_run[symbol] >= 3):
            kind = "valid"
        fields: dict[str, Any] | None
        if kind == "malformed":
            fields, want = MALFORMED_FIELDS[pick % len(MALFORMED_FIELDS)], MALFORMED
        elif kind == "invalid":
            extra = INVALID_EXTRA[pick % len(INVALID_EXTRA)]
            fields, want = (
                {**tick_fields(walk[symbol], clock[symbol], symbol, pos), **extra},
                (INVALID_PRICE),
            )
        elif kind == "crossed":
            price = walk[symbol]
            fields = tick_fields(price, clock[symbol], symbol, pos, bid=price * 1.01, ask=price)
            want = CROSSED_QUOTE
        elif kind == "dup":
            fields, want = dict(tickable[pick % len(tickable)]), DUPLICATE
        elif kind == "spike":
            factor = 10.0 if pick % 2 else 0.1
            fields = tick_fields(walk[symbol] * factor, clock[symbol], symbol, pos)
            want = SPIKE
            spike_run[symbol] += 1
        else:
            fields, want = tick_fields(walk[symbol], clock[symbol], symbol, pos, size=1.0), "accept"
            spike_run[symbol] = 0
            started.add(symbol)
        if kind in ("valid", "spike"):
            tickable.append(fields)
        inputs.append(raw(pos, fields))
        expected.append(want)
    return inputs, expected


op = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, len(SYMBOLS) - 1),
    st.integers(1, 1_000),
    st.integers(0, 1_000),
    st.floats(-0.002, 0.002),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=80))
def test_every_input_lands_once_with_the_expected_reason(ops) -> None:
    inputs, expected = build_stream(ops)
    out = run(inputs)
    by_seq = {}
    for r in inputs:
        if r.fields is not None and "seq" in r.fields:
            by_seq.setdefault(r.fields["seq"], r.position)
    accepted_positions = [by_seq[t.seq] for t in out.accepted]
    rejected_positions = [r.position for r in out.rejected]
    # exactly once
    assert sorted(accepted_positions + rejected_positions) == sorted(r.position for r in inputs)
    # with the reason the generator intended
    want = {r.position: e for r, e in zip(inputs, expected, strict=True)}
    assert {p: "accept" for p in accepted_positions} == {
        p: e for p, e in want.items() if e == "accept"
    }
    assert {r.position: r.reason for r in out.rejected} == {
        p: e for p, e in want.items() if e != "accept"
    }
    # per-symbol input order, and no accepted tick is a 10x spike against its neighbour
    for symbol in SYMBOLS:
        mine = [t for t in out.accepted if t.symbol == symbol]
        assert [t.seq for t in mine] == sorted(t.seq for t in mine)
        for a, b in zip(mine, mine[1:], strict=False):
            assert 0.5 < b.price / a.price < 2.0


dup_op = st.tuples(st.integers(0, 1), st.integers(-2_000, 2_000), st.integers(0, 3), st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.lists(dup_op, max_size=120), st.sampled_from([10**9, 3_000]), st.sampled_from([2_000, 2]))
def test_duplicates_match_a_brute_force_set(ops, horizon_ms: int, spread_ms: int) -> None:
    """With the whole history inside the horizon a plain set is the oracle; beyond it the
    validator may only forget (never invent) duplicates, and remembers only the horizon.
    A narrow spread puts many ticks on one event time (a feed stamped coarsely)."""
    config = ValidationConfig(duplicate_horizon_ms=horizon_ms, spike_filter=False)
    validator = Validator(config, now_ms=now)
    seen: set[tuple[object, ...]] = set()
    history: dict[str, list[int]] = {"A": [], "B": []}  # per symbol: the horizon is per symbol
    for pos, (sym_i, jitter, price_i, with_seq) in enumerate(ops):
        ts_ms = T0 + jitter % (2 * spread_ms + 1) - spread_ms
        fields = tick_fields(
            100.0 + price_i, ts_ms, ("A", "B")[sym_i], seq=price_i if with_seq else None
        )
        identity = (fields["symbol"], fields["ts"], fields["price"], None, fields.get("seq"))
        out = validator.feed(raw(pos, fields))
        is_dup = bool(out.rejected)
        if horizon_ms >= 4_000:
            assert is_dup == (identity in seen)
        else:
            assert not is_dup or identity in seen
        if not is_dup:
            history[fields["symbol"]].append(fields["ts"])
        seen.add(identity)
        bound = sum(
            sum(ts >= max(stamps) - horizon_ms for ts in stamps)
            for stamps in history.values()
            if stamps
        )
        assert validator.remembered_count() <= bound


# ------------------------------------------------------------------ the hot path


def test_text_values_decide_as_their_stripped_text() -> None:
    """Plain text takes a fast path; odd text must still decide as the checks in order do."""
    base = {"symbol": "XAU", "ts": str(T0), "price": "5000.5"}
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"price": " 5000.5 "}, 5000.5),
        ({"price": "\x1c5000.5"}, 5000.5),  # float() alone refuses this, str.strip() removes it
        ({"price": "5_000.5"}, 5000.5),
        ({"ts": f" {T0} "}, 5000.5),
        ({"ts": "2026-01-26T00:00:00Z"}, 5000.5),
        ({"seq": " 17 "}, 5000.5),
        ({"seq": "-5"}, 5000.5),
        ({"bid": "", "ask": " ", "size": "", "venue": " "}, 5000.5),
        ({"price": "1e400"}, INVALID_PRICE),
        ({"price": "nan"}, INVALID_PRICE),
        ({"seq": "\u0663"}, MALFORMED),  # a digit, but not [0-9]
        ({"ts": "\u0661" * 13}, MALFORMED),
        ({"bid": "5001", "ask": "5000"}, CROSSED_QUOTE),
    ]
    for extra, want in cases:
        out = one({**base, **extra})
        if isinstance(want, float):
            [tick] = out.accepted
            assert tick.price == want and tick.ts_ms == T0, extra
        else:
            [rejection] = out.rejected
            assert rejection.reason == want, extra
    [tick] = one({**base, "seq": " 17 ", "venue": " LBMA "}).accepted
    assert (tick.seq, tick.venue, tick.bid, tick.size) == (17, "LBMA", None, None)
    [tick] = one({**base, "seq": "-5", "bid": 5000, "ask": 5001}).accepted
    assert (tick.seq, tick.bid, tick.ask) == (-5, 5000.0, 5001.0)
    assert type(tick.bid) is float and type(tick.ask) is float


def test_same_time_different_ticks_and_their_duplicates() -> None:
    """Several distinct ticks may share an event time; each is remembered on its own."""
    config = ValidationConfig(duplicate_horizon_ms=1_000, spike_filter=False)
    validator = Validator(config, now_ms=now)
    same_ts = [tick_fields(100.0, T0, seq=1), tick_fields(100.0, T0, seq=2), tick_fields(100.5, T0)]
    for i, fields in enumerate(same_ts):
        assert validator.feed(raw(i, fields)).accepted
    assert validator.remembered_count() == 3
    for i, fields in enumerate(same_ts):
        [rejection] = validator.feed(raw(10 + i, dict(fields))).rejected
        assert rejection.reason == DUPLICATE and repr(T0) in rejection.detail
    assert validator.feed(raw(20, tick_fields(100.0, T0 + 1_000, seq=1))).accepted
    assert validator.remembered_count() == 4  # T0 is still within the horizon of T0 + 1000
    assert validator.feed(raw(21, tick_fields(100.0, T0 + 1_001, seq=1))).accepted
    assert validator.remembered_count() == 2  # T0 forgotten
    # beyond the horizon: accepted again, and forgotten at once
    assert validator.feed(raw(22, tick_fields(100.0, T0, seq=1))).accepted
    assert validator.remembered_count() == 2
    # late but within the horizon: remembered
    assert validator.feed(raw(23, tick_fields(100.0, T0 + 500, seq=1))).accepted
    assert validator.feed(raw(24, tick_fields(100.0, T0 + 500, seq=1))).rejected
    assert validator.remembered_count() == 3


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=80))
def test_feed_row_decides_as_feed(ops) -> None:
    """The publisher's hot path (rows, no per-input containers) decides exactly as feed()."""
    inputs, _ = build_stream(ops)
    by_feed = Validator(ValidationConfig(), now_ms=now)
    by_row = Validator(ValidationConfig(), now_ms=now)
    for r in inputs:
        want = by_feed.feed(r)
        accepted: list[tuple[Any, ...]] = []
        rejected: list[Any] = []
        row = by_row.feed_row(r, accepted, rejected)
        if row is not None:
            assert accepted == [] and rejected == []
            accepted.append(row)
        assert [Tick(*a) for a in accepted] == want.accepted
        assert rejected == want.rejected
        assert by_row.held_count() == by_feed.held_count()
    want = by_feed.finish()
    accepted, rejected = [], []
    by_row.finish_rows(accepted, rejected)
    assert ([Tick(*a) for a in accepted], rejected) == (want.accepted, want.rejected)


def test_rows_are_the_wire_rows() -> None:
    """The publisher packs rows as they are: the bytes contracts.encode_ticks makes of the Ticks."""
    inputs = steady(5) + [raw(9, tick_fields(100.1, T0 + 9_000, "XAG", 9, bid=100, venue=" V "))]
    validator = Validator(ValidationConfig(), now_ms=now)
    rows: list[tuple[Any, ...]] = []
    for r in inputs:
        row = validator.feed_row(r, rows, [])
        if row is not None:
            rows.append(row)
    assert len(rows) == 6
    ticks = [Tick(*r) for r in rows]
    assert [tuple(getattr(t, f) for f in contracts.TICK_FIELDS) for t in ticks] == rows
    assert orjson.dumps(rows) == contracts.encode_ticks(ticks)
