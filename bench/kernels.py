"""Throughput of the analytics kernels on a seeded random stream (figures, not tests).

Run: ``.venv/bin/python bench/kernels.py [--ticks 1000000] [--batch 5000] [--seed 7]``.
Ticks are built before timing; each kernel gets the same batches, per-symbol time
ordered and interleaved across symbols, as the pipeline hands them over.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from processors.kernels.divergence import DivergenceKernel
from processors.kernels.records import RecordKernel
from processors.kernels.rolling import RollingKernel
from tickstream.model import Tick

SYMBOLS = {"XAU": 4_000.0, "XAG": 50.0, "EURUSD": 1.08, "BTCUSD": 90_000.0}
START_MS = 1_760_000_000_000  # October 2025


def make_stream(n_ticks: int, seed: int) -> list[Tick]:
    """A random walk per symbol (~1 tick/s each, 5e-5 relative noise), randomly merged."""
    rnd = random.Random(seed)
    ts = dict.fromkeys(SYMBOLS, START_MS)
    price = dict(SYMBOLS)
    names = list(SYMBOLS)
    ticks: list[Tick] = []
    for _ in range(n_ticks):
        symbol = rnd.choice(names)
        ts[symbol] += int(rnd.expovariate(1 / 1_000))
        price[symbol] *= 1 + rnd.gauss(0, 5e-5)
        ticks.append(Tick(symbol, ts[symbol], round(price[symbol], 4)))
    return ticks


def run(
    make: Callable[[], Any], batches: Sequence[Sequence[Tick]], watermarks: list[dict[str, int]]
) -> tuple[float, int]:
    kernels = make()
    if not isinstance(kernels, list):
        kernels = [kernels]
    rows = 0
    gc.collect()
    start = time.perf_counter()
    for batch, marks in zip(batches, watermarks, strict=True):
        for kernel in kernels:
            rows += len(kernel.update(batch, marks))
    for kernel in kernels:
        rows += len(kernel.flush())
    return time.perf_counter() - start, rows


def main(n_ticks: int = 1_000_000, batch: int = 5_000, seed: int = 7, repeat: int = 3) -> None:
    ticks = make_stream(n_ticks, seed)
    batches = [ticks[i : i + batch] for i in range(0, len(ticks), batch)]
    seen: dict[str, int] = {}
    watermarks = []
    for b in batches:
        for tick in b:
            seen[tick.symbol] = tick.ts_ms
        watermarks.append(dict(seen))
    days = (max(t.ts_ms for t in ticks) - START_MS) / 86_400_000
    print(f"{n_ticks:,} ticks, {len(SYMBOLS)} symbols, {days:.1f} days, batches of {batch:,}")
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("rolling (1h/1d/7d/52w)", RollingKernel),
        ("records (ath/atl/levels/sync)", RecordKernel),
        ("divergence (XAU/XAG)", DivergenceKernel),
        ("all three", lambda: [RollingKernel(), RecordKernel(), DivergenceKernel()]),
    ]
    for name, make in cases:
        best, rows = min(run(make, batches, watermarks) for _ in range(repeat))
        print(f"  {name:<31} {n_ticks / best / 1e6:6.2f} M ticks/s  ({best:.3f} s, {rows:,} rows)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    main(args.ticks, args.batch, args.seed, args.repeat)
