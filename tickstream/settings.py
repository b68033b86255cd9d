"""Settings, built once in an entry point and passed down.

Every setting has one name in three spellings: the dataclass field
``clickhouse_url``, the flag ``--clickhouse-url`` and the environment variable
``TICKSTREAM_CLICKHOUSE_URL``. The gateway's settings are a section of their own,
``GatewaySettings`` held as ``Settings.gateway``: qualified name ``gateway.tls_cert``,
variable ``TICKSTREAM_GATEWAY_TLS_CERT``, flag ``--tls-cert`` on `tickstream gateway`
(and ``--gateway-tls-cert`` on `tickstream run`, which starts a gateway among other
things). Nothing here reads the environment at import time; click does that when a
command starts, and ``Settings.to_env`` is how a child process gets the same settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tickstream.redact import redact_url

ENV_PREFIX = "TICKSTREAM_"


class ConfigError(ValueError):
    """A setting is wrong; the message names it as flag and environment variable."""

    def __init__(self, name: str, problem: str) -> None:
        self.setting = name  # qualified: "namespace", "gateway.port"
        self.problem = problem
        super().__init__(f"{flag(name)} / {envvar(name)}: {problem}")


def flag(name: str) -> str:
    """``level_steps`` -> ``--level-steps``; ``gateway.tls_cert`` -> ``--tls-cert``.

    A section's settings are spelled as on the section's own command (`tickstream gateway`).
    """
    return "--" + name.rpartition(".")[2].replace("_", "-")


def envvar(name: str) -> str:
    """``gateway.port`` -> ``TICKSTREAM_GATEWAY_PORT``: one variable whatever the command."""
    return ENV_PREFIX + name.replace(".", "_").upper()


_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_HOSTPORT_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def normalize_clickhouse_url(url: str, base: Path | None = None) -> str:
    """Accept ``chdb://./rel``, ``chdb:rel`` and ``chdb:///abs``; return an absolute chdb URL.

    clickhouse-connect reads ``chdb://x/y`` as location ``x`` and database ``y``,
    so relative paths are made absolute here before they reach it.
    """
    if url.startswith("chdb:"):
        rest = url[len("chdb:") :]
        if rest.startswith("///"):
            return url
        rest = rest.removeprefix("//")
        if rest in ("", "memory", ":memory:"):
            raise ConfigError(
                "clickhouse_url", "an in-memory chDB would lose every row; give a directory"
            )
        path = Path(rest)
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return "chdb://" + str(path.resolve())
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            "clickhouse_url",
            f"{redact_url(url)!r} is neither chdb:///<dir> nor http(s)://host:port",
        )
    return url


# --------------------------------------------------------------------------- the gateway

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
            _check_file(f"gateway.{name}", getattr(self, name))
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


# --------------------------------------------------------------------------- all settings


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a tickstream process needs to know, validated once."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    namespace: str = "tickstream"
    clickhouse_url: str = field(default="chdb://./.tickstream/chdb", repr=False)  # a password
    clickhouse_database: str = "tickstream"
    partitions: int = 3
    metrics_port: int = 9464
    allowed_lateness_ms: int = 2_000
    lateness_by_symbol: str = ""  # e.g. "XAU:0;XAG:500": per-symbol allowed lateness (ms)
    sink_batch_rows: int = 50_000
    sink_flush_ms: int = 1_000
    ticks_ttl_days: int = 0
    processor_batch: int = 5_000
    processor_batch_ms: int = 200
    rolling_windows: str = "1h,1d,7d,52w"
    level_steps: str = "XAU:100,1000;XAG:1,10"
    level_hysteresis: float = 0.001
    sync_groups: str = "XAU+XAG"
    sync_span_ms: int = 86_400_000
    divergence_pairs: str = "XAU/XAG"
    divergence_clock_ms: int = 60_000
    divergence_lookback_ms: int = 20 * 86_400_000
    divergence_return_horizon_ms: int = 86_400_000
    divergence_z_open: float = 2.0
    divergence_z_close: float = 1.0
    record_seeds: str = ""
    sim_rate: float = 20.0  # `tickstream run`: the simulated market's ticks/s (0 = unpaced)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)

    def __post_init__(self) -> None:
        if not _NAMESPACE_RE.match(self.namespace):
            raise ConfigError(
                "namespace", f"{self.namespace!r} must be 1-64 letters, digits, '-' or '_'"
            )
        for server in self.kafka_bootstrap.split(","):
            if not _HOSTPORT_RE.match(server.strip()):
                raise ConfigError(
                    "kafka_bootstrap", f"{server!r} is not host:port (e.g. 127.0.0.1:9092)"
                )
        object.__setattr__(self, "clickhouse_url", normalize_clickhouse_url(self.clickhouse_url))
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.clickhouse_database):
            raise ConfigError("clickhouse_database", f"{self.clickhouse_database!r} is not a name")
        _positive(self, "partitions", upper=1024)
        _positive(self, "processor_batch")
        _positive(self, "processor_batch_ms")
        _positive(self, "sink_batch_rows")
        _positive(self, "sink_flush_ms")
        if self.allowed_lateness_ms < 0:
            raise ConfigError("allowed_lateness_ms", "must be >= 0")
        if self.ticks_ttl_days < 0:
            raise ConfigError("ticks_ttl_days", "must be 0 (keep forever) or a number of days")
        if not 0 <= self.sim_rate < float("inf"):  # NaN fails too
            raise ConfigError(
                "sim_rate", f"must be ticks/s >= 0 (0 = as fast as possible), got {self.sim_rate}"
            )
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("metrics_port", "must be 0 (off) or a TCP port")
        for name in (
            "rolling_windows",
            "level_steps",
            "sync_groups",
            "divergence_pairs",
            "lateness_by_symbol",
        ):
            getattr(self, f"parsed_{name}")()
        if not 0 <= self.level_hysteresis < 1:
            raise ConfigError("level_hysteresis", "must be in [0, 1), e.g. 0.001 for 0.1%")
        if not 0 <= self.divergence_z_close <= self.divergence_z_open:
            raise ConfigError("divergence_z_close", "need 0 <= z_close <= z_open")
        clock = self.divergence_clock_ms
        _positive(self, "divergence_clock_ms")
        for name in ("divergence_lookback_ms", "divergence_return_horizon_ms"):
            value = getattr(self, name)
            if value < clock or value % clock:
                raise ConfigError(
                    name, f"must be a positive multiple of divergence_clock_ms ({clock})"
                )
        _check_file("record_seeds", self.record_seeds)

    def parsed_rolling_windows(self) -> dict[str, int]:
        """'1h,1d,7d,52w' -> {'1h': 3600000, ...}; units s, m, h, d, w."""
        out: dict[str, int] = {}
        for label in _items(self.rolling_windows, ","):
            match = re.fullmatch(r"(\d+)([smhdw])", label)
            if not match:
                raise ConfigError("rolling_windows", f"{label!r} is not like 1h, 30m, 7d, 52w")
            out[label] = int(match[1]) * _UNIT_MS[match[2]]
        if not out:
            raise ConfigError("rolling_windows", "name at least one window")
        return out

    def parsed_lateness_by_symbol(self) -> dict[str, int]:
        """'XAU:0;XAG:500' -> {'XAU': 0, 'XAG': 500}: symbols whose lateness is not the default."""
        out: dict[str, int] = {}
        for item in _items(self.lateness_by_symbol, ";"):
            symbol, sep, value = item.partition(":")
            if not sep or not symbol.strip() or not value.strip().isdigit():
                raise ConfigError("lateness_by_symbol", f"{item!r} is not like XAU:0 (ms >= 0)")
            out[symbol.strip()] = int(value)
        return out

    def parsed_level_steps(self) -> dict[str, tuple[float, ...]]:
        """'XAU:100,1000;XAG:1,10' -> {'XAU': (100.0, 1000.0), 'XAG': (1.0, 10.0)}."""
        out: dict[str, tuple[float, ...]] = {}
        for item in _items(self.level_steps, ";"):
            symbol, sep, steps = item.partition(":")
            try:
                values = tuple(float(v) for v in _items(steps, ","))
            except ValueError:
                values = ()
            if not sep or not symbol.strip() or not values or any(v <= 0 for v in values):
                raise ConfigError("level_steps", f"{item!r} is not like XAU:100,1000")
            out[symbol.strip()] = values
        return out

    def parsed_sync_groups(self) -> list[tuple[str, ...]]:
        """'XAU+XAG;XPT+XPD' -> [('XAU', 'XAG'), ('XPT', 'XPD')]."""
        groups = [tuple(s.strip() for s in g.split("+")) for g in _items(self.sync_groups, ";")]
        for group in groups:
            if len(set(group)) < 2 or not all(group):
                raise ConfigError(
                    "sync_groups", f"{'+'.join(group)!r} needs two symbols, e.g. XAU+XAG"
                )
        return groups

    def parsed_divergence_pairs(self) -> list[tuple[str, str]]:
        """'XAU/XAG,XPT/XAU' -> [('XAU', 'XAG'), ('XPT', 'XAU')]."""
        pairs: list[tuple[str, str]] = []
        for item in _items(self.divergence_pairs, ","):
            a, sep, b = item.partition("/")
            if not sep or not a.strip() or not b.strip() or a.strip() == b.strip():
                raise ConfigError("divergence_pairs", f"{item!r} is not like XAU/XAG")
            pairs.append((a.strip(), b.strip()))
        return pairs

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def is_chdb(self) -> bool:
        return self.clickhouse_url.startswith("chdb:")

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def flat(self) -> dict[str, Any]:
        """Every setting by qualified name (``gateway.port``): one loop serves every section."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if is_dataclass(value):
                out.update({f"{f.name}.{g.name}": getattr(value, g.name) for g in fields(value)})
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> Settings:
        """The inverse of ``flat``, for click's flat options; a setting not given is defaulted."""
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            section, dot, key = name.partition(".")
            if dot:
                sections.setdefault(section, {})[key] = value
            else:
                top[name] = value
        kinds = _sections()
        for section, section_values in sections.items():
            top[section] = kinds[section](**section_values)
        return cls(**top)

    def to_env(self) -> dict[str, str]:
        """Every setting as its TICKSTREAM_* variable: the whole Settings for a child process.

        Generic over the fields, so a setting added to the dataclass reaches the children
        of `tickstream run` with nothing else to change.
        """
        return {envvar(name): str(value) for name, value in self.flat().items()}


def setting_names() -> tuple[str, ...]:
    """The qualified name of every setting, sections' included, in declaration order."""
    sections = _sections()
    names: list[str] = []
    for f in fields(Settings):
        if f.name in sections:
            names.extend(f"{f.name}.{g.name}" for g in fields(sections[f.name]))
        else:
            names.append(f.name)
    return tuple(names)


def default_of(name: str) -> Any:
    """A setting's declared default: what --help shows, and what an emptied value hides."""
    section, dot, key = name.partition(".")
    owner: Any = _sections()[section] if dot else Settings
    f = {f.name: f for f in fields(owner)}[key if dot else name]
    return f.default


def _sections() -> dict[str, Any]:
    """Settings' sections (fields holding a dataclass of their own), by field name."""
    return {
        f.name: f.default_factory
        for f in fields(Settings)
        if f.default_factory is not MISSING and is_dataclass(f.default_factory)
    }


_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def _items(text: str, sep: str) -> list[str]:
    return [part.strip() for part in text.split(sep) if part.strip()]


def _check_file(name: str, path: str) -> None:
    if path and not Path(path).is_file():
        raise ConfigError(name, f"{path!r} is not a file")


def _positive(settings: Settings, name: str, upper: int | None = None) -> None:
    value = getattr(settings, name)
    if value <= 0 or (upper is not None and value > upper):
        bound = f" and <= {upper}" if upper else ""
        raise ConfigError(name, f"must be > 0{bound}, got {value}")
