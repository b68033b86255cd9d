"""Replays through the whole pipeline, checked on what the analytics may and may not say.

- a 10x fat-finger spike in the middle of a file is rejected as 'spike' and leaves no
  record break or level crossing behind, while the rest of the file is processed;
- the analytic tables do not depend on how many partitions the topics have.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.replaying import read_tables, replay_until_drained

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gold_silver_2026-01-26.csv"
T0 = 1_769_385_600_000
ANALYTIC = {
    "bars_1m": "symbol, ts, open, high, low, close, ticks",
    "rolling_highs": "symbol, window, ts, high, high_ts, low, low_ts",
    "record_breaks": "symbol, kind, ts, price, level, step, prev_ts, since_prev_s, first_time",
    "divergence_windows": "pair, metric, direction, opened_at, closed_at, open_value, "
    "peak_value, peak_at, close_value",
}


def test_spike_is_rejected_and_breaks_nothing(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    lines = ["ts,symbol,price"]
    for i in range(600):  # gold creeping up from 4,950 to ~4,980: below 5,000 all along
        lines.append(f"{T0 + i * 1_000},XAU,{4_950 + i * 0.05:.2f}")
        if i == 300:
            lines.append(f"{T0 + i * 1_000 + 500},XAU,49800.00")  # fat finger: 10x
    csv = tmp_path / "spike.csv"
    csv.write_text("\n".join(lines) + "\n")
    seeds = tmp_path / "seeds.json"
    seeds.write_text(
        '{"XAU": {"ath": 5100.0, "ath_ts": "2025-12-01T00:00:00Z",'
        ' "atl": 250.0, "atl_ts": "1999-07-20T00:00:00Z"}}'
    )
    chdb = tmp_path / "chdb"
    replay_until_drained(csv, chdb, kafka_bootstrap, namespace, "--record-seeds", str(seeds))
    got = read_tables(
        chdb,
        {
            "rejected": "SELECT position, reason, raw FROM tickstream.rejected_ticks FINAL",
            "ticks": "SELECT count(), max(price) FROM tickstream.ticks FINAL",
            "breaks": "SELECT kind, price, level FROM tickstream.record_breaks FINAL",
            "bars": "SELECT max(high), sum(ticks) FROM tickstream.bars_1m FINAL",
        },
    )
    assert got["rejected"] == [("line 303", "spike", f"{T0 + 300_500},XAU,49800.00")]
    assert got["ticks"] == [(600, pytest.approx(4_950 + 599 * 0.05))]
    # seeded ATH 5,100: nothing here is a record, and the spike crossed no level
    assert got["breaks"] == []
    assert got["bars"] == [(pytest.approx(4_950 + 599 * 0.05), 600)]


def test_analytics_do_not_depend_on_partitions(kafka_bootstrap: str, tmp_path: Path) -> None:
    queries = {t: f"SELECT {cols} FROM tickstream.{t} FINAL" for t, cols in ANALYTIC.items()}
    results = []
    for partitions in (1, 4):
        chdb = tmp_path / f"p{partitions}" / "chdb"

        replay_until_drained(
            EXAMPLE,
            chdb,
            kafka_bootstrap,
            f"parts{partitions}{uuid.uuid4().hex[:8]}",
            "--partitions",
            str(partitions),
            "--record-seeds",
            str(ROOT / "examples" / "record-seeds.json"),
        )
        results.append(read_tables(chdb, queries))
    one, many = results
    assert all(one[t] for t in ANALYTIC), {t: len(one[t]) for t in ANALYTIC}
    for table in ANALYTIC:
        assert one[table] == many[table], table
