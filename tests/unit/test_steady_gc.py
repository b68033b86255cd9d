"""A service's collector, once started: what start-up built frozen, collections spaced out."""

from __future__ import annotations

import gc

from tickstream.steady_gc import OLDER_THRESHOLDS, YOUNG_THRESHOLD, steady_gc


def test_start_up_is_frozen_and_young_collections_are_spaced_out() -> None:
    before = gc.get_threshold()
    built_at_start_up = [[i] for i in range(1_000)]  # containers the collector tracks
    try:
        steady_gc()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
        assert gc.get_freeze_count() >= len(built_at_start_up)
        cycle: list[object] = []
        cycle.append(cycle)  # a cycle made after start-up is still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
