"""`tickstream query` prints Date and DateTime64 columns, and takes a docs block as written."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cli.main import _register, cli

SQL = """-- name: a_day_and_a_moment
SELECT toDate('2026-01-26') AS day,
       toDateTime64('2026-01-26 06:50:38.092', 3, 'UTC') AS at,
       toDateTime('2026-01-26 06:50:38', 'UTC') AS second"""


def run(tmp_path: Path, *args: str, stdin: str | None = None) -> str:
    _register()
    result = CliRunner().invoke(
        cli, ["query", "--clickhouse-url", f"chdb://{tmp_path / 'chdb'}", *args], input=stdin
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_dates_print_as_clickhouse_shows_them(tmp_path: Path) -> None:
    expected = "2026-01-26\t2026-01-26 06:50:38.092\t2026-01-26 06:50:38\n"
    assert run(tmp_path, SQL) == expected  # the leading comment is no option
    assert run(tmp_path, stdin=SQL) == expected  # pasted on standard input
    table = run(tmp_path, "--format", "table", SQL).splitlines()
    assert table[0].split() == ["day", "at", "second"]
    assert table[1].split() == [
        "2026-01-26",
        "2026-01-26",
        "06:50:38.092",
        "2026-01-26",
        "06:50:38",
    ]


def test_an_empty_table_result_prints_its_header(tmp_path: Path) -> None:
    sql = "SELECT 'XAU' AS symbol, toDateTime64(0, 3, 'UTC') AS ts, 1.5 AS price WHERE 0"
    assert run(tmp_path, "--format", "table", sql).splitlines() == ["symbol  ts  price"]
    assert run(tmp_path, "--format", "table", stdin=f"-- name: none\n{sql};\n") == (
        "symbol  ts  price\n"
    )
    assert run(tmp_path, sql) == ""  # tab-separated: no header, so nothing


def test_rows_print_in_the_order_the_query_asks(tmp_path: Path) -> None:
    sql = (
        "SELECT number AS n, toDateTime64(number / 1000, 3, 'UTC') AS at "
        "FROM numbers(3) ORDER BY n DESC"
    )
    assert run(tmp_path, sql) == (
        "2\t1970-01-01 00:00:00.002\n1\t1970-01-01 00:00:00.001\n0\t1970-01-01 00:00:00\n"
    )
    assert run(tmp_path, "--format", "table", sql).splitlines() == [
        "n  at",
        "2  1970-01-01 00:00:00.002",
        "1  1970-01-01 00:00:00.001",
        "0  1970-01-01 00:00:00",
    ]
