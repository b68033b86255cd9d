"""The latency bench counts a signal once per status, by its id (bench/latency.py)."""

from __future__ import annotations

from bench.latency import Frame, distinct_frames


def frame(sid: str, status: str, now: float = 1.0) -> Frame:
    # gold crossing $6,000: the $100 and the $1,000 level rows share all of these fields
    return (now, sid, "XAU", "level_up", 1_000, 6000.0, status, 990, 995)


def test_two_signals_on_one_tick_are_both_kept_and_a_repeat_is_dropped() -> None:
    frames = [
        frame("level-100", "provisional"),
        frame("level-1000", "provisional"),
        frame("level-100", "provisional", now=2.0),  # delivered again
        frame("level-100", "confirmed"),
    ]
    kept, repeats = distinct_frames(frames)
    assert [(f[1], f[6], f[0]) for f in kept] == [
        ("level-100", "provisional", 1.0),
        ("level-1000", "provisional", 1.0),
        ("level-100", "confirmed", 1.0),
    ]
    assert repeats == 1
