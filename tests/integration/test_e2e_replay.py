"""End to end: `tickstream run --replay FILE --until-drained` on the real broker and chDB.

The expected rows are computed here, independently of the kernels, straight
from the file: every valid tick in `ticks`, bars by grouping per symbol and
minute in event-time order, late ticks apart, bad lines in `rejected_ticks`.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pytest

from tests.replaying import replay_until_drained

START_MS = 1_769_385_600_000  # 2026-01-26T00:00:00Z
N_VALID = 10_000


def write_csv(path: Path, seed: int = 7) -> dict[str, object]:
    """10,000 valid ticks (jittered within the lateness, a few far too late) plus bad lines."""
    rng = random.Random(seed)
    price = {"XAU": 4_990.0, "XAG": 105.0}
    base = dict.fromkeys(price, START_MS)
    valid: list[tuple[int, int, str, float]] = []  # (line, ts_ms, symbol, price)
    bad: dict[int, str] = {}
    lines = ["ts,symbol,price"]
    late_at = {2_500, 6_000, 9_100}
    while len(valid) < N_VALID:
        line_no = len(lines) + 1
        if line_no in (1_234, 5_678):
            lines.append("this is not a tick")
            bad[line_no] = "malformed"
            continue
        if line_no == 3_000:
            lines.append(f"{START_MS + 1},XAU,not-a-price")
            bad[line_no] = "malformed"
            continue
        if line_no == 7_000:
            lines.append(f"{START_MS + 2},XAG,-3.5")
            bad[line_no] = "invalid_price"
            continue
        sym = rng.choice(["XAU", "XAG"])
        price[sym] = round(price[sym] * (1 + rng.gauss(0, 0.0004)), 4)
        base[sym] += rng.randint(100, 4_000)
        ts = base[sym] - rng.randint(0, 1_500)
        if len(valid) in late_at:
            ts = base[sym] - 600_000  # ten minutes behind: beyond the 2 s lateness
        text_ts = (
            datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
            if rng.random() < 0.3
            else str(ts)
        )
        lines.append(f"{text_ts},{sym},{price[sym]}")
        valid.append((line_no, ts, sym, price[sym]))
    path.write_text("\n".join(lines) + "\n")
    return {"valid": valid, "bad": bad}


def expected_rows(valid: list[tuple[int, int, str, float]], lateness_ms: int = 2_000):
    newest: dict[str, int] = {}
    kept, late = [], []
    for line, ts, sym, price in valid:
        if sym in newest and ts < newest[sym] - lateness_ms:
            late.append((sym, ts, price))
            continue
        newest[sym] = max(newest.get(sym, ts), ts)
        kept.append((ts, line, sym, price))
    kept.sort()
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for ts, _line, sym, price in kept:
        groups[(sym, ts - ts % 60_000)].append(price)
    bars = sorted(
        (sym, start, g[0], max(g), min(g), g[-1], len(g)) for (sym, start), g in groups.items()
    )
    return bars, sorted(late)


def ms(value: datetime) -> int:
    """chDB returns DateTime64('UTC') as naive UTC datetimes."""
    return round(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000)


@pytest.mark.kafka
def test_replay_until_drained_writes_exact_rows(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    csv_path = tmp_path / "ticks.csv"
    truth = write_csv(csv_path)
    chdb_dir = tmp_path / "chdb"
    proc = replay_until_drained(csv_path, chdb_dir, kafka_bootstrap, namespace)
    # bad lines are reported with their line numbers and do not stop the run
    for line_no in truth["bad"]:  # type: ignore[union-attr]
        assert f"line {line_no}:" in proc.stderr

    count = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "query",
            "SELECT count() FROM tickstream.ticks",
            "--clickhouse-url",
            f"chdb://{chdb_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert count.returncode == 0, count.stderr
    assert count.stdout.strip() == str(N_VALID)

    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_dir}")
    try:
        valid = truth["valid"]  # type: ignore[assignment]
        got_ticks = sorted(
            (s, ms(t), p)
            for s, t, p in client.query(
                "SELECT symbol, ts, price FROM tickstream.ticks FINAL"
            ).result_rows
        )
        assert got_ticks == sorted((sym, ts, price) for _l, ts, sym, price in valid)

        bars, late = expected_rows(valid)
        got_bars = sorted(
            (s, ms(t), o, h, lo, c, n)
            for s, t, o, h, lo, c, n in client.query(
                "SELECT symbol, ts, open, high, low, close, ticks FROM tickstream.bars_1m"
            ).result_rows
        )
        assert got_bars == bars
        got_late = sorted(
            (s, ms(t), p)
            for s, t, p in client.query(
                "SELECT symbol, ts, price FROM tickstream.late_ticks"
            ).result_rows
        )
        assert got_late == late and len(late) == 3

        rejected = dict(
            client.query("SELECT position, reason FROM tickstream.rejected_ticks").result_rows
        )
        assert rejected == {f"line {n}": r for n, r in truth["bad"].items()}  # type: ignore[union-attr]
    finally:
        client.close()
