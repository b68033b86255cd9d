"""Why validation refuses an input: the reason codes and the exception carrying one.

A reason code travels with every rejection to the dead-letter topic and labels
the rejection metric, so the codes are a contract with the DLQ's readers and the
dashboards: renaming one breaks their queries and alerts. ``REASONS`` lists them
in the order validation checks them (the first check that fails names the
reason); the publisher exports one metric series per code from it, at 0 from
the start, so an alert sees a reason before its first rejection.
"""

from __future__ import annotations

MALFORMED = "malformed"
INVALID_PRICE = "invalid_price"
CROSSED_QUOTE = "crossed_quote"
FUTURE_TS = "future_ts"
OUT_OF_BAND = "out_of_band"
DUPLICATE = "duplicate"
SPIKE = "spike"
REASONS = (MALFORMED, INVALID_PRICE, CROSSED_QUOTE, FUTURE_TS, OUT_OF_BAND, DUPLICATE, SPIKE)


class InvalidInput(Exception):
    """An input fails a check; carries the reason and a human detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
