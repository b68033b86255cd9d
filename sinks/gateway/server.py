"""The desk feed gateway, assembled: Kafka (ticks, aggregates, signals) in, websockets out.

Split by role: ``feed`` (the Kafka consumer feeding the board state and the signal log),
``session`` (websocket sessions, conflation and the slow-client policy), ``http`` (the
handshake's token check, the board page, /healthz, /metrics, /stats) and ``config``.
This module wires them to one port and runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from typing import Any

from websockets.asyncio.server import Server, serve

from sinks.gateway.config import GatewayConfig, ssl_context
from sinks.gateway.feed import Feed
from sinks.gateway.http import Http
from sinks.gateway.session import Session, Sessions
from sinks.gateway.state import BoardState, SignalLog

__all__ = ["Gateway", "GatewayConfig", "run_gateway", "ssl_context"]

log = logging.getLogger(__name__)


class Gateway:
    """The running gateway: ``async with Gateway(config) as gw: ...`` or start()/stop()."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.state = BoardState(config.level_steps)
        for symbol, (price, ts_ms) in config.known_aths.items():  # the processor's record seeds
            self.state.ath[symbol] = {"price": price, "ts_ms": ts_ms, "source": "seed"}
        self.log = SignalLog(config.replay_capacity)
        self.ready = asyncio.Event()  # caught up with the topics' ends as of start-up
        self.counts = {
            "ticks_in": 0,
            "rows_in": 0,
            "signals_in": 0,
            "signal_events_in": 0,
            "duplicate_signals": 0,
            "undecodable": 0,
            "slow_disconnects": 0,
            "ticks_dropped": 0,
            "refused": 0,
            "client_errors": 0,
            "subscriptions_refused": 0,  # too_many_symbols (also in client_errors)
            "connections": 0,
        }
        self.sessions = Sessions(config, self.state, self.log, self.counts)
        self.feed = Feed(config, self.state, self.log, self.sessions, self.counts, self.ready)
        self.http = Http(config.tokens, self.counts, self.ready, self.stats)
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.feed.start()
        self._tasks.append(asyncio.create_task(self.feed.run(), name="gateway-consume"))
        self._tasks.append(asyncio.create_task(self.sessions.tick_loop(), name="gateway-flush"))
        self._server = await serve(
            self.sessions.handle,
            self.config.host,
            self.config.port,
            process_request=self.http.process_request,
            ssl=self.config.ssl,
            compression=None,  # per-client deflate costs more CPU than the bytes it saves
            max_size=self.config.max_message_bytes,
            close_timeout=self.config.close_timeout,
            server_header=None,
        )
        scheme = "https" if self.config.ssl else "http"
        log.info(
            "gateway on %s://%s:%d/ (board), websocket %s://%s:%d/ws?token=...",
            scheme,
            self.config.host,
            self.port,
            "wss" if self.config.ssl else "ws",
            self.config.host,
            self.port,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.close_timeout + 1):
                    await self._server.wait_closed()
        tasks = [*self._tasks, *self.sessions.closing]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.feed.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def clients(self) -> set[Session]:
        return self.sessions.active

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        ticks = self.sessions.ticks
        return {
            **self.counts,
            "ready": self.ready.is_set(),
            "clients": len(self.sessions.active),
            "ticks_conflated": ticks.superseded + self.sessions.client_superseded,
            "signal_log": len(self.log),
            "signal_head": self.log.head,
            "cpu_user_s": usage.ru_utime,
            "cpu_system_s": usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024,
        }


async def run_gateway(config: GatewayConfig, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    async with Gateway(config):
        await stop.wait()
