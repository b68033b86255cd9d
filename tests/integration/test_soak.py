"""`tickstream soak`, briefly: one minute of hostile inputs with the processor, the sink and
the broker each killed (SIGKILL) and restarted, then the accounting.

The soak owns its broker (a free port, fresh storage in the work directory), runs the
processor and the sink as children and checks by itself that every input is in ``ticks``
xor ``rejected_ticks`` and that every table equals the pure kernels' reference; it exits
1 when anything is lost, doubled or different. Here its figures are read back too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import TableCheck, account, compare


def figure(text: str, label: str) -> int:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d,]+)", text, re.MULTILINE)
    assert match, f"no {label!r} in the soak's output:\n{text[-3000:]}"
    return int(match[1].replace(",", ""))


@pytest.mark.kafka
def test_soak_one_minute_with_kills(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "cli", "soak", "--minutes", "1", "--kill-every", "8",
        "--seed", "3", "--workdir", str(tmp_path / "soak"),
    ]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False
    )
    out = proc.stdout
    print(out)
    assert proc.returncode == 0, out[-5000:] + proc.stderr[-3000:]
    assert "soak: OK" in out
    kills = re.search(r"kills survived\s+processor (\d+), sink (\d+), broker (\d+)", out)
    assert kills, out[-3000:]
    assert all(int(n) >= 1 for n in kills.groups()), f"not every component was killed: {kills[0]}"
    assert figure(out, "inputs") > 80_000
    for label in ("rows lost", "rows doubled", "rows differing", "inputs in neither table"):
        assert figure(out, label) == 0, label
    for reason in ("malformed", "invalid_price", "duplicate", "future_ts", "spike"):
        assert figure(out, reason) > 0, reason
    late = re.search(r"^\s*late_ticks\s+([\d,]+)\s+([\d,]+)", out, re.MULTILINE)
    assert late and int(late[1].replace(",", "")) > 0, "no late ticks: the check would be weak"


def tick_row(seq: int) -> tuple[object, ...]:
    return ("XAU", 1_769_385_600_000 + seq, 5_000.0 + seq, None, None, None, None, seq, None)


def test_the_accounting_sees_lost_and_doubled_inputs() -> None:
    """The soak's checks can fail: an input in neither table, one in both, a duplicate's
    group, a row twice, a row missing, a row changed, a row nobody expected."""
    registry = [
        ("replay:x", "line 2", 1),
        ("replay:x", "line 3", 2),
        ("replay:x", "line 4", 2),  # an exact duplicate of line 3 (rejected: fine)
        ("replay:x", "line 5", None),  # malformed, rejected: fine
        ("replay:x", "line 6", 3),  # in ticks and rejected: doubled
        ("replay:x", "line 7", 4),  # in neither: lost
        ("replay:x", "line 8", None),  # unreadable and not rejected: lost
    ]
    ticks = [tick_row(1), tick_row(2), tick_row(3), tick_row(9)]  # seq 9: no such input
    rejected = [
        ("replay:x", "line 4", "duplicate"),
        ("replay:x", "line 5", "malformed"),
        ("replay:x", "line 6", "spike"),
    ]
    acc = account(registry, ticks, rejected)
    assert (acc.lost, acc.doubled, acc.unexplained) == (2, 1, 1)
    assert (acc.in_ticks, acc.in_rejected) == (3, 3)
    assert account(registry[:4], ticks[:2], rejected[:2]).examples == []  # all in order

    check = TableCheck("bars_1m")
    expected = {("XAU", n): ("XAU", n, 1.0) for n in range(4)}
    table = [("XAU", 0, 1.0), ("XAU", 0, 1.0), ("XAU", 1, 1.5), ("XAU", 2, 1.0), ("XAU", 7, 1.0)]
    compare(check, expected, table, plain_count=len(table) + 1, identity=lambda r: r[:2])
    assert (check.lost, check.extra, check.differ) == (1, 1, 1)  # minute 3; minute 7; minute 1
    assert check.doubled == 1 + 1  # twice in FINAL; one more in a plain read than in FINAL
    assert not check.ok
