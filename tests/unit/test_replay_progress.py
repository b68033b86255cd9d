"""A replay's progress counts what the replay will publish: from its start line on, to 100%."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cli.progress import progress_printer
from producers.replay import ReplayConfig, count_lines, read_file, replay_total

T0 = 1_769_385_600_000  # 2026-01-26 00:00:00 UTC


def write(path: Path, rows: int, *, blank_every: int = 0, newline_at_end: bool = True) -> Path:
    lines = []
    for i in range(rows):
        lines.append(f"{T0 + i * 1000},XAU,{5000 + i}")
        if blank_every and i % blank_every == blank_every - 1:
            lines.append("  \r")
    path.write_text("ts,symbol,price\n" + "\n".join(lines) + ("\n" if newline_at_end else ""))
    return path


@pytest.mark.parametrize("start_line", [0, 1, 2, 3, 50, 101, 102, 500])
@pytest.mark.parametrize(("blank_every", "newline_at_end"), [(0, True), (7, True), (0, False)])
def test_count_lines_is_what_the_replay_yields(
    tmp_path: Path, start_line: int, blank_every: int, newline_at_end: bool
) -> None:
    path = write(tmp_path / "t.csv", 100, blank_every=blank_every, newline_at_end=newline_at_end)
    config = ReplayConfig(path, start_line=start_line)
    assert count_lines(path, start_line) == sum(1 for _ in read_file(config))
    assert replay_total(config) == count_lines(path, start_line)


def test_count_lines_across_chunks(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", 120_000, blank_every=997)  # several 1 MiB chunks
    assert count_lines(path) == 120_000
    assert count_lines(path, 100_000) == sum(1 for _ in read_file(ReplayConfig(path, 0, 100_000)))


def test_a_start_time_counts_the_ticks_from_it(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", 100)
    assert replay_total(ReplayConfig(path, start_ts_ms=T0 + 90_000)) == 10
    assert replay_total(ReplayConfig(path, start_line=95, start_ts_ms=T0 + 90_000)) == 7


def test_parquet_rows_from_the_start_line(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "t.parquet"
    table = pa.table(
        {"ts": [T0 + i for i in range(10)], "symbol": ["XAU"] * 10, "price": [1.0] * 10}
    )
    pq.write_table(table, path)
    for start in (0, 1, 4, 10, 11):
        expected = sum(1 for _ in read_file(ReplayConfig(path, start_line=start)))
        assert count_lines(path, start) == expected


def test_a_resumed_replay_ends_at_100_percent(tmp_path: Path) -> None:
    """The example file resumed at line 9990: 12 lines to publish (9990 to 10001)."""
    path = write(tmp_path / "t.csv", 10_000)
    total = count_lines(path, 9990)
    assert total == 12
    out = io.StringIO()
    report = progress_printer(total, of=" lines from line 9990", stream=out)
    report(total)  # the publisher's last call, with everything it read
    (line,) = out.getvalue().splitlines()
    assert line.startswith("  published 12/12 lines from line 9990 (100%), ")
    assert line.endswith(", eta 0s")
