"""The tick codec of the ticks topic and the output-row contracts."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickstream.contracts import (
    ROW_SPECS,
    ROW_TYPES,
    TICK_FIELDS,
    Bar,
    DivergenceWindow,
    RecordBreak,
    decode_ticks_message,
    encode_end_of_input,
    encode_ticks,
    row_from_doc,
)
from tickstream.contracts.rows import key_members
from tickstream.model import Tick

symbols = st.from_regex(r"[A-Z][A-Z0-9._:-]{0,7}", fullmatch=True)
prices = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
optional_price = st.none() | prices
ticks = st.builds(
    Tick,
    symbol=symbols,
    ts_ms=st.integers(0, 10_000_000_000_000),
    price=prices,
    bid=optional_price,
    ask=optional_price,
    size=st.none() | st.floats(0, 1e9),
    venue=st.none() | st.from_regex(r"[ -~]{0,20}", fullmatch=True),
    seq=st.none() | st.integers(-(2**63), 2**63 - 1),
    recv_ms=st.none() | st.integers(0, 10_000_000_000_000),
)


@given(st.lists(ticks, max_size=20))
def test_a_batch_round_trips(batch: list[Tick]) -> None:
    decoded = decode_ticks_message(encode_ticks(batch))
    assert decoded.bad == [] and decoded.control is None
    assert decoded.ticks == batch


@given(ticks)
def test_a_single_json_tick_per_message_is_a_tick(tick: Tick) -> None:
    """Another producer's usual shape: one JSON object per message, named fields."""
    doc = {f: getattr(tick, f) for f in TICK_FIELDS}
    assert decode_ticks_message(orjson.dumps(doc)).ticks == [tick]


def test_single_tick_with_iso_time_and_integer_price() -> None:
    value = b'{"symbol": "XAG", "ts": "2026-01-26T01:00:00.250+00:00", "price": 107}'
    (tick,) = decode_ticks_message(value).ticks
    assert tick == Tick("XAG", 1_769_389_200_250, 107.0)
    assert type(tick.price) is float


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (b"{not json", "undecodable", "not JSON"),
        (b'"text"', "bad_shape", "neither a tick"),
        (b"[1]", "bad_shape", "tick rows"),
        (b'[["XAU", 1, null]]', "bad_value", "price"),
        (b'[["XAU", 1, "5000"]]', "bad_value", "price"),
        (b'[["XAU", 1, -5.0]]', "bad_value", "price"),
        (b'[["XAU", 1, 1e300]]', "bad_value", "price"),
        (b'[["XAU", "1", 5.0]]', "bad_value", "ts_ms"),
        (b'[["XAU", true, 5.0]]', "bad_value", "ts_ms"),
        (b'[["XAU", 99999999999999999, 5.0]]', "bad_value", "ts_ms"),
        (b'[["X\\u0000U", 1, 5.0]]', "bad_value", "symbol"),
        (b'[["' + b"X" * 10_000 + b'", 1, 5.0]]', "bad_value", "symbol"),
        (b'[["XAU/XAG", 1, 5.0]]', "bad_value", "symbol"),
        (b'[["XAU", 1, 5.0, null, null, null, null, 9223372036854775808]]', "bad_value", "seq"),
        (b'[["XAU", 1, 5.0, null, null, null, "v\\n"]]', "bad_value", "venue"),
        (b'[["XAU", 1, 5.0, null, null, null, null, null, null, 1]]', "bad_shape", "3 to 9"),
        (b'{"symbol": "XAU", "ts_ms": 1, "price": 5.0, "colour": 1}', "bad_value", "unknown"),
        (b'{"symbol": "XAU", "ts": "yesterday", "price": 5.0}', "bad_value", "ISO-8601"),
        (b'{"control": "pause"}', "bad_shape", "unknown control"),
        (b'{"control": "eof", "run_id": "r", "partition": 3, "partitions": 3}', "bad_shape", ""),
    ],
)
def test_bad_input_is_refused_with_its_reason(value: bytes, reason: str, detail: str) -> None:
    decoded = decode_ticks_message(value)
    assert decoded.ticks == [] and decoded.control is None
    (bad,) = decoded.bad
    assert bad.reason == reason
    assert detail in bad.detail
    assert len(bad.excerpt) <= 513  # bounded, whatever the input's size
    assert bad.symbol is None or bad.symbol.isprintable()


def test_good_ticks_of_a_batch_survive_its_bad_ones() -> None:
    value = b'[["XAU", 1, 5.0], ["XAU", 2, null], ["XAU", 3, 6.0]]'
    decoded = decode_ticks_message(value)
    assert [t.ts_ms for t in decoded.ticks] == [1, 3]
    assert [b.reason for b in decoded.bad] == ["bad_value"]


def test_end_of_input_marker() -> None:
    decoded = decode_ticks_message(encode_end_of_input("run", 1, 3))
    assert decoded.ticks == [] and decoded.bad == []
    assert decoded.control is not None
    assert (decoded.control.run_id, decoded.control.partition) == ("run", 1)


def test_rows_travel_with_their_kind_and_come_back_typed() -> None:
    rows = [
        Bar("XAU", 60_000, 1.0, 2.0, 0.5, 1.5, 3),
        RecordBreak("XAU+XAG", "sync_ath", 5, 5000.0, 0.0, 0.0, 1, 0.004, 0),
        DivergenceWindow("XAU/XAG", "ratio", 1, 0, None, 80.0, 90.0, 5, None, 2.5, 3.1),
    ]
    for row in rows:
        doc = orjson.loads(row.encode())
        assert doc["kind"] == row.SPEC.kind
        assert row_from_doc(doc) == row
        assert len(row.SPEC.values(doc)) == len(row.SPEC.columns)
    assert rows[1].symbols == ("XAU", "XAG") and rows[2].symbols == ("XAU", "XAG")
    assert key_members("XAU") == ("XAU",)


def test_every_row_kind_has_one_spec_table_feed_and_frame() -> None:
    assert len({s.kind for s in ROW_SPECS}) == len(ROW_SPECS) == len(ROW_TYPES)
    assert len({s.table for s in ROW_SPECS}) == len(ROW_SPECS)
    assert len({s.feed for s in ROW_SPECS}) == len({s.frame for s in ROW_SPECS}) == len(ROW_SPECS)
    for spec in ROW_SPECS:
        assert set(spec.identity) <= set(spec.fields) and spec.key in spec.fields
        assert spec.topic in ("aggregates", "signals")


def test_divergence_version_ranks_the_closed_row_above_the_open_one() -> None:
    spec = DivergenceWindow.SPEC
    opened = DivergenceWindow("XAU/XAG", "ratio", 1, 0, None, 80.0, 90.0, 5, None, 2.5, 3.1)
    closed = DivergenceWindow("XAU/XAG", "ratio", 1, 0, 9, 80.0, 90.0, 5, 81.0, 2.5, 3.1)
    version = spec.columns.index("version")
    assert spec.values(closed.to_doc())[version] > spec.values(opened.to_doc())[version]
    assert not math.isnan(spec.values(opened.to_doc())[version])
