"""Progress lines for long jobs: counts, rate and ETA, at most every two seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def progress_printer(total: int | None, label: str = "published") -> Callable[[int], None]:
    started = time.monotonic()
    last = [0.0, -1]

    def report(done: int) -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        if done == last[1] or (now - last[0] < 2.0 and not final):
            return
        last[0], last[1] = now, done
        rate = done / max(now - started, 1e-9)
        if total:
            eta = (total - done) / rate if rate and total > done else 0.0
            print(
                f"  {label} {done:,}/{total:,} ({100.0 * done / total:.0f}%), "
                f"{rate:,.0f}/s, eta {eta:.0f}s",
                file=sys.stderr,
            )
        else:
            print(f"  {label} {done:,}, {rate:,.0f}/s", file=sys.stderr)

    return report
