"""The desk gateway's section of the settings, and how its access tokens are read.

Held as ``Settings.gateway``; apart so that settings.py stays the shared whole and the
gateway's rules (token syntax, bounds a GatewayConfig built in code is also held to) read
in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tickstream.config_base import ConfigError, check_file, envvar, flag

_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{1,256}$")


def check_token(token: str) -> None:
    """Tokens travel in URLs (``/ws?token=...``), so only characters that need no escaping."""
    if not _TOKEN_RE.match(token):
        raise ValueError(f"token {token[:8]!r}...: use 1-256 of A-Z a-z 0-9 . _ ~ - (URL-safe)")


TokenMap = dict[str, frozenset[str] | None]  # token -> symbol allow-list (None = every symbol)


def parse_token_list(text: str) -> TokenMap:
    """``TOKEN[:SYM+SYM...]`` entries separated by commas (or whitespace)."""
    tokens: TokenMap = {}
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        token, _, syms = entry.partition(":")
        check_token(token)
        tokens[token] = frozenset(s for s in syms.split("+") if s) if syms else None
    return tokens


def parse_token_file(text: str) -> TokenMap:
    """One token a line: ``TOKEN [SYM SYM ...]``; blank lines and '#' comments ignored."""
    tokens: TokenMap = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        token, *syms = line.split()
        check_token(token)
        tokens[token] = frozenset(syms) if syms else None
    return tokens


# (lowest, highest or None); a GatewayConfig built in code is held to the same bounds
_GATEWAY_LIMITS: dict[str, tuple[float, float | None]] = {
    "port": (0, 65535),
    "conflation_ms": (0, 60_000),
    "max_send_buffer": (1024, None),
    "max_message_bytes": (256, None),
    "heartbeat_s": (0.1, None),
    "backfill": (0, None),
    "replay_capacity": (1, None),
    # at least one, and not so many that the cap stops bounding anything
    "max_symbols_per_client": (1, 100_000),
}


def check_gateway_limits(config: object) -> None:
    """The gateway's numeric bounds, for GatewaySettings and sinks.gateway's GatewayConfig."""
    for name, (low, high) in _GATEWAY_LIMITS.items():
        value = getattr(config, name)
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ConfigError(f"gateway.{name}", f"must be {bounds}, got {value}")


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The desk-feed gateway's section of Settings (variables TICKSTREAM_GATEWAY_*)."""

    host: str = "127.0.0.1"
    port: int = 8765
    tokens: str = field(default="", repr=False)  # secret: never in a repr, hence never logged
    tokens_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    conflation_ms: int = 250
    max_send_buffer: int = 2 << 20
    max_message_bytes: int = 64 << 10
    heartbeat_s: float = 15.0
    backfill: int = 5_000
    replay_capacity: int = 200_000
    max_symbols_per_client: int = 1_000  # symbols, pairs and groups one desk client may hold

    def __post_init__(self) -> None:
        check_gateway_limits(self)
        for name in ("tokens_file", "tls_cert", "tls_key"):
            check_file(f"gateway.{name}", getattr(self, name))
        if self.tls_key and not self.tls_cert:
            raise ConfigError(
                "gateway.tls_key", f"needs the certificate too ({envvar('gateway.tls_cert')})"
            )
        self.parsed_tokens()

    def parsed_tokens(self) -> TokenMap:
        """The tokens of ``tokens`` and of ``tokens_file`` (the file's entry wins a tie)."""
        try:
            tokens = parse_token_list(self.tokens)
        except ValueError as exc:
            raise ConfigError("gateway.tokens", str(exc)) from None
        if self.tokens_file:
            try:
                tokens.update(parse_token_file(Path(self.tokens_file).read_text()))
            except (OSError, ValueError) as exc:
                raise ConfigError("gateway.tokens_file", str(exc)) from None
        return tokens

    def required_tokens(self) -> TokenMap:
        """The tokens to serve with: a gateway without one could never let a desk in."""
        tokens = self.parsed_tokens()
        if not tokens:
            other = f"{flag('gateway.tokens_file')} / {envvar('gateway.tokens_file')}"
            raise ConfigError("gateway.tokens", f"no access token: give one here or in {other}")
        return tokens

    def replace(self, **changes: Any) -> GatewaySettings:
        return replace(self, **changes)
