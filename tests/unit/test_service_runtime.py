"""A service's interpreter, once started: what start-up built frozen, collections spaced
out, threads switched sooner."""

from __future__ import annotations

import gc
import sys

from tickstream.service_runtime import (
    OLDER_THRESHOLDS,
    SWITCH_INTERVAL_S,
    YOUNG_THRESHOLD,
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
