"""The interpreter of each long-running service, tuned for the desk's latency.

Garbage collection. CPython's default thresholds (700, 10, 10) run a young collection
every 700 net allocations and a full one every 100 young ones, and every collection
stops each thread of the process. At 20k ticks/s the processor holds 2 s of ticks (its
allowed lateness) and its state, so objects survive long enough to be promoted and
scanned again and again: in ``tickstream bench latency`` its full collections took
40-80 ms each, a few seconds apart, and young ones up to 13 ms; every signal in flight
waited for them. So each service, once started, freezes what start-up built (modules,
settings, seeds: never garbage, never scanned again) and collects young objects every
50,000 net allocations rather than 700. Cycles are still collected, later; memory for
them is cheap next to a desk's millisecond.

Thread switches. A thread that wants the interpreter waits until the one holding it lets
go, at the latest after the switch interval: 5 ms by default. The processor's event loop
shares the interpreter with Faust's consumer thread and the snapshot encoder, so a tick
could wait 5 ms at each hand-over. At 0.5 ms, ``tickstream bench latency`` (two runs
each way, alternated) gave record breaks a p99 of 23-25 ms instead of 27-34 at 5k
ticks/s, and 57-58 instead of 72-95 at 20k; 0.2 ms was worse again (more switches).

Called by each service's entry point, not at import.
"""

from __future__ import annotations

import gc
import sys

YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLDS = (20, 100)
SWITCH_INTERVAL_S = 0.0005


def tune_for_latency() -> None:
    """Freeze the objects built so far, space the collections out and let threads take
    turns sooner (see the module)."""
    gc.collect()  # what start-up left as garbage is not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
