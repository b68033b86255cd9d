"""What an aiokafka consumer asks the broker for: the partitions of each fetch request."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer


def record_fetches(consumer: AIOKafkaConsumer) -> list[set[int]]:
    """The partitions of every fetch request the started ``consumer`` sends from now on,
    appended to the list returned as they are sent."""
    fetcher = consumer._fetcher
    sent: list[set[int]] = []
    proc_fetch_request = fetcher._proc_fetch_request

    def recording(assignment: Any, node_id: int, request: Any) -> Any:
        sent.append({part[0] for _, parts in request.topics for part in parts})
        return proc_fetch_request(assignment, node_id, request)

    fetcher._proc_fetch_request = recording
    return sent
