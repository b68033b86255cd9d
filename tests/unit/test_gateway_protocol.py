"""The gateway's pure parts: message validation, matching, access, conflation, state, replay log."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from sinks.gateway.access import Access, TokenTable
from sinks.gateway.conflation import Conflator, SeqSet
from sinks.gateway.protocol import (
    EVENT_FIELDS,
    EVENTED_KINDS,
    KINDS,
    MAX_SYMBOLS,
    ROW_KIND_TO_SUB,
    SIGNAL_KINDS,
    SUB_TO_TYPE,
    Delta,
    Heartbeat,
    ProtocolError,
    SnapshotRequest,
    Subscribe,
    Unsubscribe,
    confirmed_frame,
    event_ts,
    parse_message,
    record_kind,
    row_frame,
    signal_identity,
    signal_step,
)
from sinks.gateway.state import BoardState, SignalLog
from sinks.gateway.subscription import Subscription
from tickstream.contracts import RecordBreak, RollingBreak, SignalEvent, signal_id

# ------------------------------------------------------------------ parsing


def test_parse_subscribe_variants() -> None:
    cmd = parse_message(b'{"op":"subscribe","symbols":["XAU","XAG"],"kinds":["ticks"]}')
    assert cmd == Subscribe(frozenset({"XAU", "XAG"}), frozenset({"ticks"}), None)
    cmd = parse_message('{"op":"subscribe","symbols":"*","since_ms":0}')
    assert cmd == Subscribe(None, frozenset(KINDS), 0)
    assert parse_message('{"op":"unsubscribe","symbols":["XAU"]}') == Unsubscribe(
        frozenset({"XAU"}), frozenset(KINDS)
    )
    assert parse_message('{"op":"snapshot"}') == SnapshotRequest()
    assert parse_message('{"op":"snapshot","history":true}') == SnapshotRequest(True)
    cmd = parse_message('{"op":"subscribe","symbols":["XAU"],"history":true}')
    assert isinstance(cmd, Subscribe) and cmd.history
    assert parse_message('{"op":"heartbeat"}') == Heartbeat()


def test_parse_confirmed_only_flag() -> None:
    """Absent keeps the session's setting (None); present, it must be a boolean."""
    plain = parse_message('{"op":"subscribe","symbols":"*"}')
    assert isinstance(plain, Subscribe) and plain.confirmed_only is None
    on = parse_message('{"op":"subscribe","symbols":"*","confirmed_only":true}')
    assert isinstance(on, Subscribe) and on.confirmed_only is True
    off = parse_message('{"op":"subscribe","symbols":"*","confirmed_only":false}')
    assert isinstance(off, Subscribe) and off.confirmed_only is False


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"", "bad_json"),
        (b"[1,2]", "bad_request"),
        (b'"subscribe"', "bad_request"),
        (b"{}", "bad_request"),
        (b'{"op":"explode"}', "unknown_op"),
        (b'{"op":17}', "unknown_op"),
        (b'{"op":"subscribe"}', "bad_request"),
        (b'{"op":"subscribe","symbols":[]}', "bad_request"),
        (b'{"op":"subscribe","symbols":"XAU"}', "bad_request"),
        (b'{"op":"subscribe","symbols":[1]}', "bad_request"),
        (b'{"op":"subscribe","symbols":["*"]}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"kinds":["candles"]}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"kinds":[]}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"since_ms":-1}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"since_ms":"0"}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"since_ms":true}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"history":1}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"confirmed_only":1}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"confirmed_only":"yes"}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"confirmed_only":null}', "bad_request"),
        (b'{"op":"subscribe","symbols":["XAU"],"kinds":["signal_events"]}', "bad_request"),
        (b'{"op":"subscribe","symbols":["' + b"X" * 65 + b'"]}', "bad_request"),
    ],
)
def test_parse_refuses_with_stable_codes(raw: bytes, error: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(raw)
    assert info.value.error == error
    assert info.value.detail


# ------------------------------------------------------------------ matching


def test_subscription_per_kind_and_wildcards() -> None:
    sub = Subscription()
    assert not sub.active() and not sub.wants("ticks", "XAU")
    sub.subscribe(frozenset({"XAU"}), ["ticks"])
    sub.subscribe(None, ["record_breaks"])
    assert sub.wants("ticks", "XAU") and not sub.wants("ticks", "XAG")
    assert not sub.wants("bars", "XAU")
    assert sub.wants("record_breaks", "ANY")
    sub.unsubscribe(frozenset({"ANY"}), ["record_breaks"])  # all but ANY
    assert not sub.wants("record_breaks", "ANY") and sub.wants("record_breaks", "XAG")
    sub.subscribe(frozenset({"ANY"}), ["record_breaks"])
    assert sub.wants("record_breaks", "ANY")
    sub.unsubscribe(None, ["record_breaks"])
    assert not sub.wants("record_breaks", "XAG")
    sub.unsubscribe(frozenset({"XAU"}), ["ticks"])
    assert not sub.active()


def test_pairs_and_groups_match_either_symbol_or_themselves() -> None:
    sub = Subscription()
    sub.subscribe(frozenset({"XAG"}), ["divergence_windows", "record_breaks"])
    assert sub.wants("divergence_windows", "XAU/XAG")
    assert sub.wants("record_breaks", "XAG+XAU")  # sync_ath rows join members with '+'
    assert not sub.wants("divergence_windows", "XPT/XPD")
    only_pair = Subscription()
    only_pair.subscribe(frozenset({"XAU/XAG"}), ["divergence_windows"])
    assert only_pair.wants("divergence_windows", "XAU/XAG")
    assert not only_pair.wants("divergence_windows", "XAU/XPT")


def _names(prefix: str, n: int) -> frozenset[str]:
    return frozenset(f"{prefix}{i}" for i in range(n))


def test_subscription_cap_refuses_whole_and_changes_nothing() -> None:
    """Past the cap a subscribe is refused with too_many_symbols and the old one stays."""
    sub = Subscription(limit=5)
    sub.subscribe(_names("S", 3), ["ticks", "bars"])  # 3 names, however many kinds
    sub.subscribe(frozenset({"XAU/XAG", "S0"}), ["divergence_windows"])  # a pair is one name
    assert sub.size() == 4
    before = sub.describe()
    with pytest.raises(ProtocolError) as info:
        sub.subscribe(frozenset({"A", "B"}), ["ticks"])  # would be 6
    assert info.value.error == "too_many_symbols"
    assert (
        "6" in info.value.detail
        and "5" in info.value.detail
        and "Nothing changed" in info.value.detail
    )
    assert sub.describe() == before and not sub.wants("ticks", "A")
    sub.subscribe(frozenset({"A"}), ["ticks"])  # exactly the cap: fine
    assert sub.size() == 5 and sub.wants("ticks", "A")
    sub.unsubscribe(frozenset({"A", "S1"}), ["ticks", "bars"])  # freeing names frees the cap
    sub.subscribe(frozenset({"B"}), ["record_breaks"])
    assert sub.size() == 4


def test_subscription_cap_counts_exceptions_to_star_and_not_star() -> None:
    sub = Subscription(limit=3)
    sub.subscribe(None, ["ticks", "record_breaks"])  # "*" names no one
    sub.subscribe(_names("X", 10), ["ticks"])  # covered by "*": not kept, not counted
    assert sub.size() == 0
    sub.unsubscribe(_names("E", 3), ["ticks"])  # three exceptions: at the cap
    with pytest.raises(ProtocolError) as info:
        sub.unsubscribe(frozenset({"E9"}), ["record_breaks"])  # a fourth exception
    assert info.value.error == "too_many_symbols"
    assert sub.wants("record_breaks", "E9") and not sub.wants("ticks", "E0")
    sub.subscribe(None, ["ticks"])  # "*" again clears the exceptions
    assert sub.size() == 0 and sub.wants("ticks", "E0")


def test_subscription_cap_bounds_growth_message_after_message() -> None:
    """The hole the cap closes: many small messages, each within the per-message limit."""
    sub = Subscription()  # the default cap
    refused = 0
    for batch in range(50):
        try:
            sub.subscribe(_names(f"B{batch}-", 100), ["ticks"])
        except ProtocolError:
            refused += 1
    assert sub.size() == MAX_SYMBOLS and refused == 50 - MAX_SYMBOLS // 100


def test_parse_refuses_a_message_over_the_cap() -> None:
    many = orjson.dumps({"op": "subscribe", "symbols": sorted(_names("S", 11))})
    assert isinstance(parse_message(many), Subscribe)  # the default cap: 1000
    for raw in (many, many.replace(b'"subscribe"', b'"unsubscribe"')):
        with pytest.raises(ProtocolError) as info:
            parse_message(raw, max_symbols=10)
        assert info.value.error == "too_many_symbols" and "11" in info.value.detail
    over = orjson.dumps({"op": "subscribe", "symbols": sorted(_names("S", MAX_SYMBOLS + 1))})
    with pytest.raises(ProtocolError) as info:
        parse_message(over)
    assert info.value.error == "too_many_symbols"


def test_gateway_config_bounds_the_cap() -> None:
    from sinks.gateway.config import GatewayConfig
    from tickstream.settings import ConfigError

    tokens = TokenTable.parse_list("t")
    assert GatewayConfig("127.0.0.1:9", "t", tokens).max_symbols_per_client == MAX_SYMBOLS
    for bad in (0, -1, 100_001):
        with pytest.raises(ConfigError, match="MAX_SYMBOLS_PER_CLIENT"):
            GatewayConfig("127.0.0.1:9", "t", tokens, max_symbols_per_client=bad)


def test_access_allow_list() -> None:
    free = Access("t", None)
    free.check(frozenset({"ANY"}))
    assert free.allows("ANY")
    gold = Access("t", frozenset({"XAU"}))
    gold.check(None)  # '*' is narrowed to the allow-list, not refused
    gold.check(frozenset({"XAU"}))
    with pytest.raises(ProtocolError) as info:
        gold.check(frozenset({"XAU", "XAG"}))
    assert info.value.error == "forbidden_symbol" and "XAG" in info.value.detail
    assert gold.allows("XAU") and not gold.allows("XAG")
    assert not gold.allows("XAU/XAG")  # a pair needs both symbols (or itself)
    assert Access("t", frozenset({"XAU", "XAG"})).allows("XAU/XAG")
    assert Access("t", frozenset({"XAU/XAG"})).allows("XAU/XAG")


def test_token_table_parsing_and_lookup() -> None:
    table = TokenTable.parse_list("alpha, beta:XAU+XAG ,gamma:XAU")
    assert table.lookup("alpha") == Access("token#1", None)
    beta = table.lookup("beta")
    assert beta is not None and beta.allowed == frozenset({"XAU", "XAG"})
    assert table.lookup("nope") is None and table.lookup("") is None and table.lookup(None) is None
    from_file = TokenTable.parse_file("# desks\ndesk-1\n\ndesk-2 XAU XAG  # metals only\n")
    assert len(from_file) == 2
    assert from_file.lookup("desk-2").allowed == frozenset({"XAU", "XAG"})  # type: ignore[union-attr]
    assert len(table.merged(from_file)) == 5
    with pytest.raises(ValueError):
        TokenTable.parse_list("bad/token")


# ------------------------------------------------------------------ rows and frames

RB = {
    "kind": "record_break",
    "symbol": "XAU",
    "record": "level_up",
    "ts_ms": 1_000,
    "price": 5001.0,
    "level": 5000.0,
    "step": 100.0,
    "prev_ts_ms": 500,
    "since_prev_s": 0.5,
    "first_time": 1,
}
WIN = {
    "kind": "divergence_window",
    "pair": "XAU/XAG",
    "metric": "ratio",
    "direction": 1,
    "opened_at_ms": 60_000,
    "closed_at_ms": None,
    "open_value": 50.0,
    "peak_value": 51.0,
    "peak_at_ms": 120_000,
    "close_value": None,
}


def test_record_frame_carries_the_record_and_no_kind() -> None:
    """One spelling, the contract's ``record`` (older spellings went with the contracts)."""
    assert record_kind(RB) == "level_up"
    frame = row_frame("record_breaks", RB)
    assert frame["type"] == "record_break" and frame["record"] == "level_up"
    assert "kind" not in frame


def test_every_contract_row_kind_is_served() -> None:
    """Kinds, subscriptions and frame types come from the row contracts; signal events are
    no kind of their own but steps of the signals they are about."""
    from tickstream.contracts import ROW_SPECS

    served = [s for s in ROW_SPECS if s.kind != "signal_event"]
    assert set(KINDS) == {"ticks", *(s.feed for s in served)}
    assert "rolling_breaks" in KINDS and "signal_events" not in KINDS
    assert "signal_event" not in ROW_KIND_TO_SUB and "signal_events" not in SIGNAL_KINDS
    for spec in served:
        assert SUB_TO_TYPE[spec.feed] == spec.frame
    assert {"record_breaks", "rolling_breaks"} == EVENTED_KINDS


def test_identities_and_event_time() -> None:
    assert signal_identity("record_breaks", RB) == signal_identity("record_breaks", dict(RB))
    assert signal_identity("record_breaks", RB) != signal_identity(
        "record_breaks", {**RB, "level": 4900.0}
    )
    closed = {**WIN, "closed_at_ms": 180_000, "close_value": 50.1}
    assert signal_identity("divergence_windows", WIN) != signal_identity(
        "divergence_windows", closed
    )
    assert event_ts("divergence_windows", WIN) == 60_000
    assert event_ts("divergence_windows", closed) == 180_000
    assert event_ts("record_breaks", RB) == 1_000


def test_delta_encodes_once_with_creation_stamp() -> None:
    d = Delta("ticks", "XAU", 123, row=["XAU", 1, 2.0, None, None, None, None, 7, 100])
    data = d.data()
    assert d.data() is data
    doc = orjson.loads(data)
    assert doc == {
        "type": "tick",
        "symbol": "XAU",
        "ts_ms": 1,
        "price": 2.0,
        "bid": None,
        "ask": None,
        "size": None,
        "venue": None,
        "seq": 7,
        "recv_ms": 100,
        "created_ms": 123,
    }
    s = Delta("record_breaks", "XAU", None, doc=row_frame("record_breaks", RB), seq=4)
    assert orjson.loads(s.data())["signal_seq"] == 4


# ------------------------------------------------------------------ signal events

BREAK = RecordBreak("XAU", "level_up", 1_000, 5001.0, 5000.0, 100.0, 500, 0.5, 1)
ROLL = RollingBreak("XAG", "1h", "new_high", 2_000, 101.5, 101.0, 1_500)


def event(row: RecordBreak | RollingBreak, status: str, /, **changes: object) -> dict:
    """A signal_event row as the processor publishes it (the contract's own encoding)."""
    doc = SignalEvent(
        id=signal_id(row),
        status=status,
        signal=row.kind,
        symbol=row.key,
        ts_ms=row.ts_ms,
        price=row.price,
        recv_ms=row.ts_ms + 3,
        emitted_ms=row.ts_ms + 5,
        announced=1 if status == "confirmed" else 0,
        reason="late tick beat it" if status == "retracted" else "",
        row=row.encode().decode(),
    ).to_doc()
    doc.update(changes)
    return doc


def test_signal_event_is_a_frame_of_its_signal() -> None:
    step = signal_step(event(BREAK, "provisional"))
    assert (step.sub_kind, step.key, step.status, step.ts_ms) == (
        "record_breaks",
        "XAU",
        "provisional",
        1_000,
    )
    plain = row_frame("record_breaks", BREAK.to_doc())
    assert step.frame == {
        **plain,
        "id": signal_id(BREAK),
        "status": "provisional",
        "announced": 0,
        "reason": "",
        "recv_ms": 1_003,
        "emitted_ms": 1_005,
    }
    assert list(step.frame)[-len(EVENT_FIELDS) :] == list(EVENT_FIELDS)
    rolled = signal_step(event(ROLL, "retracted"))
    assert rolled.sub_kind == "rolling_breaks" and rolled.frame["type"] == "rolling_break"
    assert rolled.frame["window"] == "1h" and rolled.frame["reason"] == "late tick beat it"
    confirmed = signal_step(event(BREAK, "confirmed")).frame
    assert confirmed["announced"] == 1 and confirmed["id"] == step.frame["id"]


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "maybe"},
        {"id": ""},
        {"signal": "candle"},
        {"signal": "bar_1m"},  # not a signal
        {"signal": "signal_event"},
        {"signal": "rolling_break"},  # the row is a record break
        {"row": "{not json"},
        {"row": "[1]"},
        {"row": orjson.dumps({k: v for k, v in BREAK.to_doc().items() if k != "level"}).decode()},
        {"recv_ms": "soon"},
    ],
)
def test_malformed_signal_events_are_refused(changes: dict) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        signal_step(event(BREAK, "provisional", **changes))


def test_plain_row_served_as_confirmation_has_the_processor_id() -> None:
    """So that an event confirming the same signal later is one (id, status) in the log."""
    sid, frame = confirmed_frame("record_breaks", BREAK.to_doc())
    assert sid == signal_id(BREAK) == frame["id"]
    assert frame["status"] == "confirmed" and frame["type"] == "record_break"
    assert set(EVENT_FIELDS) <= set(frame)
    assert confirmed_frame("rolling_breaks", ROLL.to_doc())[0] == signal_id(ROLL)


def _step_delta(doc: dict) -> tuple[str, str, int, Callable[[int], Delta]]:
    """What the feed hands the log for a signal event: id, status, event time, its delta."""
    step = signal_step(doc)

    def make(seq: int) -> Delta:
        return Delta(step.sub_kind, step.key, 7, doc=step.frame, seq=seq, status=step.status)

    return step.id, step.status, step.ts_ms, make


def test_signal_log_dedupes_per_id_and_status() -> None:
    log = SignalLog(capacity=10)
    prov = log.add_step(*_step_delta(event(BREAK, "provisional")))
    assert prov is not None and prov.unconfirmed
    # a processor restart re-sends the provisional: nobody gets it twice
    assert log.add_step(*_step_delta(event(BREAK, "provisional"))) is None
    conf = log.add_step(*_step_delta(event(BREAK, "confirmed")))
    assert conf is not None and not conf.unconfirmed and log.settled(signal_id(BREAK))
    assert log.add_step(*_step_delta(event(BREAK, "confirmed"))) is None
    # once settled, a re-sent provisional is stale, whichever order the log saw them in
    assert log.add_step(*_step_delta(event(BREAK, "provisional"))) is None
    retr = log.add_step(*_step_delta(event(ROLL, "retracted")))
    assert retr is not None and retr.unconfirmed
    assert log.add_step(*_step_delta(event(ROLL, "provisional"))) is None
    # a replay carries each step once, in log order, with its id and status
    replayed = [orjson.loads(d.data()) for d in log.since(0)]
    assert [(f["id"], f["status"], f["signal_seq"]) for f in replayed] == [
        (signal_id(BREAK), "provisional", 1),
        (signal_id(BREAK), "confirmed", 2),
        (signal_id(ROLL), "retracted", 3),
    ]
    assert [d.seq for d in log.since(1_500)] == [3]  # event time: the signal's ts_ms
    # the plain row of a confirmed signal is the same (id, confirmed) entry
    sid, _ = confirmed_frame("record_breaks", BREAK.to_doc())
    assert log.add_step(sid, "confirmed", 1_000, lambda seq: Delta("x", "XAU", 0)) is None


def test_signal_log_forgets_what_it_evicts() -> None:
    log = SignalLog(capacity=2)
    log.add_step(*_step_delta(event(BREAK, "confirmed")))
    log.add_step(*_step_delta(event(ROLL, "provisional")))
    log.add_step(*_step_delta(event(ROLL, "confirmed")))
    assert not log.settled(signal_id(BREAK)) and log.settled(signal_id(ROLL))
    assert not log.complete_since(0)


def test_snapshot_carries_each_recent_signals_latest_status() -> None:
    st = BoardState(recent_signals=3)
    log = SignalLog()
    other = RecordBreak("XAU", "ath", 3_000, 5100.0, 5050.0, 0.0, 2_000, 1.0, 0)
    silver = RollingBreak("XAG", "1h", "new_low", 4_000, 99.0, 99.5, 3_500)
    for doc in (
        event(BREAK, "provisional"),
        event(other, "provisional"),
        event(ROLL, "provisional"),
        event(BREAK, "confirmed"),
        event(ROLL, "retracted"),
        event(silver, "confirmed"),
    ):
        sid, status, ts, make = _step_delta(doc)
        delta = log.add_step(sid, status, ts, make)
        assert delta is not None
        st.apply_signal(sid, delta)
    snap = st.snapshot(_all, 0)
    got = [(f["type"], f["id"], f["status"]) for f in snap["signals"]]
    assert got == [  # one frame per id, its latest status, in log order
        ("record_break", signal_id(other), "provisional"),
        ("record_break", signal_id(BREAK), "confirmed"),
        ("rolling_break", signal_id(ROLL), "retracted"),
        ("rolling_break", signal_id(silver), "confirmed"),
    ]
    assert snap["signals"][1]["signal_seq"] == 4 and snap["signals"][1]["created_ms"] == 7
    confirmed = st.snapshot(_all, 0, confirmed_only=True)["signals"]
    assert [f["id"] for f in confirmed] == [signal_id(BREAK), signal_id(silver)]
    gold_breaks = st.snapshot(lambda kind, key: kind == "record_breaks" and key == "XAU", 0)
    assert {f["id"] for f in gold_breaks["signals"]} == {signal_id(BREAK), signal_id(other)}
    # bounded per key: the least recently changed signal of a key goes first
    for i in range(3):
        extra = RecordBreak("XAU", "ath", 10_000 + i, 5200.0 + i, 5100.0, 0.0, 3_000, 1.0, 0)
        sid, status, ts, make = _step_delta(event(extra, "confirmed"))
        added = log.add_step(sid, status, ts, make)
        assert added is not None
        st.apply_signal(sid, added)
    xau = [f for f in st.snapshot(_all, 0)["signals"] if f["symbol"] == "XAU"]
    assert len(xau) == 3 and signal_id(BREAK) not in {f["id"] for f in xau}


def test_feed_serves_plain_rows_only_until_signal_events_of_their_kind() -> None:
    """The rule between the exact rows and the signal events, on the gateway's own ingest."""
    from sinks.gateway.server import Gateway, GatewayConfig

    gw = Gateway(GatewayConfig("127.0.0.1:9", "t", TokenTable.parse_list("t")))
    log, counts = gw.log, gw.counts

    def ingest(doc: dict) -> None:
        gw.feed._ingest("signals", orjson.dumps(doc), 1)

    # no signal event seen yet (an older processor, or history): the plain row is served as
    # its signal's confirmation, with the processor's id
    ingest(BREAK.to_doc())
    (first,) = log.since(0)
    assert first.status == "confirmed" and first.doc["id"] == signal_id(BREAK)
    ingest(ROLL.to_doc())
    assert log.head == 2
    # the first record break event: from now on record_break rows are board state only
    other = RecordBreak("XAU", "ath", 3_000, 5100.0, 5050.0, 0.0, 2_000, 1.0, 0)
    ingest(event(other, "provisional"))
    ingest(other.to_doc())
    assert log.head == 3 and gw.state.ath["XAU"]["price"] == 5100.0
    ingest(event(other, "confirmed"))
    assert log.head == 4
    # the event confirming the row served earlier, and a stale provisional: no new entry
    ingest(event(BREAK, "confirmed"))
    ingest(event(BREAK, "provisional"))
    assert log.head == 4 and counts["duplicate_signals"] == 2
    # rolling breaks have seen no event yet; divergence windows are served as always
    later_roll = RollingBreak("XAG", "1h", "new_high", 5_000, 102.0, 101.5, 2_000)
    ingest(later_roll.to_doc())
    ingest(WIN)
    assert log.head == 6 and counts["signals_in"] == 6 and counts["signal_events_in"] == 2
    ingest(event(BREAK, "provisional", row="{}"))  # malformed: counted, not served
    assert counts["undecodable"] == 1 and log.head == 6
    statuses = {f["id"]: f["status"] for f in gw.state.snapshot(_all, 0)["signals"]}
    assert statuses == {
        signal_id(BREAK): "confirmed",
        signal_id(ROLL): "confirmed",
        signal_id(other): "confirmed",
        signal_id(later_roll): "confirmed",
    }


# ------------------------------------------------------------------ delivered signals


def test_seq_set_bitmap_with_trim() -> None:
    seen = SeqSet()
    for seq in (1, 2, 3, 9, 100, 5_000):
        seen.add(seq)
    assert all(s in seen for s in (1, 2, 3, 9, 100, 5_000))
    assert not any(s in seen for s in (0, 4, 8, 10, 99, 4_999, 5_001, 10**9))
    assert len(seen) == 6
    seen.trim(97)  # forget below 97 (whole bytes: 1..96 go)
    assert 9 not in seen and 100 in seen and 5_000 in seen
    seen.add(5)  # older than the base: ignored, not an error
    assert 5 not in seen and len(seen) == 2


# ------------------------------------------------------------------ conflation


def test_conflator_keeps_latest_per_key_and_counts() -> None:
    c = Conflator()
    assert not c.offer("XAU", 1)
    assert not c.offer("XAG", 10)
    assert c.offer("XAU", 2)
    assert c.offer("XAU", 3)
    assert len(c) == 2 and c.superseded == 2
    assert c.drain() == [10, 3]  # newest update last
    assert not c and c.drain() == []
    assert not c.offer("XAU", 4)


# ------------------------------------------------------------------ state


def _all(kind: str, key: str) -> bool:
    return True


def test_board_state_snapshot() -> None:
    st = BoardState()
    st.apply_tick(["XAU", 2_000, 4990.0, 4989.5, 4990.5, None, None, 2, None])
    st.apply_tick(["XAU", 1_000, 4999.0, None, None, None, None, 1, None])  # older: not last
    st.apply_tick(["XAG", 2_000, 100.0, None, None, None, None, 1, None])
    st.apply_row(
        "bars",
        {"symbol": "XAU", "ts_ms": 0, "open": 1, "high": 2, "low": 0.5, "close": 1.5, "ticks": 3},
    )
    st.apply_row(
        "rolling_highs",
        {
            "symbol": "XAU",
            "window": "1h",
            "ts_ms": 5,
            "high": 4999.0,
            "high_ts_ms": 1_000,
            "low": 4990.0,
            "low_ts_ms": 2_000,
        },
    )
    st.apply_row(
        "rolling_highs",
        {
            "symbol": "XAU",
            "window": "1h",
            "ts_ms": 4,
            "high": 1.0,
            "high_ts_ms": 0,
            "low": 1.0,
            "low_ts_ms": 0,
        },
    )
    st.apply_row("divergence_windows", WIN)
    st.apply_row("divergence_windows", {**WIN, "metric": "return_spread"})
    st.apply_row(
        "divergence_windows",
        {**WIN, "metric": "return_spread", "closed_at_ms": 9, "close_value": 1.0},
    )
    st.apply_row("record_breaks", {**RB, "record": "level_up", "symbol": "XAG", "step": 5.0})
    snap = st.snapshot(_all, 42)
    assert snap["type"] == "snapshot" and snap["as_of_ms"] == 42
    assert snap["ticks"]["XAU"]["price"] == 4990.0 and snap["ticks"]["XAU"]["bid"] == 4989.5
    assert snap["ath"]["XAU"] == {"price": 4999.0, "ts_ms": 1_000, "source": "tick"}
    assert snap["bars"]["XAU"]["close"] == 1.5 and snap["bars"]["XAU"]["type"] == "bar"
    assert snap["rolling_highs"]["XAU"]["1h"]["high"] == 4999.0
    assert [w["metric"] for w in snap["divergence_windows"]] == ["ratio"]
    assert snap["levels"]["XAG"] == [1.0, 5.0, 10.0]
    assert "history" not in snap
    hist = st.snapshot(_all, 42, history=True)["history"]
    assert hist["XAU"] == [[2_000, 4990.0]]  # the older tick is no point of the chart
    st.apply_tick(["XAU", 2_400, 4991.0, None, None, None, None, 3, None])  # same second
    st.apply_tick(["XAU", 3_100, 4992.0, None, None, None, None, 4, None])
    hist = st.snapshot(_all, 42, history=True)["history"]
    assert hist["XAU"] == [[2_400, 4991.0], [3_100, 4992.0]]
    # an ath record row is authoritative at equal price and raises the ATH above ticks
    st.apply_row("record_breaks", {**RB, "record": "ath", "price": 4999.0, "ts_ms": 999})
    assert st.ath["XAU"] == {"price": 4999.0, "ts_ms": 999, "source": "record"}
    st.apply_row("record_breaks", {**RB, "record": "ath", "price": 5050.0, "ts_ms": 3_000})
    assert st.ath["XAU"]["price"] == 5050.0
    # filtered by what the client may and wants to see
    only_xag = st.snapshot(lambda kind, key: kind == "ticks" and key == "XAG", 0)
    assert list(only_xag["ticks"]) == ["XAG"] and not only_xag["bars"]
    assert not only_xag["divergence_windows"] and list(only_xag["ath"]) == ["XAG"]


def _delta(kind: str, row: dict) -> object:
    return lambda seq: Delta(kind, row.get("symbol") or row["pair"], None, doc=row, seq=seq)


def test_signal_log_dedupes_replays_and_evicts() -> None:
    log = SignalLog(capacity=3)
    a = log.add("record_breaks", RB, _delta("record_breaks", RB))
    assert a is not None and a.seq == 1
    assert log.add("record_breaks", dict(RB), _delta("record_breaks", RB)) is None  # duplicate
    b = log.add("divergence_windows", WIN, _delta("divergence_windows", WIN))
    closed = {**WIN, "closed_at_ms": 180_000}
    c = log.add("divergence_windows", closed, _delta("divergence_windows", closed))
    assert [d.seq for d in log.since(0)] == [1, 2, 3]
    assert [d.seq for d in log.since(100_000)] == [3]
    assert log.complete_since(0)
    later = {**RB, "ts_ms": 2_000}
    d = log.add("record_breaks", later, _delta("record_breaks", later))
    assert d is not None and d.seq == 4 and len(log) == 3 and log.head == 4
    assert not log.complete_since(0) and log.complete_since(1_001)
    assert b is not None and c is not None
    # an evicted identity may come in again (bounded memory), with a new sequence number
    again = log.add("record_breaks", RB, _delta("record_breaks", RB))
    assert again is not None and again.seq == 5


# ------------------------------------------------------------------ command line


def test_command_help_and_refusals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from cli.commands.gateway import gateway

    runner = CliRunner()
    result = runner.invoke(gateway, ["--help"])
    assert result.exit_code == 0
    for name in ("TICKSTREAM_GATEWAY_PORT", "TICKSTREAM_GATEWAY_TOKENS_FILE", "--conflation-ms"):
        assert name in result.output
    result = runner.invoke(gateway, [], env={"TICKSTREAM_GATEWAY_TOKENS": ""})
    assert result.exit_code == 2 and "no access token" in result.output
    result = runner.invoke(gateway, ["--tokens", "bad/token"])
    assert result.exit_code == 2 and "URL-safe" in result.output
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate")
    result = runner.invoke(gateway, ["--tokens", "t", "--tls-cert", str(bogus)])
    assert result.exit_code == 2 and "--tls-cert" in result.output
    result = runner.invoke(gateway, ["--tokens", "t", "--port", "70000"])
    assert result.exit_code == 2
