"""The processor's outbox: a batch counts as sent only once the broker confirmed every send.

A fake producer stands in for Faust's: ``send`` enqueues and returns the delivery future,
which the test resolves as a broker would (confirmed, refused for good, failed for a
passing reason), or ``send`` itself raises as the client does for a record above its
max_request_size.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)
from faust.exceptions import ProducerSendError

from processors.app import Outbox, SendFailed
from processors.core import Outgoing


class FakeProducer:
    """Deliveries resolve on the next loop turn with the outcome ``plan`` gives a send."""

    def __init__(self, plan: Any = lambda msg, n: None) -> None:
        self.plan = plan  # (message, nth send of it) -> None | exception to fail with
        self.sent: list[bytes] = []
        self.counts: dict[bytes, int] = {}

    async def send(self, msg: Outgoing) -> asyncio.Future[Any]:
        n = self.counts[msg.value] = self.counts.get(msg.value, 0) + 1
        outcome = self.plan(msg, n)
        if isinstance(outcome, BaseException) and getattr(outcome, "at_send", False):
            try:
                raise outcome
            except Exception as exc:  # as Faust wraps the client's error
                raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        self.sent.append(msg.value)
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def resolve() -> None:
            if outcome is None:
                delivery.set_result("metadata")
            else:
                delivery.set_exception(outcome)

        asyncio.get_running_loop().call_soon(resolve)
        return delivery


def messages(n: int, topic: str = "ns.aggregates") -> list[Outgoing]:
    return [Outgoing(topic, b"k", f"row{i}".encode()) for i in range(n)]


async def no_sleep(seconds: float) -> None:
    return None


def test_settles_once_every_delivery_is_confirmed() -> None:
    producer = FakeProducer()

    async def main() -> int:
        outbox = Outbox(producer.send)
        await outbox.put(messages(1000))
        await outbox.settle()
        return len(outbox)

    assert asyncio.run(main()) == 0
    assert len(producer.sent) == 1000


def test_a_message_the_broker_refuses_for_good_raises_naming_it() -> None:
    refused = b"row7"
    producer = FakeProducer(lambda m, n: MessageSizeTooLargeError() if m.value == refused else None)

    async def main() -> None:
        outbox = Outbox(producer.send)
        await outbox.put(messages(10))
        await outbox.settle()

    with pytest.raises(SendFailed) as raised:
        asyncio.run(main())
    text = str(raised.value)
    assert "ns.aggregates" in text and "MessageSizeTooLargeError" in text, text
    assert "max.message.bytes" in text and "\n" not in text
    assert producer.counts[refused] == 1  # not sent again: it can never succeed


def test_a_record_the_client_refuses_at_send_raises_at_once() -> None:
    too_big = MessageSizeTooLargeError("The message is 70000000 bytes when serialized")
    too_big.at_send = True  # type: ignore[attr-defined]
    producer = FakeProducer(lambda m, n: too_big)

    async def main() -> None:
        outbox = Outbox(producer.send, lambda m: "the state snapshot")
        await outbox.put([Outgoing("ns.processor.state", b"analytics", b"x" * 100, 0)])

    with pytest.raises(SendFailed, match=r"the state snapshot \(109 bytes\).*70000000 bytes"):
        asyncio.run(main())


def test_a_passing_failure_resends_everything_pending_in_order() -> None:
    """A leader moving mid-batch: every pending message goes again, in its order, so the
    newest copy of each row comes last; the batch settles once the resend is confirmed."""
    producer = FakeProducer(
        lambda m, n: NotLeaderForPartitionError() if m.value == b"row3" and n == 1 else None
    )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> None:
        outbox = Outbox(producer.send, sleep=sleep)
        await outbox.put(messages(5))
        await outbox.settle()

    asyncio.run(main())
    rows = [f"row{i}".encode() for i in range(5)]
    assert producer.sent == rows + rows
    assert waits == [0.5]


def test_a_failure_that_outlasts_the_attempts_raises() -> None:
    producer = FakeProducer(lambda m, n: KafkaTimeoutError())
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> None:
        outbox = Outbox(producer.send, attempts=4, backoff_s=1.0, max_backoff_s=3.0, sleep=sleep)
        await outbox.put(messages(2))
        await outbox.settle()

    with pytest.raises(SendFailed, match="in 4 attempts.*KafkaTimeoutError"):
        asyncio.run(main())
    assert waits == [1.0, 2.0, 3.0]
    assert producer.counts[b"row0"] == 4


def test_a_timeout_at_send_is_retried_not_fatal() -> None:
    """aiokafka raises KafkaTimeoutError from send() when metadata does not come in time."""

    def plan(m: Outgoing, n: int) -> BaseException | None:
        if n == 1:
            exc = KafkaTimeoutError()
            exc.at_send = True  # type: ignore[attr-defined]
            return exc
        return None

    producer = FakeProducer(plan)

    async def main() -> None:
        outbox = Outbox(producer.send, sleep=no_sleep)
        await outbox.put(messages(3))
        await outbox.settle()

    asyncio.run(main())
    assert producer.sent == [b"row0", b"row1", b"row2"]
