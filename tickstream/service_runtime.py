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

The processor and the publisher also pace their young collections (``PacedCollections``,
below).

Called by each service's entry point, not at import.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable

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


YOUNG_EVERY_S = 0.02
FULL_EVERY_S = 300.0


class PacedCollections:
    """Young collections at a steady pace from a service's own loop; a full one seldom.

    Why. The processor holds every tick of its allowed lateness (2 s: 40,000 ticks at
    20k ticks/s), each a tick and its entry in the held list. A young collection comes
    when the net allocations since the last reach the threshold: every few seconds, and
    then it scans every object made since and still alive, all those held ticks. Their
    objects were made far apart in memory, so each visit is a cache miss, and it took
    47-86 ms, stopping the processor. Timed against the slowest record breaks of
    ``tickstream bench latency`` at 20k ticks/s (three runs), such a pause was behind 2 of
    the 3 slowest in each run, and each pause delayed about two breaks.

    Paced at ``young_every_s`` from the loop, between batches (none half-processed), a
    young collection finds only the ticks held since the last: 400 at 20k ticks/s, mostly
    under a millisecond. It adds no work: each held tick is still scanned once
    while young. Those it finds alive move to the older generation, which only a full
    collection scans again, so that comes seldom (``full_every_s``), and cycles made
    garbage after their first young collection wait for it: memory, against the desk's
    milliseconds. The automatic collections stay as they are, for a loop that stalls.
    Measured in three alternating pairs at 20k ticks/s: the processor's longest pause 7-9
    ms instead of 35-61, provisional max 24-25 ms instead of 45-53, p99 14.5-16.8 instead
    of 16.5-17.2.

    The publisher's loop paces its own for the same reason, smaller: the identities it
    remembers for duplicates (5 minutes of ticks) made a young collection every 2.4 s at
    20k ticks/s, of 5-10 ms. Paced, none over 1.2 ms in three runs (9-13 over 5 ms
    before).
    """

    def __init__(
        self,
        young_every_s: float = YOUNG_EVERY_S,
        full_every_s: float = FULL_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[int], object] = gc.collect,
    ) -> None:
        self._young_every_s = young_every_s
        self._full_every_s = full_every_s
        self._clock = clock
        self._collect = collect
        now = clock()
        self._next_young = now + young_every_s
        self._next_full = now + full_every_s

    def __call__(self) -> None:
        """Collect if one is due (call between two batches of the loop)."""
        now = self._clock()
        if now < self._next_young:
            return
        self._next_young = now + self._young_every_s
        if now >= self._next_full:
            self._next_full = now + self._full_every_s
            self._collect(2)
        else:
            self._collect(0)
