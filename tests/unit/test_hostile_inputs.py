"""Hostile and clumsy inputs: each becomes a rejection with its reason, and the replay goes on.

Every case below once crashed the replay, or was accepted and then stalled the sink
(a seq past 64 bits) or made a dead-letter record larger than the broker takes.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.records import RawTick, Rejection
from producers.replay import ReplayConfig, read_file
from producers.validation import ValidationConfig, Validator
from tickstream.contracts import decode_ticks_message, encode_tick_rows
from tickstream.contracts.ticks import row_problem

T0 = 1_769_385_600_000
GOOD = f"{T0},XAU,5000.0,,"  # columns: ts,symbol,price,venue,seq

HOSTILE = {
    "5,000-digit ts": ("1" * 5_000 + ",XAU,5000.0,,", "malformed"),
    "ts past 2299": ("99999999999999,XAU,5000.0,,", "malformed"),
    "seq of 2^64": (f"{T0 + 1},XAU,5000.0,,18446744073709551616", "malformed"),
    "seq of 5,000 digits": (f"{T0 + 2},XAU,5000.0,," + "9" * 5_000, "malformed"),
    "field over csv's limit": (f'{T0 + 3},XAU,5000.0,"{"v" * 200_000}",1', "malformed"),
    "3 MB line": (f"{T0 + 4},XAU," + "5" * 3_000_000 + ",,", "malformed"),
    "control character in symbol": (f"{T0 + 5},X\x01AU,5000.0,,", "malformed"),
    "10,000-character symbol": (f"{T0 + 6},{'X' * 10_000},5000.0,,", "malformed"),
    "separator in symbol": (f"{T0 + 7},XAU/XAG,5000.0,,", "malformed"),
    "price of 1e300": (f"{T0 + 8},XAU,1e300,,", "invalid_price"),
    "control character in venue": (f'{T0 + 9},XAU,5000.0,"a\x07b",1', "malformed"),
}


def replay(tmp_path: Path, lines: list[str]) -> tuple[list[tuple], list[Rejection]]:
    path = tmp_path / "hostile.csv"
    path.write_text("ts,symbol,price,venue,seq\n" + "\n".join(lines) + "\n")
    validator = Validator(ValidationConfig(), now_ms=lambda: T0 + 10**9)
    accepted: list[tuple] = []
    rejected: list[Rejection] = []
    for raw in read_file(ReplayConfig(path)):
        verdicts = validator.feed(raw)
        accepted += [(t.symbol, t.ts_ms, t.price) for t in verdicts.accepted]
        rejected += verdicts.rejected
    verdicts = validator.finish()
    accepted += [(t.symbol, t.ts_ms, t.price) for t in verdicts.accepted]
    return accepted, rejected


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_each_hostile_line_is_rejected_and_the_replay_goes_on(tmp_path: Path, case: str) -> None:
    line, reason = HOSTILE[case]
    accepted, rejected = replay(tmp_path, [GOOD, line, f"{T0 + 100},XAU,5001.0,,"])
    assert accepted == [("XAU", T0, 5000.0), ("XAU", T0 + 100, 5001.0)]
    (rejection,) = rejected
    assert (rejection.position, rejection.reason) == ("line 3", reason), rejection.detail
    record = rejection.encode()
    assert len(record) < 16_384  # a bounded excerpt, whatever the input's size
    if len(line) > 4_096:
        assert f"input of {len(line)} characters" in orjson.loads(record)["detail"]


def test_every_accepted_row_passes_the_tick_contract(tmp_path: Path) -> None:
    """What the publisher accepts, the processor accepts: one rule set for both."""
    validator = Validator(ValidationConfig(), now_ms=lambda: T0 + 10**9)
    rows = []
    for n, (line, _reason) in enumerate([(GOOD, ""), *HOSTILE.values()]):
        ts, symbol, price, *_rest = line.split(",")
        fields = {"ts": ts, "symbol": symbol, "price": price}
        raw = RawTick(line[:100], "test", f"n={n}", T0, fields=fields)
        row = validator.feed_row(raw, rows, [])  # the row itself, or held/refused (None)
        if row is not None:
            rows.append(row)
    validator.finish_rows(rows, [])
    decoded = decode_ticks_message(encode_tick_rows(rows))
    assert decoded.bad == []
    assert len(decoded.ticks) == len(rows) >= 1


text = st.text(st.characters(codec="utf-8"), max_size=30)
number_text = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    text,
)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "ts": st.one_of(st.integers(T0 - 10**6, T0 + 10**6).map(str), number_text),
                "symbol": st.one_of(st.sampled_from(["XAU", "XAG"]), text),
                "price": st.one_of(st.floats(4000, 6000).map(repr), number_text),
                "venue": st.one_of(st.just(""), text),
                "seq": st.one_of(st.just(""), number_text),
            }
        ),
        max_size=30,
    )
)
@settings(max_examples=150, deadline=None)
def test_whatever_the_validator_accepts_the_processor_accepts(inputs: list[dict]) -> None:
    """A property over any text: the producer's rules are never looser than the contract's."""
    validator = Validator(ValidationConfig(), now_ms=lambda: T0 + 10**9)
    rows: list = []
    for n, fields in enumerate(inputs):
        row = validator.feed_row(RawTick("raw", "test", f"n={n}", T0, fields=fields), rows, [])
        if row is not None:
            rows.append(row)
    validator.finish_rows(rows, [])
    assert [row_problem(list(r)) for r in rows] == [None] * len(rows)
