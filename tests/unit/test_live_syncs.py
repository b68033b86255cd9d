"""The provisional sync watch forgets exactly the ATH events the exact kernel took.

Pruning looks at a group's events only when the group's limit (the oldest of its members'
watermarks) moved; these pin down that this skips nothing: an event noted below the last
prune's limit is still forgotten, and a member without ticks keeps every event.
"""

from __future__ import annotations

from processors.kernels.live_syncs import SyncWatch
from processors.kernels.ordering import Reorderer
from processors.kernels.records import RecordConfig, RecordKernel
from tickstream.contracts import RecordBreak


def ath(ts_ms: int) -> RecordBreak:
    return RecordBreak("XAU", "ath", ts_ms, 5_000.0 + ts_ms, 4_999.0, 0.0, 0, 0.0, 1)


def left(watch: SyncWatch) -> list[int]:
    (group,) = watch.snapshot()
    return [ts for ts, _price, _recv in group["events"]["XAU"]]


def test_events_below_the_groups_limit_go_however_late_they_were_noted() -> None:
    watch = SyncWatch(RecordKernel(RecordConfig(sync_groups=(("XAU", "XAG"),))), Reorderer(0))
    watch.note([ath(100), ath(200)], recv_ms=1)
    watch.prune({"XAU": 300, "XAG": 150}, final=False)
    assert left(watch) == [200]
    watch.prune({"XAU": 400}, final=False)  # XAG unknown: the group waits for it
    assert left(watch) == [200]
    watch.note([ath(120)], recv_ms=2)  # below the limit already pruned at
    watch.prune({"XAU": 400, "XAG": 150}, final=False)  # the same limit again
    assert left(watch) == [200]
    watch.prune({"XAU": 400, "XAG": 250}, final=False)
    assert left(watch) == []
    watch.note([ath(500)], recv_ms=3)
    watch.prune({}, final=True)
    assert left(watch) == []
