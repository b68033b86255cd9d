"""The processor's snapshot encoder against the plain snapshot, on random streams.

The encoder reuses the chunks of held ticks it encoded last time; what it writes must
still be exactly the state as of now: after releases, late ticks inserted between held
ones, duplicates, and a restore (whose held ticks are equal to, not the same objects as,
the ones a memo holds).
"""

from __future__ import annotations

from collections.abc import Generator

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core import SnapshotEncoder, decode_state
from processors.kernels.analytics import Analytics, AnalyticsConfig
from tickstream.model import Tick

T0 = 1_767_225_600_000
LATENESS_MS = 5_000


@st.composite
def batches(draw: st.DrawFn) -> list[list[Tick]]:
    """Two symbols, mostly forward a second or less at a time, some ticks stamped back
    (late, or held among others), some repeated; cut into batches."""
    n = draw(st.integers(1, 300))
    clock = {"XAU": T0, "XAG": T0}
    ticks: list[Tick] = []
    for _ in range(n):
        symbol = draw(st.sampled_from(["XAU", "XAG"]))
        step = draw(st.integers(-6_000, 1_000))
        if step >= 0:
            clock[symbol] += step
        price = float(draw(st.integers(90, 110)))
        ticks.append(Tick(symbol, clock[symbol] + min(step, 0), price, recv_ms=T0))
        if draw(st.integers(0, 9)) == 0:
            ticks.append(ticks[-1])
    cuts = sorted(set(draw(st.lists(st.integers(0, len(ticks)), max_size=30))))
    bounds = [0, *cuts, len(ticks)]
    return [ticks[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if a < b]


def plain(analytics: Analytics) -> object:
    return orjson.loads(orjson.dumps(analytics.snapshot()))


@settings(max_examples=150, deadline=None)
@given(batches(), st.sampled_from([1, 2, 5, 64]), st.integers(0, 30))
def test_every_snapshot_equals_the_plain_state(
    steps: list[list[Tick]], chunk: int, restore_at: int
) -> None:
    config = AnalyticsConfig(allowed_lateness_ms=LATENESS_MS)
    analytics = Analytics(config)
    encoder = SnapshotEncoder(chunk)
    for i, batch in enumerate(steps):
        analytics.update(batch)
        blob = encoder.encode({"analytics": analytics.snapshot(deferred=True)})
        assert decode_state(blob)["analytics"] == plain(analytics)
        if i == restore_at:  # the memo now holds ticks equal to the restored ones
            analytics = Analytics(config)
            analytics.restore(decode_state(blob)["analytics"])
    analytics.flush()
    assert decode_state(encoder.encode({"analytics": analytics.snapshot(deferred=True)}))[
        "analytics"
    ] == plain(analytics)


def held_market(n: int) -> Analytics:
    """``n`` ticks of one symbol a millisecond apart, all within the lateness: all held."""
    analytics = Analytics(AnalyticsConfig(allowed_lateness_ms=LATENESS_MS))
    analytics.update([Tick("XAU", T0 + i, 100.0 + i % 7, recv_ms=T0) for i in range(n)])
    return analytics


def steps_taken(steps: Generator[None, None, bytes]) -> tuple[int, bytes]:
    taken = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return taken, done.value
        taken += 1


def test_each_step_encodes_one_chunk_and_reused_chunks_take_none() -> None:
    """The steps are the unit the processor's event loop gives way at: each must be one
    chunk's work, however many ticks are held, and what is reused costs no step."""
    chunk = 64
    analytics = held_market(10 * chunk + 5)
    encoder = SnapshotEncoder(chunk)
    state = {"analytics": analytics.snapshot(deferred=True)}
    taken, blob = steps_taken(encoder.steps(state))
    assert taken == 11  # ten whole chunks and the five left over
    assert decode_state(blob)["analytics"] == plain(analytics)
    taken, again = steps_taken(encoder.steps({"analytics": analytics.snapshot(deferred=True)}))
    assert (taken, again) == (0, blob)  # nothing changed: every chunk reused
    analytics.update([Tick("XAU", T0 + 10 * chunk + 5, 101.0, recv_ms=T0)])
    taken, blob = steps_taken(encoder.steps({"analytics": analytics.snapshot(deferred=True)}))
    assert taken == 1  # only the last chunk, which the new tick joined
    assert decode_state(blob)["analytics"] == plain(analytics)
