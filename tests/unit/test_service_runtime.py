"""A service's interpreter, once started: what start-up built frozen, collections spaced
out, threads switched sooner."""

from __future__ import annotations

import gc
import sys

from tickstream.service_runtime import (
    OLDER_THRESHOLDS,
    SWITCH_INTERVAL_S,
    YOUNG_THRESHOLD,
    PacedCollections,
    tune_for_latency,
)


def test_start_up_is_frozen_collections_spaced_out_threads_switched_sooner() -> None:
    before = gc.get_threshold()
    switch_before = sys.getswitchinterval()
    built_at_start_up = [[i] for i in range(1_000)]  # containers the collector tracks
    sys.setswitchinterval(0.005)  # Python's default: an earlier test may have tuned this process
    try:
        tune_for_latency()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
        assert gc.get_freeze_count() >= len(built_at_start_up)
        cycle: list[object] = []
        cycle.append(cycle)  # a cycle made after start-up is still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        sys.setswitchinterval(switch_before)


def test_young_collections_come_at_their_pace_and_a_full_one_seldom() -> None:
    now = [0.0]
    collected: list[int] = []
    collect_when_due = PacedCollections(
        young_every_s=2.0, full_every_s=100.0, clock=lambda: now[0], collect=collected.append
    )
    for half_s in range(421):  # the loop comes by every 0.5 s for 210 s (exact in binary)
        now[0] = half_s / 2
        collect_when_due()
    assert collected.count(2) == 2  # at 100 s and 200 s
    assert len(collected) == 210 // 2  # every 2 s, the full ones included
    now[0] += 1.5
    collect_when_due()  # not due yet
    assert len(collected) == 210 // 2


def test_a_paced_young_collection_is_a_real_one() -> None:
    seen: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    collect_when_due = PacedCollections(young_every_s=0.0, full_every_s=3_600.0)
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection in between: only the pacer's is seen
    gc.callbacks.append(record)
    try:
        collect_when_due()
    finally:
        gc.callbacks.remove(record)
        if was_enabled:
            gc.enable()
    assert seen == [0]
