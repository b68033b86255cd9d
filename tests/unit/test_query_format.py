"""`tickstream query`'s output: ClickHouse's way of showing values, one line per row, and a
table's header even when no row came back."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from cli.query_format import cell, table_lines, tsv_lines


def test_times_print_as_clickhouse_shows_datetime64() -> None:
    at = datetime(2026, 1, 26, 6, 50, 38, 92_000, tzinfo=UTC)
    assert cell(at) == "2026-01-26 06:50:38.092"  # never Python's 06:50:38.092000
    assert cell(at.replace(microsecond=0)) == "2026-01-26 06:50:38"
    assert cell(at.replace(microsecond=92_500)) == "2026-01-26 06:50:38.092500"  # DateTime64(6)
    assert cell(date(2026, 1, 26)) == "2026-01-26"


def test_other_values() -> None:
    assert cell(None) == "\\N"
    assert cell(5000.0) == "5000.0" and cell(107.002) == "107.002" and cell(1) == "1"
    assert cell(Decimal("1.500")) == "1.500"
    assert cell([1, 2]) == "[1,2]"
    assert cell(["a'b", None]) == "['a\\'b',NULL]"
    assert cell([datetime(2026, 1, 26, 6, 50, 38, 92_000)]) == "['2026-01-26 06:50:38.092']"


def test_tsv_keeps_one_line_per_row() -> None:
    rows = [
        ("XAU", datetime(2026, 1, 26, 2, 54, 47, 209_000), 5001.56, None),
        ("a\tb\nc\\", 1, 2, 3),
    ]
    assert tsv_lines(rows) == [
        "XAU\t2026-01-26 02:54:47.209\t5001.56\t\\N",
        "a\\tb\\nc\\\\\t1\t2\t3",
    ]
    assert tsv_lines([]) == []


def test_table_aligns_columns_under_the_header() -> None:
    lines = table_lines(["symbol", "ts"], [("XAU", datetime(2025, 10, 8, 7, 12)), ("XAGXAG", None)])
    assert lines == [
        "symbol  ts",
        "XAU     2025-10-08 07:12:00",
        "XAGXAG  \\N",
    ]


def test_an_empty_table_still_prints_its_header() -> None:
    assert table_lines(["symbol", "kind", "ts"], []) == ["symbol  kind  ts"]
    assert table_lines([], []) == []  # a statement: no columns, nothing to print
