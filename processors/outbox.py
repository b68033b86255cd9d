"""The processor's sends, kept until the broker has confirmed them, and their retry policy.

No input offset may be acked, and no state snapshot written, ahead of an output the
broker never took: so every send is kept (``Outbox``) until ``settle`` has seen the
broker confirm it. A send that failed for a passing reason is sent again a few times
first; one the broker refuses for good (a record too large) raises ``SendFailed`` naming
it, which stops the worker with the input since the last snapshot unacknowledged.
Outputs sent twice (a retry, a restart) are identical, and the sink's row identities
absorb them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka.errors import KafkaError, KafkaTimeoutError

from processors.broker_errors import cause, error_text
from processors.core import Outgoing

log = logging.getLogger(__name__)

# A send that failed for a passing reason is sent again this often, the wait doubling from
# SEND_BACKOFF_S (the client has already retried it for its whole request timeout by then)
SEND_ATTEMPTS = 5
SEND_BACKOFF_S = 0.5
SEND_MAX_BACKOFF_S = 8.0


class SendFailed(RuntimeError):
    """A send of the batches since the last snapshot failed for good: none may be acked."""


def retriable(exc: BaseException) -> bool:
    """Whether sending the same message again may succeed.

    KafkaTimeoutError is not ``retriable`` to aiokafka, but here it means a batch expired
    while the broker was away, which a later attempt can survive.
    """
    exc = cause(exc)
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)


Send = Callable[[Outgoing], Awaitable["asyncio.Future[Any]"]]


class Outbox:
    """The sends since the last acknowledgement, kept until the broker has confirmed them.

    Sending only enqueues (the batch path never waits for the broker); ``settle`` then waits
    until every delivery is confirmed or failed. A failure for a passing reason sends
    everything pending again, in the original order, so the last copy of every row is still
    the newest one (the sink absorbs the repeats); a permanent failure, or one that outlasts
    the attempts, raises SendFailed naming the message: nothing pending may be acknowledged.

    A snapshot needs only the sends of the batches it reflects confirmed, not those put
    since: ``mark`` names the position after the sends so far, ``delivered`` waits for the
    sends before a mark without changing anything (while more are put), and
    ``settle(mark)`` forgets them once confirmed. ``put`` and ``settle`` must not run at
    once (the checkpoints call both under their lock).
    """

    def __init__(
        self,
        send: Send,
        describe: Callable[[Outgoing], str] = lambda m: f"a message for topic {m.topic}",
        attempts: int = SEND_ATTEMPTS,
        backoff_s: float = SEND_BACKOFF_S,
        max_backoff_s: float = SEND_MAX_BACKOFF_S,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._send = send
        self._describe = describe
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._pending: list[tuple[Outgoing, asyncio.Future[Any]]] = []
        self._settled = 0  # sends confirmed and forgotten, ever: the mark of _pending[0]

    def __len__(self) -> int:
        return len(self._pending)

    def mark(self) -> int:
        """The position after every send so far."""
        return self._settled + len(self._pending)

    async def put(self, messages: Iterable[Outgoing]) -> None:
        pending, send = self._pending, self._send
        for msg in messages:
            try:
                delivery = await send(msg)  # the client's future: enqueued, not yet confirmed
            except Exception as exc:  # refused before it was even enqueued
                if not retriable(exc):
                    raise SendFailed(self._failure(msg, exc)) from None
                delivery = asyncio.get_running_loop().create_future()
                delivery.set_exception(cause(exc))
            pending.append((msg, delivery))

    async def delivered(self, mark: int) -> None:
        """Return once every send before ``mark`` is confirmed or failed; changes nothing."""
        for _, delivery in self._pending[: mark - self._settled]:
            if not delivery.done():
                # one wait per group the broker confirms at once (a record batch): far
                # cheaper than a callback on each future; and wait() never cancels it
                await asyncio.wait((delivery,))

    async def settle(self, mark: int | None = None) -> None:
        """Return once the broker has confirmed every pending send before ``mark`` (every
        one, by default), forgetting them; raise SendFailed if not. After a failure every
        pending send is sent again, and all must be confirmed."""
        backoff = self._backoff_s
        head = len(self._pending) if mark is None else mark - self._settled
        for attempt in range(1, self._attempts + 1):
            await self.delivered(self._settled + head)
            failed: tuple[Outgoing, BaseException] | None = None
            for msg, delivery in self._pending[:head]:  # every outcome read: none "never retrieved"
                if delivery.cancelled():
                    exc: BaseException | None = asyncio.CancelledError()
                else:
                    exc = delivery.exception()
                if exc is not None and failed is None:
                    failed = (msg, exc)
            if failed is None:
                del self._pending[:head]
                self._settled += head
                return
            msg, exc = failed
            if not retriable(exc):
                raise SendFailed(self._failure(msg, exc))
            if attempt == self._attempts:
                raise SendFailed(self._failure(msg, exc, f" in {attempt} attempts"))
            log.warning(
                "%s; sending the %d messages since the last snapshot again in %.1f s "
                "(attempt %d of %d)",
                self._failure(msg, exc),
                len(self._pending),
                backoff,
                attempt + 1,
                self._attempts,
            )
            await self._sleep(backoff)
            backoff = min(2 * backoff, self._max_backoff_s)
            again = [m for m, _ in self._pending]  # later sends too: they stay in order
            self._pending.clear()
            await self.put(again)
            head = len(self._pending)

    def _failure(self, msg: Outgoing, exc: BaseException, attempts: str = "") -> str:
        size = len(msg.key) + len(msg.value)
        return (
            f"{self._describe(msg)} ({size:,} bytes) could not be sent{attempts}: {error_text(exc)}"
        )
