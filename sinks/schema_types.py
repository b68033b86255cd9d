"""What every migration is made of, shared by the core schema and the OHLC migrations.

A module of its own so that schema.py (the ordered list and ``migrate``) and
schema_ohlc.py (migrations 2 and 6) can both use the column type and the tick identity
without importing each other. The tick identity is the ticks table's ORDER BY, and the
OHLC tick counts count distinct ticks by the same columns: one definition keeps a
deduplicated row and a counted tick the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from tickstream.contracts import TICK_COLUMNS
from tickstream.model import TICK_IDENTITY

TS = "DateTime64(3, 'UTC')"


Step = str | Callable[[Client], None]
"""A migration step: a statement, or a function for a step that depends on what is there."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[Step, ...]


_NULLABLE_TICK_FIELDS = ("bid", "ask", "size", "venue", "seq", "recv_ms")


def tick_identity_columns(prefix: str = "") -> list[str]:
    """The ticks table's ORDER BY: the tick contract's identity (nulls as -1)."""
    return [
        f"ifNull({prefix}{TICK_COLUMNS[f]}, -1)"
        if f in _NULLABLE_TICK_FIELDS
        else f"{prefix}{TICK_COLUMNS[f]}"
        for f in TICK_IDENTITY
    ]
