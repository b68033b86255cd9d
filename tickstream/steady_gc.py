"""Garbage collection tuned for a long-running service on the desk's path.

CPython's default thresholds (700, 10, 10) run a young collection every 700 net
allocations and a full one every 100 young ones, and every collection stops each thread
of the process. At 20k ticks/s the processor holds 2 s of ticks (its allowed lateness)
and its state, so objects survive long enough to be promoted and scanned again and
again: in ``tickstream bench latency`` its full collections took 40-80 ms each, a few
seconds apart, and young ones up to 13 ms; every signal in flight waited for them.

So each service, once started, freezes what start-up built (modules, settings, seeds:
never garbage, never scanned again) and collects young objects every 50,000 net
allocations rather than 700. Cycles are still collected, later; memory for them is
cheap next to a desk's millisecond. Called by each service's entry point, not at import.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 100)


def steady_gc() -> None:
    """Freeze the objects built so far and space the collections out (see the module)."""
    gc.collect()  # what start-up left as garbage is not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
