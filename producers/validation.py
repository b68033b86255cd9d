"""Validation: turn a source's RawTicks into accepted Ticks or Rejections.

Pure and deterministic: no I/O, no metrics, no globals; wall-clock time is
injected (``now_ms``) and only used for the ``future_ts`` check. Counting
verdicts is the caller's job.

Checks, in order; the first that fails names the reason:

* ``malformed``      no fields, a required field missing, wrong type, unparseable
                     timestamp or number, or a timestamp before ``min_ts_ms``
                     (usually epoch seconds sent where milliseconds belong);
* ``invalid_price``  price/bid/ask not finite or <= 0, size not finite or < 0;
* ``crossed_quote``  bid > ask (a locked quote, bid == ask, passes);
* ``future_ts``      event time more than ``max_future_ms`` ahead of now;
* ``out_of_band``    price outside the symbol's sanity band (``price_bands``);
* ``duplicate``      same ``Tick.identity()`` as an earlier accepted-or-held tick
                     (remembered per symbol within ``duplicate_horizon_ms`` of
                     that symbol's newest event time, so memory stays bounded);
* ``spike``          a price too far from the symbol's last accepted one, held
                     until later ticks confirm or refute it (``producers.validator``
                     describes the quarantine).

Symbols are stripped of surrounding white space but not upper-cased: the venue's
spelling is kept. Timestamps are read by ``tickstream.timestamps.parse_ts_ms``,
the same reader the other stages use.

This module is the public face of validation; the parts live in modules named
for what they hold, and everything is importable from here:

* ``producers.reasons``            the reason codes and ``InvalidInput``;
* ``producers.parsing``            the per-input checks (fast and checked paths),
                                   ``Row`` and ``parse_tick``;
* ``producers.validation_config``  ``ValidationConfig`` and ``SpikeThresholds``;
* ``producers.validator``          the stateful ``Validator``.
"""

from __future__ import annotations

from producers.parsing import Row, parse_tick
from producers.reasons import (
    CROSSED_QUOTE,
    DUPLICATE,
    FUTURE_TS,
    INVALID_PRICE,
    MALFORMED,
    OUT_OF_BAND,
    REASONS,
    SPIKE,
    InvalidInput,
)
from producers.validation_config import SpikeThresholds, ValidationConfig, parse_price_bands
from producers.validator import Validator

__all__ = [
    "CROSSED_QUOTE",
    "DUPLICATE",
    "FUTURE_TS",
    "INVALID_PRICE",
    "MALFORMED",
    "OUT_OF_BAND",
    "REASONS",
    "SPIKE",
    "InvalidInput",
    "Row",
    "SpikeThresholds",
    "ValidationConfig",
    "Validator",
    "parse_price_bands",
    "parse_tick",
]
