"""`tickstream query "SQL"`: run one query and print its result."""

from __future__ import annotations

import sys
from datetime import date, datetime

import click

from cli.options import pop_settings, settings_options


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
    except Exception as exc:
        raise click.ClickException(f"query failed: {exc}") from exc
    finally:
        client.close()
    rows = [[_text(v) for v in row] for row in result.result_rows]
    if fmt == "table":
        header = list(result.column_names)
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(header)
        ]
        click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    else:
        out = sys.stdout
        for row in rows:
            out.write("\t".join(row) + "\n")


def _text(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):  # DateTime64(3): milliseconds, as ClickHouse shows them
        spec = "milliseconds" if value.microsecond else "seconds"
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec=spec)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
