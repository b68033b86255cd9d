"""`tickstream query "SQL"`: run one query and print its result."""

from __future__ import annotations

import sys

import click

from cli.options import pop_settings, settings_options


@click.command()
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tsv", "table"]),
    default="tsv",
    show_default=True,
    help="tsv: tab-separated, no header; table: aligned with header.",
)
@settings_options("clickhouse_url", "clickhouse_database")
def query(sql: str, fmt: str, **values: object) -> None:
    """Run SQL against tickstream's ClickHouse and print the result.

    Reads with final=1, so every ReplacingMergeTree table shows each row once.
    Example: tickstream query "SELECT count() FROM tickstream.ticks"
    """
    from tickstream.clickhouse import ClickHouseUnavailable, connect

    settings = pop_settings(values)
    try:
        client = connect(settings)
    except ClickHouseUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        result = client.query(sql, settings={"final": 1})
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
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ")  # type: ignore[no-any-return]
    return str(value)
