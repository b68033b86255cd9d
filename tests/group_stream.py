"""A market of several symbol groups, out of order, for the scale-out tests.

Five groups on four partitions (murmur2 of the group's name, as the publisher keys them):
XAG+XAU (a divergence pair and a sync group) on 3, XPD+XPT (a pair) on 1, BTC on 2, SPX
on 0, and ETH, which shares partition 1 with XPD+XPT. Paired symbols move together with
noise of their own, so divergence windows open and close; every symbol arrives up to
1.5 s out of order (inside the default 2 s lateness), and about one tick in a hundred
comes 3 to 10 s late (the late_ticks table).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from tickstream.groups import GroupLayout
from tickstream.settings import Settings

T0 = 1_769_385_600_000  # 2026-01-26T00:00:00Z
START = {"XAU": 5000.0, "XAG": 105.0, "XPT": 2400.0, "XPD": 1900.0}
ALONE = {"BTC": 90_000.0, "SPX": 6900.0, "ETH": 3000.0}
DRIVER = {"XAG": "XAU", "XPD": "XPT"}  # follows the other side of its pair, with noise

SETTINGS: dict[str, Any] = {
    "partitions": 4,
    "divergence_pairs": "XAU/XAG,XPT/XPD",
    "sync_groups": "XAU+XAG",
    "level_steps": "XAU:100,1000;XAG:1,10;XPT:50;BTC:1000;SPX:100",
    "divergence_lookback_ms": 2 * 3_600_000,
    "divergence_return_horizon_ms": 5 * 60_000,
}
"""Settings of every component of a scale-out run (with kafka_bootstrap, namespace...)."""


def layout() -> GroupLayout:
    return GroupLayout.from_settings(Settings(**SETTINGS, metrics_port=0))


def ticks(
    seed: int = 7, minutes: int = 120, spacing_ms: int = 4_000
) -> list[tuple[int, str, float]]:
    """(ts_ms, symbol, price) in arrival order: each symbol's ticks about ``spacing_ms``
    apart over ``minutes``, delayed at random, all symbols interleaved by arrival."""
    rng = random.Random(seed)
    price = {**START, **ALONE}
    moves: dict[tuple[str, int], float] = {}  # (driver, minute) -> its move
    arrivals: list[tuple[int, int, int, str, float]] = []
    for symbol in [*START, *ALONE]:
        ts = T0 + rng.randrange(spacing_ms)
        while ts < T0 + minutes * 60_000:
            own = rng.gauss(0, 0.0006)
            driver = DRIVER.get(symbol)
            if driver is None:
                moves[(symbol, ts // 60_000)] = own
                move = own
            else:  # the pair's common move, plus a drift of its own
                move = moves.get((driver, ts // 60_000), 0.0) * 0.3 + own
            price[symbol] *= math.exp(move)
            delay = rng.randrange(1_500)
            if rng.random() < 0.01:
                delay = rng.randrange(3_000, 10_000)
            arrivals.append((ts + delay, len(arrivals), ts, symbol, round(price[symbol], 4)))
            ts += rng.randrange(spacing_ms // 2, spacing_ms * 3 // 2)
    arrivals.sort()
    return [(ts, symbol, p) for _, _, ts, symbol, p in arrivals]


def write_csv(path: Path, rows: list[tuple[int, str, float]]) -> Path:
    """The stream as a replay file (ts,symbol,price,bid,ask), in arrival order."""
    lines = ["ts,symbol,price,bid,ask"]
    for ts, symbol, price in rows:
        spread = price * 0.00002
        lines.append(f"{ts},{symbol},{price},{price - spread:.6f},{price + spread:.6f}")
    path.write_text("\n".join(lines) + "\n")
    return path
