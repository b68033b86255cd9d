"""`tickstream query "SQL"`: run one query and print its result."""

from __future__ import annotations

import sys
from typing import Any

import click

from cli.options import pop_settings, settings_options
from cli.query_format import table_lines, tsv_lines


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("sql", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tsv", "table"]),
    default="tsv",
    show_default=True,
    help="tsv: tab-separated, no header; table: aligned with header.",
)
@settings_options("namespace", "clickhouse_url", "clickhouse_database")
def query(sql: tuple[str, ...], fmt: str, **values: object) -> None:
    """Run SQL against tickstream's ClickHouse and print the result.

    Reads with final=1, so every ReplacingMergeTree table shows each row once.
    Example: tickstream query "SELECT count() FROM tickstream.ticks". A table named
    without its database is the namespace's (--namespace example: tickstream_example), as
    a run in that namespace wrote it. Without SQL (or with "-") the query is read from
    standard input, so a block of docs/queries.md can be pasted as it is, its "-- name:"
    comment line included. While a `tickstream run` (or `tickstream sink`) holds the chDB
    directory, the query goes through the ClickHouse HTTP interface that process serves.
    """
    from tickstream.chdb_http import running_endpoint
    from tickstream.clickhouse import ClickHouseUnavailable, connect

    text = " ".join(sql).strip()
    if text in ("", "-"):
        text = sys.stdin.read().strip()
    if not text:
        raise click.UsageError("no SQL given (as an argument or on standard input)")
    settings = pop_settings(values)
    served = running_endpoint(settings.clickhouse_url)
    if served:  # a running pipeline holds the chDB directory, and serves it over HTTP
        settings = settings.replace(clickhouse_url=served)
    try:
        client = connect(settings)
    except ClickHouseUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # reached, but the database is missing and may not be created
        raise click.ClickException(
            f"database {settings.clickhouse_database} (--clickhouse-database, or the run's "
            f"--namespace): {exc}"
        ) from exc
    client.database = settings.clickhouse_database  # for tables named without a database
    try:
        result = client.query(text, settings={"final": 1})
        header = list(result.column_names)
        if fmt == "table" and not header:  # no row: the engine sent no column names either
            header = _column_names(client, text)
    except Exception as exc:
        raise click.ClickException(f"query failed: {exc}") from exc
    finally:
        client.close()
    rows = result.result_rows
    lines = table_lines(header, rows) if fmt == "table" else tsv_lines(rows)
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")


def _column_names(client: Any, text: str) -> list[str]:
    """The columns a query would return, asked without running it (DESCRIBE of the query as
    a subquery); none for what is no SELECT (a statement, SHOW ...)."""
    try:
        described = client.query(f"DESCRIBE TABLE (\n{text.rstrip().rstrip(';')}\n)")
    except Exception:
        return []
    return [str(row[0]) for row in described.result_rows]
