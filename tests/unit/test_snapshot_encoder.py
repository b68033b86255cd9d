"""The processor's snapshot encoder against the plain snapshot, on random streams.

The encoder reuses the chunks of held ticks it encoded last time; what it writes must
still be exactly the state as of now: after releases, late ticks inserted between held
ones, duplicates, and a restore (whose held ticks are equal to, not the same objects as,
the ones a memo holds).
"""

from __future__ import annotations

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
