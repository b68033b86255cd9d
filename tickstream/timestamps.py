"""Event times as the wire carries them: UTC epoch milliseconds.

Sources and hand-written files spell a time as epoch milliseconds (an int, an
integral float, a digit string) or as ISO-8601 text. Every stage that reads such
a value (validation, replay's resume point, the processor's record seeds) must
agree on what it means, so the one parser lives here, in the shared core.

Pure: no I/O, no clock. A value that is no time raises ``TimestampError`` (a
``ValueError``); a caller with its own error vocabulary translates it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["TimestampError", "parse_ts_ms"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_BAD_TS = "ts {!r} is neither ISO-8601 nor epoch milliseconds"
# epoch milliseconds have 13 digits until the year 2286; more is no time (and a digit
# string past Python's int-parsing limit would raise an unexpected ValueError)
_MAX_DIGITS = 18


class TimestampError(ValueError):
    """A value that is neither ISO-8601 text nor epoch milliseconds.

    The message names the value (``ts '...' is neither ISO-8601 nor epoch
    milliseconds``), ready to be shown as the reason an input was refused.
    """


def _bad(value: Any) -> TimestampError:
    """The error naming a value, shortened: a huge input never makes a huge message."""
    if isinstance(value, str) and len(value) > 60:
        return TimestampError(_BAD_TS.format(value[:40]) + f" ({len(value)} characters)")
    return TimestampError(_BAD_TS.format(value))


def parse_ts_ms(value: Any) -> int:
    """Epoch milliseconds from an int, a digit string or ISO-8601 text (naive = UTC).

    A digit string is taken as milliseconds, not parsed as a date: ``"20260126"``
    is a time in 1970, which validation's lower bound on times then refuses.
    Naive ISO text is UTC because a venue's local time zone is never implied by
    the data. A float counts only when integral (a JSON encoder's ``1.7e12``); a
    bool is refused although Python calls it an int. Sub-millisecond digits of
    ISO text are floored, so the result never lies in the future of the text.
    Validation calls this on every tick of a text source, so the common cases
    go first.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            if len(text) > _MAX_DIGITS:
                raise _bad(value)
            return int(text)
        if len(text) > 64:
            raise _bad(value)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _bad(value) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _ONE_MS
    if isinstance(value, bool):
        raise _bad(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _bad(value)
