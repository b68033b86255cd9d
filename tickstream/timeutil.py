"""Event-time helpers: everything internal is UTC epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def parse_ts_ms(value: str | int | float) -> int:
    """Epoch milliseconds from epoch ms (int or digits) or ISO-8601 (naive means UTC).

    Raises ValueError with a message naming the value when it is neither.
    """
    if isinstance(value, bool):
        raise ValueError(f"timestamp {value!r} is not epoch milliseconds or ISO-8601")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
            raise ValueError(f"timestamp {value!r} is not whole epoch milliseconds")
        return int(value)
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp {value!r} is not epoch milliseconds or ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _ONE_MS


def ms_to_datetime(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def iso(ts_ms: int) -> str:
    return ms_to_datetime(ts_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
