"""What a Kafka client error means to the processor, and how long a lost broker is waited for.

The send path (``processors.outbox``), the state read-back (``processors.state_store``)
and the worker's start (``processors.worker``) all have to tell a broker that is away
for a while from a failure that will not pass, and to name the error in one line; they
share these answers here so that they never disagree on them.
"""

from __future__ import annotations

from aiokafka.errors import KafkaError, KafkaTimeoutError
from faust.exceptions import ProducerSendError

# How long a broker lost during start-up (or while the state is read back) is waited for:
# longer than the first start's 30 s, as the broker was there a moment ago
BROKER_RETURN_WAIT_S = 300


def cause(exc: BaseException) -> BaseException:
    """The client's error under Faust's ProducerSendError (raised when enqueueing)."""
    while isinstance(exc, ProducerSendError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def error_text(exc: BaseException) -> str:
    """The client's error in one line, saying what a too-large record is too large for."""
    exc = cause(exc)
    name, text = type(exc).__name__, str(exc)
    out = text if name in text else f"{name}: {text}" if text else name
    if "TooLarge" in name:
        out += " (larger than the topic's max.message.bytes or the producer's max_request_size)"
    return out


def broker_away(exc: BaseException) -> bool:
    """Whether ``exc`` says the broker cannot be reached for now (so it is waited for)."""
    return isinstance(exc, KafkaTimeoutError) or (
        isinstance(exc, KafkaError) and bool(exc.retriable)
    )
