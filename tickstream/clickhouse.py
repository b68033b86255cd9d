"""One way to reach ClickHouse for every component: a URL, chdb:/// or http(s)://.

The chdb backend is synchronous and single-process per directory; async callers
run every call through one dedicated thread (``ClickHouse.run``) so the event
loop never blocks and chDB never sees two threads at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from tickstream.redact import MASK, redact_url
from tickstream.settings import Settings

T = TypeVar("T")


class ClickHouseUnavailable(RuntimeError):
    pass


def connect(settings: Settings) -> Client:
    """A client for the configured URL, with the database created if missing."""
    try:
        client = clickhouse_connect.get_client(dsn=settings.clickhouse_url)
    except Exception as exc:  # clickhouse-connect raises several types; name the setting
        message = str(exc)
        if "lock" in message.lower():
            message = (
                "the chDB directory is open in another process (a running `tickstream run` "
                "or `tickstream sink`?); stop it first or use a different directory"
            )
        password = urlsplit(settings.clickhouse_url).password
        if password:
            message = message.replace(password, MASK)
        raise ClickHouseUnavailable(
            "--clickhouse-url / TICKSTREAM_CLICKHOUSE_URL "
            f"{redact_url(settings.clickhouse_url)}: {message}"
        ) from None
    database = settings.clickhouse_database
    if not int(client.command(f"EXISTS DATABASE {database}")):  # a readonly=1 user may not
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")  # even run IF NOT EXISTS
    return client


class ClickHouse:
    """A client plus the single thread that talks to it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clickhouse")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.client.close()
