"""How `tickstream query` prints a result: tab-separated, or an aligned table with a header.

Values print as ClickHouse shows them where Python's ``str`` would not: NULL as ``\\N``,
Date as ``2026-01-26``, DateTime64 with its milliseconds (``06:50:38.092``, never Python's
``06:50:38.092000``; a time on a whole second as ``07:12:00``, microseconds only when there
are any), arrays as ``[1,2]``. Tab-separated output escapes backslashes, tabs and newlines
inside a value as ClickHouse's TabSeparated does, so each row stays one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

NULL = "\\N"
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n"})
_TABLE_ESCAPES = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})


def cell(value: object) -> str:
    """One value as text (not yet escaped for the output format)."""
    if value is None:
        return NULL
    if isinstance(value, datetime):
        return _moment(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        inner = ",".join(_element(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return str(value)


def _moment(value: datetime) -> str:
    micros = value.microsecond
    spec = "seconds" if not micros else "milliseconds" if micros % 1000 == 0 else "microseconds"
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec=spec)


def _element(value: object) -> str:
    """A value inside an array or tuple: strings, dates and times quoted, as ClickHouse."""
    if isinstance(value, str | date):
        return "'" + cell(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "NULL" if value is None else cell(value)


def tsv_lines(rows: Sequence[Sequence[object]]) -> list[str]:
    """Tab-separated, no header."""
    return ["\t".join(_tsv(v) for v in row) for row in rows]


def _tsv(value: object) -> str:
    return NULL if value is None else cell(value).translate(_TSV_ESCAPES)


def table_lines(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """The header, then the rows, in columns two spaces apart (the header even with no row)."""
    if not header:
        return []
    texts = [[cell(v).translate(_TABLE_ESCAPES) for v in row] for row in rows]
    widths = [len(h) for h in header]
    for row in texts:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    return [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        for line in [list(header), *texts]
    ]
