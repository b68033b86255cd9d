"""What a source hands to validation, and what validation rejects.

Sources know nothing of Kafka: each is an async iterator of ``RawTick``; the
validator turns those into accepted ``Tick``s or ``Rejection``s, and the
publisher sends both on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tickstream.contracts import DeadLetter
from tickstream.model import Tick


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class RawTick:
    """One input exactly as a source saw it.

    ``fields`` holds the source's values by our field names (strings for CSV,
    JSON values for websockets) or is ``None`` when the input could not even be
    split into fields; ``error`` then says why.
    """

    raw: str
    source: str
    position: str
    recv_ms: int
    fields: Mapping[str, Any] | None = None
    error: str | None = None


Rejection = DeadLetter
"""An input kept aside on the dead-letter topic, with the reason (the contract's record)."""


@dataclass(slots=True)
class Verdicts:
    """What validation decided for one or more inputs, in input order."""

    accepted: list[Tick] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def extend(self, other: Verdicts) -> None:
        self.accepted.extend(other.accepted)
        self.rejected.extend(other.rejected)
