"""The replay source on its own: CSV and Parquet files, resume points, bad lines."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from producers.replay import ReplayConfig, ReplayFileError, count_lines, earliest_ts_ms, read_file
from producers.validation import ValidationConfig, Validator

T0 = 1_769_385_600_000


def decide(path: Path, **kw: object) -> tuple[list[tuple], list[tuple]]:
    validator = Validator(ValidationConfig(), now_ms=lambda: T0 + 10**9)
    accepted, rejected = [], []
    for raw in read_file(ReplayConfig(path, **kw)):  # type: ignore[arg-type]
        v = validator.feed(raw)
        accepted += [(t.symbol, t.ts_ms, t.price, t.bid) for t in v.accepted]
        rejected += [(r.position, r.reason) for r in v.rejected]
    v = validator.finish()
    accepted += [(t.symbol, t.ts_ms, t.price, t.bid) for t in v.accepted]
    return accepted, rejected


def test_parquet_replay_with_timestamps_and_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    ts = [datetime.fromtimestamp((T0 + i * 1000) / 1000, UTC) for i in range(4)]
    table = pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "symbol": ["XAU", "XAU", "XAG", "XAU"],
            "price": [5000.0, 5001.0, -1.0, 5002.0],
            "bid": [4999.5, None, None, 5001.5],
        }
    )
    pq.write_table(table, path, row_group_size=2)
    accepted, rejected = decide(path)
    assert accepted == [
        ("XAU", T0, 5000.0, 4999.5),
        ("XAU", T0 + 1000, 5001.0, None),
        ("XAU", T0 + 3000, 5002.0, 5001.5),
    ]
    assert rejected == [("row 3", "invalid_price")]
    assert count_lines(path) == 4
    assert earliest_ts_ms(ReplayConfig(path)) == T0


def test_csv_resume_from_line_and_time(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = [f"{T0 + i * 1000},XAU,{5000 + i}" for i in range(10)]
    path.write_text("ts,symbol,price\n" + "\n".join(rows) + "\n")
    by_line, _ = decide(path, start_line=7)  # file line 7 = the 6th data row
    assert [a[1] for a in by_line] == [T0 + i * 1000 for i in range(5, 10)]
    by_time, _ = decide(path, start_ts_ms=T0 + 8_000)
    assert [a[1] for a in by_time] == [T0 + 8_000, T0 + 9_000]


def test_file_without_required_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("time,sym,px\n1,XAU,2\n")
    with pytest.raises(ReplayFileError, match="lacks ts, symbol, price"):
        list(read_file(ReplayConfig(path)))


def test_csv_with_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    """Spreadsheets write a BOM and CRLF line ends: the header must still be recognised."""
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfts,symbol,price\r\n" + f"{T0},XAU,5000.5\r\n".encode())
    accepted, rejected = decide(path)
    assert accepted == [("XAU", T0, 5000.5, None)] and rejected == []
