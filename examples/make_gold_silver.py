"""Write examples/gold_silver_2026-01-26.csv: a synthetic replay shaped like the seed story.

Gold climbs from about $4,960 through $5,000 during Asian hours on 26 January
2026 (intraday high near $5,052) while silver runs from about $103 through its
record above $107. Prices are a seeded random walk with a drift toward those
marks, so the file is reproducible: `python examples/make_gold_silver.py`.
"""

from __future__ import annotations

import random
from pathlib import Path

START_MS = 1_769_385_600_000  # 2026-01-26T00:00:00Z
HOURS = 8
N = 10_000


def main() -> None:
    path = Path(__file__).with_name("gold_silver_2026-01-26.csv")
    rng = random.Random(20260126)
    targets = {"XAU": (4_962.0, 5_048.0), "XAG": (103.2, 107.4)}
    price = {s: a for s, (a, _) in targets.items()}
    span_ms = HOURS * 3_600_000
    rows = ["ts,symbol,price,bid,ask"]
    ts = START_MS
    for i in range(N):
        ts += rng.randint(1, 2 * span_ms // N)
        sym = "XAU" if rng.random() < 0.55 else "XAG"
        start, end = targets[sym]
        goal = start + (end - start) * min(1.0, (ts - START_MS) / span_ms)
        price[sym] += (goal - price[sym]) * 0.02 + rng.gauss(0, goal * 0.00025)
        half = 0.15 if sym == "XAU" else 0.01
        p = round(price[sym], 2 if sym == "XAU" else 3)
        rows.append(f"{ts},{sym},{p},{p - half:.3f},{p + half:.3f}")
        del i
    path.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
