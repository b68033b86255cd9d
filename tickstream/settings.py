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

import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tickstream.config_base import ENV_PREFIX, ConfigError, check_file, envvar, flag
from tickstream.gateway_settings import (
    GatewaySettings,
    TokenMap,
    check_gateway_limits,
    check_token,
    parse_token_file,
    parse_token_list,
)
from tickstream.redact import redact_url

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "GatewaySettings",
    "Settings",
    "TokenMap",
    "check_gateway_limits",
    "check_token",
    "envvar",
    "flag",
    "parse_token_file",
    "parse_token_list",
]

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DEFAULT_NAMESPACE = "tickstream"


def database_for(namespace: str) -> str:
    """The ClickHouse database a namespace writes to unless told otherwise.

    Topics alone do not keep two namespaces apart: with one shared database, the rows of
    ``--namespace scratch`` would sit in the same tables as the live market's, with nothing
    to tell them apart. The default namespace keeps ``tickstream`` (deployments, grants and
    dashboards name it); any other gets ``tickstream_<namespace>`` ('-' becomes '_', which
    a database name cannot hold, so ``a-b`` and ``a_b`` share one: name them apart).
    """
    if namespace == DEFAULT_NAMESPACE:
        return DEFAULT_NAMESPACE
    return f"{DEFAULT_NAMESPACE}_{namespace.replace('-', '_')}"


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


# --------------------------------------------------------------------------- all settings


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a tickstream process needs to know, validated once."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    namespace: str = DEFAULT_NAMESPACE
    clickhouse_url: str = field(default="chdb://./.tickstream/chdb", repr=False)  # a password
    clickhouse_database: str = ""  # "" = the namespace's own (database_for): never left empty
    # fixed for a namespace: symbol groups are keyed to partitions, which bound the workers
    partitions: int = 3
    # `tickstream run`: stream processor children, one consumer group sharing the partitions
    processors: int = 1
    metrics_port: int = 9464
    # ClickHouse's HTTP interface over the chDB directory, served by the process holding it
    # (tickstream.chdb_http); 0 = off. `tickstream run` serves on 8124 unless told otherwise.
    clickhouse_http_port: int = 0
    clickhouse_http_host: str = "127.0.0.1"
    clickhouse_http_password: str = field(default="", repr=False)  # secret: never in a repr
    clickhouse_http_writable: bool = False
    clickhouse_wait_s: float = 60.0  # the processor waits this long for its record seeds
    allowed_lateness_ms: int = 2_000
    lateness_by_symbol: str = ""  # e.g. "XAU:0;XAG:500": per-symbol allowed lateness (ms)
    # producers: a symbol quiet this long (wall clock) gets a clock heartbeat, so that the
    # processor's watermark advances and its last ticks are confirmed (0 = off)
    heartbeat_ms: int = 250
    # producers: a symbol's ticks leave at most once per publish_linger_ms under a steady
    # stream (a lone tick leaves at once): the desk's latency against messages per second
    publish_linger_ms: int = 5
    # a symbol with neither seed nor history makes no all-time high/low rows during its
    # first record_warmup_ms of event time (its records are tracked meanwhile)
    record_warmup_ms: int = 86_400_000
    # clock jumps (processors/kernels/ordering.py): a tick stamped further than this past
    # its symbol's clock moves it only once jump_confirm_ticks later ticks confirm it
    max_jump_ms: int = 60_000  # 0 = off
    max_jump_by_symbol: str = ""  # e.g. "XAU:0;XAG:30000": per-symbol max_jump_ms
    jump_confirm_ticks: int = 1
    # producers: sanity band per symbol, refused outright as out_of_band
    price_bands: str = ""  # e.g. "XAU:100-100000;XAG:1-5000"
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
        if not self.clickhouse_database:
            object.__setattr__(self, "clickhouse_database", database_for(self.namespace))
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.clickhouse_database):
            raise ConfigError("clickhouse_database", f"{self.clickhouse_database!r} is not a name")
        _positive(self, "partitions", upper=1024)
        if not 1 <= self.processors <= self.partitions:
            beyond = ": one beyond the partitions would have none to work on"
            raise ConfigError(
                "processors",
                f"must be between 1 and the partitions ({flag('partitions')}, "
                f"{self.partitions}), got {self.processors}{beyond if self.processors > 1 else ''}",
            )
        _positive(self, "processor_batch")
        _positive(self, "processor_batch_ms")
        _positive(self, "sink_batch_rows")
        _positive(self, "sink_flush_ms")
        if self.allowed_lateness_ms < 0:
            raise ConfigError("allowed_lateness_ms", "must be >= 0")
        if self.max_jump_ms < 0:
            raise ConfigError(
                "max_jump_ms",
                f"must be 0 (clock jumps not checked) or ms > 0, got {self.max_jump_ms}",
            )
        for name in ("heartbeat_ms", "record_warmup_ms", "publish_linger_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0 (ms; 0 = off), got {getattr(self, name)}")
        if self.jump_confirm_ticks < 1:
            raise ConfigError(
                "jump_confirm_ticks", f"must be >= 1 (ticks), got {self.jump_confirm_ticks}"
            )
        if self.ticks_ttl_days < 0:
            raise ConfigError("ticks_ttl_days", "must be 0 (keep forever) or a number of days")
        if not 0 <= self.sim_rate < float("inf"):  # NaN fails too
            raise ConfigError(
                "sim_rate", f"must be ticks/s >= 0 (0 = as fast as possible), got {self.sim_rate}"
            )
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("metrics_port", "must be 0 (off) or a TCP port")
        if not 0 <= self.clickhouse_http_port <= 65535:
            raise ConfigError("clickhouse_http_port", "must be 0 (off) or a TCP port")
        if not 0 < self.clickhouse_wait_s < float("inf"):
            raise ConfigError(
                "clickhouse_wait_s", f"must be seconds > 0, got {self.clickhouse_wait_s}"
            )
        if not self.clickhouse_http_host:
            raise ConfigError("clickhouse_http_host", "give an interface, e.g. 127.0.0.1")
        for name in (
            "rolling_windows",
            "level_steps",
            "sync_groups",
            "divergence_pairs",
            "lateness_by_symbol",
            "max_jump_by_symbol",
            "price_bands",
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
        check_file("record_seeds", self.record_seeds)

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
        return _per_symbol_ms(self, "lateness_by_symbol", "XAU:0")

    def parsed_max_jump_by_symbol(self) -> dict[str, int]:
        """'XAU:0;XAG:30000' -> {'XAU': 0, 'XAG': 30000}: symbols whose max_jump_ms is not
        the default (0: that symbol's clock jumps are not checked)."""
        return _per_symbol_ms(self, "max_jump_by_symbol", "XAG:30000")

    def parsed_price_bands(self) -> dict[str, tuple[float, float]]:
        """'XAU:100-100000;XAG:1-5000' -> {'XAU': (100.0, 100000.0), 'XAG': (1.0, 5000.0)}."""
        try:
            return parse_price_bands(self.price_bands)
        except ValueError as exc:
            raise ConfigError("price_bands", str(exc)) from None

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
        """A copy with ``changes``; a database that followed the namespace follows its change.

        Otherwise ``replace(namespace="x")`` would keep the old namespace's database, and the
        new namespace's rows would land among the old one's.
        """
        follows = self.clickhouse_database == database_for(self.namespace)
        if "namespace" in changes and "clickhouse_database" not in changes and follows:
            changes["clickhouse_database"] = ""
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


def _per_symbol_ms(settings: Settings, name: str, example: str) -> dict[str, int]:
    """'A:0;B:500' -> {'A': 0, 'B': 500}: a per-symbol override of a setting in ms."""
    out: dict[str, int] = {}
    for item in _items(getattr(settings, name), ";"):
        symbol, sep, value = item.partition(":")
        if not sep or not symbol.strip() or not value.strip().isdigit():
            raise ConfigError(name, f"{item!r} is not like {example} (ms >= 0)")
        out[symbol.strip()] = int(value)
    return out


_BAND_RE = re.compile(r"^\s*([^:;\s]+)\s*:\s*([0-9.eE+]+)\s*-\s*([0-9.eE+]+)\s*$")


def parse_price_bands(text: str) -> dict[str, tuple[float, float]]:
    """``"XAU:100-100000;XAG:1-5000"`` -> {"XAU": (100.0, 100000.0), ...}; ValueError names
    the entry. Here rather than in producers/ so that Settings checks the setting at
    start-up without importing a producer (``producers.validation`` re-exports it)."""
    bands: dict[str, tuple[float, float]] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        match = _BAND_RE.match(item)
        if match is None:
            raise ValueError(f"{item.strip()!r} is not like XAU:100-100000")
        try:
            low, high = float(match.group(2)), float(match.group(3))
        except ValueError:
            raise ValueError(f"{item.strip()!r}: the bounds are not numbers") from None
        if not (0 < low <= high and math.isfinite(high)):
            raise ValueError(f"{item.strip()!r}: need 0 < low <= high")
        bands[match.group(1)] = (low, high)
    return bands


def _positive(settings: Settings, name: str, upper: int | None = None) -> None:
    value = getattr(settings, name)
    if value <= 0 or (upper is not None and value > upper):
        bound = f" and <= {upper}" if upper else ""
        raise ConfigError(name, f"must be > 0{bound}, got {value}")
