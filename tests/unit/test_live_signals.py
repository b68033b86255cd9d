"""Provisional signals on arrival, confirmed or retracted at the watermark (live.py).

Random streams per symbol (equal timestamps, duplicates, jumps), merged, then jumbled so
that earlier-stamped ticks arrive after later ones (some beyond the lateness: late),
fed in random batches with a snapshot -> orjson -> restore at a random point.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from unittest.mock import patch

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from oracles import (
    accepted_in_event_order,
    interleave,
    jumble,
    ordering_oracle,
    records_oracle,
    rolling_break_rows,
    rolling_breaks_oracle,
    symbol_stream,
)

from processors.kernels import live as live_module
from processors.kernels.analytics import Analytics, AnalyticsConfig
from processors.kernels.live_ledger import Ledger
from processors.kernels.records import RecordConfig, RecordSeed
from processors.kernels.rolling import RollingConfig
from tickstream.contracts import SignalEvent, row_from_doc, signal_id
from tickstream.model import Tick

WINDOWS = {"1s": 1_000, "10s": 10_000, "1m": 60_000}
SIGNAL_KINDS = ("record_break", "rolling_break")


def make_config(
    lateness: int,
    by_symbol: Mapping[str, int],
    hysteresis: float = 0.001,
    span_ms: int = 20_000,
    seeds: Mapping[str, RecordSeed] | None = None,
    warmup_ms: int = 0,
) -> AnalyticsConfig:
    return AnalyticsConfig(
        allowed_lateness_ms=lateness,
        lateness_ms_by_symbol=dict(by_symbol),
        rolling=RollingConfig(windows_ms=WINDOWS, stamp_ms=1_000),
        records=RecordConfig(
            level_steps={"XAU": (1.0, 5.0), "XAG": (0.25,)},
            default_steps=(3.0,),
            hysteresis=hysteresis,
            sync_groups=(("XAU", "XAG"), ("XAG", "C")),
            sync_span_ms=span_ms,
            seeds=dict(seeds or {}),
            warmup_ms=warmup_ms,
        ),
    )


class Run:
    """Everything one run produced, in emission order."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.late: list[Tick] = []
        self.events: list[SignalEvent] = []

    def signal_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["kind"] in SIGNAL_KINDS]


def drive(
    config: AnalyticsConfig,
    arrivals: Sequence[Tick],
    cuts: Sequence[int],
    snapshot_at: int | None = None,
) -> Run:
    """Batches cut at ``cuts``; before batch ``snapshot_at`` the pipeline is snapshotted
    through orjson into a fresh one. now_ms is the batch number (deterministic)."""
    bounds = sorted({0, len(arrivals), *(c % (len(arrivals) + 1) for c in cuts)})
    analytics = Analytics(config)
    run = Run()
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if i == snapshot_at:
            state = orjson.loads(orjson.dumps(analytics.snapshot()))
            analytics = Analytics(config)
            analytics.restore(state)
        step = analytics.update(arrivals[a:b], now_ms=1_000 * (i + 1))
        run.rows += [r.to_doc() for r in step.rows]
        run.late += step.late
        run.events += step.events
    if snapshot_at is not None and snapshot_at >= len(bounds) - 1:
        state = orjson.loads(orjson.dumps(analytics.snapshot()))
        analytics = Analytics(config)
        analytics.restore(state)
    step = analytics.flush(now_ms=999_999)
    run.rows += [r.to_doc() for r in step.rows]
    run.events += step.events
    return run


def first_by_id(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(signal_id(row_from_doc(row)), row)
    return out


def check_ledger(run: Run) -> Counter[str]:
    """(a) confirmed rows are the exact rows by id; (b) each provisional id ends once."""
    exact = first_by_id(run.signal_rows())
    confirmed: dict[str, dict[str, Any]] = {}
    provisional: dict[str, SignalEvent] = {}
    ended: Counter[str] = Counter()
    for e in run.events:
        row = orjson.loads(e.row)
        assert e.signal == row["kind"] and e.symbol == row["symbol"]
        assert (e.ts_ms, e.price) == (row["ts_ms"], row["price"])
        assert e.id == signal_id(row_from_doc(row)), "the id is the row's signal_id"
        if e.status == "provisional":
            assert e.id not in provisional, "one provisional event per id"
            assert e.id not in ended, "nothing announced after its end"
            assert e.announced == 0 and e.reason == ""
            provisional[e.id] = e
        elif e.status == "confirmed":
            assert e.announced == (1 if e.id in provisional else 0)
            assert e.reason == ""
            confirmed[e.id] = row
            ended[e.id] += 1
        else:
            assert e.status == "retracted"
            assert e.id in provisional and e.announced == 1 and e.reason
            assert e.row == provisional[e.id].row, "a retraction carries the provisional row"
            ended[e.id] += 1
    assert confirmed == exact, "confirmed events are exactly the exact signal rows"
    assert set(ended) >= set(provisional), "no provisional id left dangling"
    assert all(n == 1 for n in ended.values()), "one end per id"
    return Counter(e.status for e in run.events)


def oracle_rows(config: AnalyticsConfig, streams: dict[str, list[Tick]]) -> list[dict[str, Any]]:
    return records_oracle(streams, config.records) + rolling_breaks_oracle(
        streams, config.rolling.windows_ms
    )


def provisional_rolling_oracle(
    config: AnalyticsConfig, arrivals: Sequence[Tick]
) -> list[dict[str, Any]]:
    """Rolling breaks on arrival, by definition: each accepted tick against every
    accepted tick of its symbol that arrived before it, stamped in (t - W, t]."""
    known: dict[str, list[Tick]] = {}
    rows: list[dict[str, Any]] = []
    late = set(ordering_oracle(arrivals, lambda s: lateness_of(config, s))[1])
    for n, tick in enumerate(arrivals):
        earlier = known.setdefault(tick.symbol, [])
        if n in late:
            continue
        rows += rolling_break_rows(tick.symbol, tick, earlier, config.rolling.windows_ms)
        earlier.append(tick)
    return rows


def lateness_of(config: AnalyticsConfig, symbol: str) -> int:
    return config.lateness_ms_by_symbol.get(symbol, config.allowed_lateness_ms)


streams_strategy = st.fixed_dictionaries(
    {
        "XAU": symbol_stream("XAU", max_ticks=40, price_cents=(1_000, 3_000)),
        "XAG": symbol_stream("XAG", max_ticks=30, price_cents=(100, 2_000)),
        "C": symbol_stream("C", max_ticks=15, price_cents=(50, 300)),
    }
)
lateness_strategy = st.sampled_from([0, 1, 999, 2_000, 30_000])
# 0: none; the others end within many streams (a random stream spans up to ~40 minutes)
warmup_strategy = st.sampled_from([0, 0, 1_000, 30_000, 120_000])
by_symbol_strategy = st.dictionaries(st.sampled_from(["XAU", "XAG", "C"]), lateness_strategy)
span_strategy = st.sampled_from([0, 1_000, 20_000])
seed_strategy = st.integers(0, 2**32)
cuts_strategy = st.lists(st.integers(0, 200), max_size=8)  # batch bounds, mod the length
snapshot_strategy = st.none() | st.integers(0, 9)  # the batch before which it restarts


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams=streams_strategy,
    lateness=lateness_strategy,
    by_symbol=by_symbol_strategy,
    hysteresis=st.sampled_from([0.0, 0.001, 0.05]),
    span_ms=span_strategy,
    share=st.sampled_from([0.05, 0.2, 0.5]),
    seed=seed_strategy,
    cuts=cuts_strategy,
    snapshot_at=snapshot_strategy,
    warmup_ms=warmup_strategy,
)
def test_out_of_order_streams_confirm_exactly_and_end_every_provisional(
    streams, lateness, by_symbol, hysteresis, span_ms, share, seed, cuts, snapshot_at, warmup_ms
):
    rnd = random.Random(seed)
    arrivals = jumble(interleave(streams, rnd), rnd, share, reach=12)
    if rnd.random() < 0.3:
        cuts = list(range(len(arrivals)))  # tick by tick
    config = make_config(lateness, by_symbol, hysteresis, span_ms, warmup_ms=warmup_ms)
    run = drive(config, arrivals, cuts, snapshot_at)
    counts = check_ledger(run)
    # (a) against the definitions, on the ticks the ordering stage accepted
    accepted, late = accepted_in_event_order(arrivals, lambda s: lateness_of(config, s))
    assert run.late == late
    expected = first_by_id(oracle_rows(config, accepted))
    assert first_by_id(run.signal_rows()) == expected
    # rolling breaks on arrival are the definition over what was known at arrival
    got = [
        orjson.loads(e.row)
        for e in run.events
        if e.status == "provisional" and e.signal == "rolling_break"
    ]
    assert got == provisional_rolling_oracle(config, arrivals)
    # (d) a restart anywhere changes nothing
    if snapshot_at is not None:
        assert drive(config, arrivals, cuts).events == run.events
    for status, n in counts.items():
        event(f"{status} events: {'some' if n else 'none'}")
    if any(e.status == "confirmed" and not e.announced for e in run.events):
        event("unannounced confirmation")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams=streams_strategy,
    lateness=lateness_strategy,
    by_symbol=by_symbol_strategy,
    span_ms=span_strategy,
    share=st.sampled_from([0.2, 0.5]),
    seed=seed_strategy,
    cuts=cuts_strategy,
    snapshot_at=snapshot_strategy,
)
def test_each_retraction_comes_at_the_step_a_scan_of_every_pending_signal_finds_it(
    streams, lateness, by_symbol, span_ms, share, seed, cuts, snapshot_at
):
    """The ledger looks for final signals only when a set of members' watermarks passed
    their oldest pending one: the events, and the step of each, are those of checking
    every pending signal at every step."""
    rnd = random.Random(seed)
    arrivals = jumble(interleave(streams, rnd), rnd, share, reach=12)
    config = make_config(lateness, by_symbol, span_ms=span_ms)
    run = drive(config, arrivals, cuts, snapshot_at)
    with patch.object(Ledger, "_due", lambda self, marks: True):
        every_step = drive(config, arrivals, cuts, snapshot_at)
    assert run.events == every_step.events
    if any(e.status == "retracted" and e.emitted_ms < 999_999 for e in run.events):
        event("retracted before the flush")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams=streams_strategy,
    budget=st.sampled_from([0, 1, 3]),
    hysteresis=st.sampled_from([0.0, 0.05]),
    seed=seed_strategy,
    cuts=st.lists(st.integers(0, 200), max_size=3),
    snapshot_at=st.none() | st.integers(0, 3),
    warmup_ms=warmup_strategy,
)
def test_past_the_resync_budget_the_shadow_catches_up_after_the_step(
    streams, budget, hysteresis, seed, cuts, snapshot_at, warmup_ms
):
    """A jittered feed in big batches: past the budget, out-of-order arrivals are fed in
    arrival order and the shadow rebuilt after the exact step. Still exact, still ended."""
    rnd = random.Random(seed)
    arrivals = jumble(interleave(streams, rnd), rnd, 0.5, reach=12)
    config = make_config(30_000, {}, hysteresis, 20_000, warmup_ms=warmup_ms)
    saved = live_module.RESYNC_BUDGET
    live_module.RESYNC_BUDGET = budget
    try:
        run = drive(config, arrivals, cuts, snapshot_at)
        check_ledger(run)
        accepted, _ = accepted_in_event_order(arrivals, lambda s: lateness_of(config, s))
        assert first_by_id(run.signal_rows()) == first_by_id(oracle_rows(config, accepted))
        got = [
            orjson.loads(e.row)
            for e in run.events
            if e.status == "provisional" and e.signal == "rolling_break"
        ]
        assert got == provisional_rolling_oracle(config, arrivals)
    finally:
        live_module.RESYNC_BUDGET = saved


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams=streams_strategy,
    lateness=lateness_strategy,
    by_symbol=by_symbol_strategy,
    hysteresis=st.sampled_from([0.0, 0.001, 0.05]),
    span_ms=span_strategy,
    seed=seed_strategy,
    cuts=cuts_strategy,
    snapshot_at=snapshot_strategy,
    seeded=st.booleans(),
    warmup_ms=warmup_strategy,
)
def test_in_order_streams_announce_everything_and_retract_nothing(
    streams, lateness, by_symbol, hysteresis, span_ms, seed, cuts, snapshot_at, seeded, warmup_ms
):
    """(c) per symbol in event order (symbols interleaved at random), nothing late."""
    rnd = random.Random(seed)
    arrivals = interleave(streams, rnd)
    seeds = {"XAU": RecordSeed(20.0, -1_000, 12.0, -2_000, last_price=19.5)} if seeded else {}
    config = make_config(lateness, by_symbol, hysteresis, span_ms, seeds, warmup_ms)
    run = drive(config, arrivals, cuts, snapshot_at)
    check_ledger(run)
    assert run.late == []
    assert first_by_id(run.signal_rows()) == first_by_id(oracle_rows(config, streams))
    assert not [e for e in run.events if e.status == "retracted"]
    announced = {e.id: e for e in run.events if e.status == "provisional"}
    confirmed = [e for e in run.events if e.status == "confirmed"]
    assert all(e.announced == 1 for e in confirmed)
    assert {e.id for e in confirmed} == set(announced)
    for e in confirmed:  # in order, the provisional row is already the exact row
        assert orjson.loads(announced[e.id].row) == orjson.loads(e.row)
        assert announced[e.id].recv_ms == e.recv_ms
    if lateness == 0 and not by_symbol:
        event("lateness 0")
    if any(orjson.loads(e.row).get("record") == "sync_ath" for e in confirmed):
        event("sync confirmed")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams=streams_strategy,
    seed=seed_strategy,
    cuts=cuts_strategy,
    other_cuts=cuts_strategy,
    warmup_ms=warmup_strategy,
)
def test_ids_are_deterministic(streams, seed, cuts, other_cuts, warmup_ms):
    """(e) the same input gives the same events; any batching the same confirmations."""
    rnd = random.Random(seed)
    arrivals = jumble(interleave(streams, rnd), rnd, 0.2, reach=6)
    config = make_config(2_000, {"C": 0}, warmup_ms=warmup_ms)
    first = drive(config, arrivals, cuts)
    assert drive(config, arrivals, cuts).events == first.events

    def confirmed(run: Run) -> set[tuple[str, str]]:
        return {(e.id, e.row) for e in run.events if e.status == "confirmed"}

    assert confirmed(drive(config, arrivals, other_cuts)) == confirmed(first)


# -- examples ------------------------------------------------------------------------------

T0 = 1_769_385_600_000  # 2026-01-26T00:00:00Z


def _by_status(events: Sequence[SignalEvent], record: str) -> list[tuple[str, int, float, int]]:
    return [
        (e.status, e.ts_ms, e.price, e.announced)
        for e in events
        if orjson.loads(e.row).get("record") == record
    ]


def test_an_all_time_high_is_announced_on_arrival_and_confirmed_at_the_watermark():
    analytics = Analytics(make_config(2_000, {}))
    step = analytics.update(
        [Tick("XAU", T0, 20.0, recv_ms=T0 + 5), Tick("XAU", T0 + 500, 20.5, recv_ms=T0 + 505)],
        now_ms=T0 + 510,
    )
    (ath,) = [e for e in step.events if orjson.loads(e.row)["record"] == "ath"]
    assert (ath.status, ath.recv_ms, ath.emitted_ms, ath.announced) == (
        "provisional",
        T0 + 505,
        T0 + 510,
        0,
    )
    assert step.rows == [] or all(r["kind"] != "record_break" for r in step.rows)
    later = analytics.update([Tick("XAU", T0 + 2_600, 20.1)], now_ms=T0 + 2_610)
    (confirmed,) = [e for e in later.events if e.id == ath.id]
    assert (confirmed.status, confirmed.announced, confirmed.emitted_ms) == (
        "confirmed",
        1,
        T0 + 2_610,
    )
    assert confirmed.row == ath.row
    assert any(r["kind"] == "record_break" and r["record"] == "ath" for r in later.rows)


def test_lateness_zero_confirms_with_the_tick_itself():
    analytics = Analytics(make_config(2_000, {"XAU": 0}))
    analytics.update([Tick("XAU", T0, 20.0)], now_ms=1)
    step = analytics.update([Tick("XAU", T0 + 1, 21.0)], now_ms=2)
    assert _by_status(step.events, "ath") == [
        ("provisional", T0 + 1, 21.0, 0),
        ("confirmed", T0 + 1, 21.0, 1),
    ]


def test_an_earlier_stamped_higher_tick_retracts_the_high_with_a_reason():
    analytics = Analytics(make_config(2_000, {}))
    events = analytics.update([Tick("XAU", T0, 20.0), Tick("XAU", T0 + 2_000, 20.2)]).events
    assert _by_status(events, "ath") == [("provisional", T0 + 2_000, 20.2, 0)]
    events = analytics.update([Tick("XAU", T0 + 1_000, 20.3)]).events  # out of order
    events += analytics.update([Tick("XAU", T0 + 9_000, 19.0)]).events  # watermark 7 s
    assert _by_status(events, "ath") == [
        ("provisional", T0 + 1_000, 20.3, 0),  # judged where it belongs: after 20.0
        ("confirmed", T0 + 1_000, 20.3, 1),
        ("retracted", T0 + 2_000, 20.2, 1),
    ]
    (retracted,) = [e for e in events if e.status == "retracted" and "all-time" in e.reason]
    assert retracted.reason == (
        f"an earlier-stamped tick at 20.3 (ts {T0 + 1_000}) arrived later "
        "and set the all-time high first"
    )


def test_a_moved_previous_high_re_issues_the_record_under_a_new_id():
    analytics = Analytics(make_config(2_000, {}))
    events = analytics.update([Tick("XAU", T0, 20.0), Tick("XAU", T0 + 2_000, 20.5)]).events
    (provisional,) = [e for e in events if orjson.loads(e.row).get("record") == "ath"]
    events = analytics.update([Tick("XAU", T0 + 1_000, 20.2)]).events  # between the two
    events += analytics.flush().events
    (retracted,) = [e for e in events if e.id == provisional.id]
    reissued = [e for e in events if e.ts_ms == T0 + 2_000 and e.id != provisional.id]
    assert [(e.status, e.announced) for e in reissued if '"ath"' in e.row] == [
        ("provisional", 0),  # announced again as soon as 20.2 arrived
        ("confirmed", 1),
    ]
    assert orjson.loads(reissued[0].row)["level"] == 20.2
    assert retracted.reason.endswith(f"re-issued as {reissued[0].id}")


def test_per_symbol_lateness_sets_each_watermark():
    analytics = Analytics(make_config(2_000, {"XAG": 0}))
    # a fresh symbol's clock starts once a second tick confirms the first (ordering.py)
    analytics.update([Tick("XAU", T0 + 4_000, 20.0), Tick("XAG", T0 + 4_000, 1.0)])
    analytics.update([Tick("XAU", T0 + 5_000, 20.0), Tick("XAG", T0 + 5_000, 1.0)])
    assert analytics.ordering.watermarks() == {"XAU": T0 + 3_000, "XAG": T0 + 5_000}
    step = analytics.update([Tick("XAG", T0 + 4_999, 1.0), Tick("XAU", T0 + 2_999, 20.0)])
    assert [(t.symbol, t.ts_ms) for t in step.late] == [("XAG", T0 + 4_999), ("XAU", T0 + 2_999)]


def test_a_restored_snapshot_from_before_the_live_stage_still_confirms():
    config = make_config(2_000, {})
    analytics = Analytics(config)
    analytics.update([Tick("XAU", T0, 20.0), Tick("XAU", T0 + 1_000, 21.0)])
    state = orjson.loads(orjson.dumps(analytics.snapshot()))
    del state["live"]
    fresh = Analytics(config)
    fresh.restore(state)
    events = fresh.update([Tick("XAU", T0 + 1_500, 21.5)]).events + fresh.flush().events
    assert _by_status(events, "ath") == [
        ("provisional", T0 + 1_500, 21.5, 0),
        ("confirmed", T0 + 1_000, 21.0, 0),  # its provisional event was never seen
        ("confirmed", T0 + 1_500, 21.5, 1),
    ]


def test_a_tick_at_the_watermark_is_released():
    """Watermark = newest - lateness; a tick stamped at it can still come, but sorts
    after those released, so they go: with lateness 0, the newest tick itself."""
    analytics = Analytics(make_config(2_000, {"XAG": 0}))
    analytics.update([Tick("XAU", T0, 20.0), Tick("XAG", T0, 1.0)])
    step = analytics.update([Tick("XAU", T0 + 2_000, 20.5), Tick("XAG", T0 + 1, 1.1)])
    released = {(r["symbol"], r["ts_ms"]) for r in step.rows if r["kind"] == "bar_1m"}
    assert released == set()  # bars close later; but the ath of each is confirmed now:
    assert _by_status(step.events, "ath") == [
        ("provisional", T0 + 2_000, 20.5, 0),
        ("provisional", T0 + 1, 1.1, 0),
        ("confirmed", T0 + 1, 1.1, 1),  # XAG: lateness 0, released with itself
    ]
    assert analytics.ordering.held("XAU")[0][0] == T0 + 2_000  # XAU's T0 left, at its mark


def test_a_sync_high_is_announced_once_both_members_ticked_past_it():
    analytics = Analytics(make_config(2_000, {}, span_ms=10_000))
    analytics.update([Tick("XAU", T0, 20.0), Tick("XAG", T0, 1.0)])
    events = analytics.update([Tick("XAU", T0 + 1_000, 21.0), Tick("XAG", T0 + 1_500, 1.1)]).events
    assert _by_status(events, "sync_ath") == []  # XAG's ATH at 1.5 s: no member past it
    events = analytics.update([Tick("XAU", T0 + 1_600, 20.9)]).events
    assert _by_status(events, "sync_ath") == []  # XAG itself not yet (strictly) past it
    events = analytics.update([Tick("XAG", T0 + 1_700, 1.05)]).events
    assert _by_status(events, "sync_ath") == [("provisional", T0 + 1_500, 1.1, 0)]
    (sync,) = [e for e in events if '"sync_ath"' in e.row]
    assert orjson.loads(sync.row)["symbol"] == "XAG+XAU"
    events = analytics.update([Tick("XAU", T0 + 5_000, 20.9), Tick("XAG", T0 + 5_000, 1.0)]).events
    assert _by_status(events, "sync_ath") == [("confirmed", T0 + 1_500, 1.1, 1)]


def test_a_second_replay_after_a_flush_announces_only_what_is_new():
    analytics = Analytics(make_config(2_000, {}))
    day = [Tick("XAU", T0, 20.0), Tick("XAU", T0 + 1_000, 21.0), Tick("XAU", T0 + 2_000, 22.0)]
    first = analytics.update(day).events + analytics.flush().events
    assert [e.status for e in first if '"ath"' in e.row] == ["provisional"] * 2 + ["confirmed"] * 2
    again = analytics.update(day)
    assert again.late == day and again.events == []  # a flushed instant is final
    more = analytics.update([Tick("XAU", T0 + 3_000, 23.0)]).events + analytics.flush().events
    assert _by_status(more, "ath") == [
        ("provisional", T0 + 3_000, 23.0, 0),
        ("confirmed", T0 + 3_000, 23.0, 1),
    ]


def test_warm_up_and_coverage_on_arrival():
    """No record in a warm-up; an arrival stamped before the first one starts the history
    earlier: a held tick's record it warms up is announced then, the windows it covers
    give breaks nobody was told of (confirmed, announced 0); nothing is retracted."""
    analytics = Analytics(make_config(30_000, {}, warmup_ms=10_000))
    ticks = [(10_000, 20.0), (10_500, 20.5), (14_000, 21.0), (15_000, 21.5)]
    events = analytics.update([Tick("XAU", T0 + t, p) for t, p in ticks]).events
    assert [e for e in events if e.signal == "rolling_break" or '"ath"' in e.row] == []
    events = analytics.update([Tick("XAU", T0 + 4_000, 19.0)]).events  # history from 4 s
    assert _by_status(events, "ath") == [("provisional", T0 + 14_000, 21.0, 0)] + [
        ("provisional", T0 + 15_000, 21.5, 0)
    ]
    events = analytics.flush().events
    assert {e.status for e in events} == {"confirmed"}
    assert [(e.ts_ms, e.announced) for e in events if '"ath"' in e.row] == [
        (T0 + 14_000, 1),
        (T0 + 15_000, 1),
    ]
    assert [(e.ts_ms, orjson.loads(e.row)["window"]) for e in events if e.announced == 0] == [
        (T0 + 10_500, "1s"),
        (T0 + 14_000, "10s"),
        (T0 + 15_000, "10s"),
    ]
