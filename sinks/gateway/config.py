"""How a gateway runs: built from the Settings of `tickstream gateway`, or in code (tests).

The limits (port, conflation, buffers...) are checked by ``tickstream.settings``, the same
rule for a flag, a variable and a config built by hand.
"""

from __future__ import annotations

import ssl as ssl_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sinks.gateway.access import TokenTable
from sinks.gateway.protocol import MAX_SYMBOLS
from tickstream.settings import ConfigError, Settings, check_gateway_limits


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    kafka_bootstrap: str
    namespace: str
    tokens: TokenTable
    host: str = "127.0.0.1"
    port: int = 8765  # 0 = any free port (tests)
    ssl: ssl_module.SSLContext | None = None
    conflation_ms: int = 250  # 0 = every tick to every client
    max_send_buffer: int = 2 << 20  # bytes queued for one client before it is disconnected
    max_message_bytes: int = 64 << 10  # largest client frame accepted (else close 1009)
    # symbols (pairs, sync groups) one client may name, per message and in all its
    # subscriptions; past it: error frame too_many_symbols, nothing changed (subscription.py)
    max_symbols_per_client: int = MAX_SYMBOLS
    heartbeat_s: float = 15.0
    backfill: int = 5_000  # messages per partition of ticks/aggregates read at start
    replay_capacity: int = 200_000  # signals kept for since_ms replays
    close_timeout: float = 10.0
    partitions: int = 3  # of the topics, when the gateway has to create them
    level_steps: Mapping[str, Sequence[float]] | None = None  # as the processor's (next levels)
    known_aths: Mapping[str, tuple[float, int]] = field(default_factory=dict)  # (price, ts_ms)

    def __post_init__(self) -> None:
        check_gateway_limits(self)

    @classmethod
    def from_settings(
        cls, settings: Settings, known_aths: Mapping[str, tuple[float, int]] | None = None
    ) -> GatewayConfig:
        """The gateway of ``settings``: its tokens (one at least) parsed, its TLS loaded.

        ``known_aths``: the processor's record seeds, which the caller reads (a sink does
        not import the processor).
        """
        gw = settings.gateway
        return cls(
            kafka_bootstrap=settings.kafka_bootstrap,
            namespace=settings.namespace,
            tokens=TokenTable(gw.required_tokens()),
            host=gw.host,
            port=gw.port,
            ssl=_tls(gw.tls_cert, gw.tls_key) if gw.tls_cert else None,
            conflation_ms=gw.conflation_ms,
            max_send_buffer=gw.max_send_buffer,
            max_message_bytes=gw.max_message_bytes,
            max_symbols_per_client=gw.max_symbols_per_client,
            heartbeat_s=gw.heartbeat_s,
            backfill=gw.backfill,
            replay_capacity=gw.replay_capacity,
            partitions=settings.partitions,
            level_steps=settings.parsed_level_steps(),
            known_aths=dict(known_aths or {}),
        )

    def settings(self) -> Settings:
        """The shared settings the gateway's Kafka plumbing (topic creation) asks for."""
        return Settings(
            kafka_bootstrap=self.kafka_bootstrap,
            namespace=self.namespace,
            partitions=self.partitions,
        )


def ssl_context(cert: str | Path, key: str | Path | None = None) -> ssl_module.SSLContext:
    """A server TLS context from a PEM certificate chain and key."""
    ctx = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl_module.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def _tls(cert: str, key: str) -> ssl_module.SSLContext:
    try:
        return ssl_context(cert, key or None)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        what = "certificate and key" if key else "certificate"
        raise ConfigError("gateway.tls_cert", f"cannot load the {what}: {exc}") from exc
