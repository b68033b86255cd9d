"""Clock heartbeats in the ordering stage and the processor core (ordering.py, core.py).

A heartbeat for S at T moves S's clock as an in-reach tick with no price would, in its
arrival position among the ticks: random streams of ticks and heartbeats (out of order,
duplicates, late, jumps), in random batchings, give what a one-by-one run gives and what
a brute-force reference (``reference``: the ordering rules with a heartbeat as a clock
advance) gives.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import ordering_reference

from processors.core import Incoming, ProcessorCore
from processors.kernels.analytics import AnalyticsConfig
from processors.kernels.ordering import Reorderer
from tickstream.contracts import Heartbeat, encode_heartbeat, encode_ticks
from tickstream.model import Tick
from tickstream.topics import Topics

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
Item = Tick | Heartbeat


def reference(
    arrivals: Sequence[Item],
    lateness: Callable[[str], int],
    max_jump: Callable[[str], int],
    confirm: int,
) -> tuple[dict[str, list[Tick]], list[Tick], dict[str, int | None]]:
    """The ordering rules by brute force, a heartbeat being a clock advance
    (``oracles.ordering_reference``). Returns (accepted per symbol in (ts, arrival)
    order, late ticks, final clocks)."""
    kept, late, clocks = ordering_reference(arrivals, lateness, max_jump, confirm)
    streams: dict[str, list[Tick]] = defaultdict(list)
    for _, _, tick in sorted(kept, key=lambda e: (e[0], e[1])):
        streams[tick.symbol].append(tick)
    late_ticks = [arrivals[n] for n in late]
    return dict(streams), late_ticks, {s: clocks.get(s) for s in {*streams, *clocks}}  # type: ignore[return-value]


@st.composite
def arrivals(draw: st.DrawFn) -> list[Item]:
    """Ticks mostly forward in time with jitter (some late), duplicates, gaps, lone ticks
    stamped far ahead; heartbeats now and then, mostly a little past the symbol's newest
    tick, sometimes behind it, far ahead, or for a symbol with no clock."""
    n = draw(st.integers(1, 120))
    clock: dict[str, int] = defaultdict(lambda: T0)
    out: list[Item] = []
    for _ in range(n):
        symbol = draw(st.sampled_from(["XAU", "XAG", "EUR"]))
        kind = draw(st.integers(0, 9))
        if kind <= 2:
            ahead = draw(st.sampled_from([1, 200, 1_000, 2_500, 5_000, 59_000, 61_000, 400_000]))
            behind = draw(st.sampled_from([0, -3_000]))
            out.append(Heartbeat(symbol, clock[symbol] + ahead + behind))
            continue
        step = draw(st.integers(-3_500, 3_000) | st.sampled_from([0, 61_000, 3_600_000]))
        if draw(st.integers(0, 25)) == 0:
            out.append(Tick(symbol, clock[symbol] + 290_000, 100.0))  # stamped ahead
            continue
        clock[symbol] = max(T0, clock[symbol] + step)
        price = float(draw(st.integers(90, 110)))
        out.append(Tick(symbol, clock[symbol], price))
        if draw(st.integers(0, 12)) == 0:
            out.append(Tick(symbol, clock[symbol], price))  # a duplicate
    return out


def run_reorderer(r: Reorderer, batch: Sequence[Item]) -> tuple[list[Tick], list[Tick]]:
    """One batch as the core runs it: cut at heartbeats, released after each part."""
    released: list[Tick] = []
    late: list[Tick] = []
    part: list[Tick] = []
    for item in [*batch, None]:
        if isinstance(item, Tick):
            part.append(item)
            continue
        late += r.accept(part)
        released += r.release()
        part = []
        if item is not None:
            r.heartbeat(item.symbol, item.ts_ms)
    released += r.release()
    return released, late


def cut(items: Sequence[Item], rnd: random.Random) -> list[list[Item]]:
    out: list[list[Item]] = []
    i = 0
    while i < len(items):
        n = rnd.randint(1, 12)
        out.append(list(items[i : i + n]))
        i += n
    return out


JUMPS = st.sampled_from([(2_000, 60_000, 1), (0, 60_000, 1), (500, 0, 1), (2_000, 60_000, 2)])


@settings(max_examples=200, deadline=None)
@given(items=arrivals(), seed=st.integers(0, 2**32), jumps=JUMPS)
def test_reorderer_with_heartbeats_equals_the_reference_in_any_batching(
    items: list[Item], seed: int, jumps: tuple[int, int, int]
) -> None:
    lateness, jump, confirm = jumps
    runs = []
    for batches in ([[x] for x in items], cut(items, random.Random(seed)), [items]):
        r = Reorderer(lateness, max_jump_ms=jump, jump_confirm_ticks=confirm)
        released: list[Tick] = []
        late: list[Tick] = []
        for batch in batches:
            got, gone = run_reorderer(r, batch)
            released += got
            late += gone
        clocks = {s: r.newest(s) for s in r.watermarks()}
        flushed = r.flush().by_symbol
        runs.append((per_symbol(released), late, flushed, clocks))
    assert runs[0] == runs[1] == runs[2]
    released_by, late, flushed, clocks = runs[0]
    streams, ref_late, ref_clocks = reference(items, lambda _s: lateness, lambda _s: jump, confirm)
    assert late == ref_late
    assert clocks == {s: ref_clocks.get(s) for s in clocks}
    assert set(released_by) | set(flushed) <= set(streams)
    for symbol, stream in streams.items():
        # released before the flush: exactly the accepted ticks the final watermark passed
        clock = ref_clocks.get(symbol)
        mark = -(2**62) if clock is None else clock - lateness
        before = released_by.get(symbol, [])
        assert before == [t for t in stream if t.ts_ms <= mark]
        assert before + flushed.get(symbol, []) == stream


def per_symbol(ticks: Sequence[Tick]) -> dict[str, list[Tick]]:
    out: dict[str, list[Tick]] = defaultdict(list)
    for t in ticks:
        out[t.symbol].append(t)
    return dict(out)


def messages(items: Sequence[Item]) -> list[Incoming]:
    return [
        Incoming(
            0,
            n,
            encode_heartbeat(x.symbol, x.ts_ms) if isinstance(x, Heartbeat) else encode_ticks([x]),
        )
        for n, x in enumerate(items)
    ]


def core_outputs(items: Sequence[Item], batches: list[list[Incoming]], lateness: int) -> list:
    config = AnalyticsConfig(allowed_lateness_ms=lateness)
    core = ProcessorCore(Topics("hb"), config, 1, clock_ms=lambda: T0)
    out = []
    for batch in batches:
        out += core.step(batch).messages
    # the exact rows and the late ticks (the desk's provisional path, and so whether a
    # signal was announced or retracted, may depend on the batching: live.py)
    rows = sorted((m.topic, m.key, m.value) for m in out if "status" not in orjson.loads(m.value))
    return [rows, core.analytics.ordering.watermarks(), dict(core.heartbeats)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=arrivals(), seed=st.integers(0, 2**32), lateness=st.sampled_from([0, 2_000]))
def test_the_core_gives_the_same_rows_and_late_ticks_in_any_batching(
    items: list[Item], seed: int, lateness: int
) -> None:
    msgs = messages(items)
    rnd = random.Random(seed)
    one_by_one = core_outputs(items, [[m] for m in msgs], lateness)
    batched = core_outputs(items, [list(b) for b in cut(msgs, rnd)], lateness)  # type: ignore[arg-type]
    whole = core_outputs(items, [msgs], lateness)
    assert one_by_one == batched == whole
