"""Progress lines for long jobs: counts, rate and ETA, at most every two seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def progress_printer(
    total: int | None,
    label: str = "published",
    of: str = "",
    stream: TextIO | None = None,
) -> Callable[[int], None]:
    """A ``report(done)`` printing ``label done/total{of} (percent), rate, eta``.

    ``total`` is what the job will have done at its end (a replay resumed at a line: the
    lines from there on, and ``of`` says so, e.g. " lines from line 9990"), so the last
    line reads 100%; without a total, only the count and the rate.
    """
    started = time.monotonic()
    last = [0.0, -1]

    def report(done: int) -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        if done == last[1] or (now - last[0] < 2.0 and not final):
            return
        last[0], last[1] = now, done
        rate = done / max(now - started, 1e-9)
        out = stream or sys.stderr
        if total:
            eta = (total - done) / rate if rate and total > done else 0.0
            print(
                f"  {label} {done:,}/{total:,}{of} ({100.0 * done / total:.0f}%), "
                f"{rate:,.0f}/s, eta {eta:.0f}s",
                file=out,
            )
        else:
            print(f"  {label} {done:,}{of}, {rate:,.0f}/s", file=out)

    return report
