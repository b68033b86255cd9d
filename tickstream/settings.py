"""Settings, built once in an entry point and passed down.

Every setting has one name in three spellings: the dataclass field
``clickhouse_url``, the flag ``--clickhouse-url`` and the environment variable
``TICKSTREAM_CLICKHOUSE_URL``. Nothing here reads the environment at import
time; click does that when a command starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

ENV_PREFIX = "TICKSTREAM_"


class ConfigError(ValueError):
    """A setting is wrong; the message names it as flag and environment variable."""

    def __init__(self, name: str, problem: str) -> None:
        self.setting = name
        super().__init__(f"{flag(name)} / {envvar(name)}: {problem}")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def envvar(name: str) -> str:
    return ENV_PREFIX + name.upper()


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
            f"{url!r} is neither chdb:///<dir> nor http(s)://host:port",
        )
    return url


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a tickstream process needs to know, validated once."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    namespace: str = "tickstream"
    clickhouse_url: str = "chdb://./.tickstream/chdb"
    clickhouse_database: str = "tickstream"
    partitions: int = 3
    metrics_port: int = 9464
    allowed_lateness_ms: int = 2_000
    bar_interval_ms: int = 60_000
    sink_batch_rows: int = 50_000
    sink_flush_ms: int = 1_000
    processor_batch: int = 5_000
    processor_batch_ms: int = 200

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
        _positive(self, "bar_interval_ms")
        if self.bar_interval_ms % 1000:
            raise ConfigError("bar_interval_ms", "must be a whole number of seconds")
        if self.allowed_lateness_ms < 0:
            raise ConfigError("allowed_lateness_ms", "must be >= 0")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("metrics_port", "must be 0 (off) or a TCP port")

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def is_chdb(self) -> bool:
        return self.clickhouse_url.startswith("chdb:")

    def replace(self, **changes: object) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)  # type: ignore[arg-type]


def _positive(settings: Settings, name: str, upper: int | None = None) -> None:
    value = getattr(settings, name)
    if value <= 0 or (upper is not None and value > upper):
        bound = f" and <= {upper}" if upper else ""
        raise ConfigError(name, f"must be > 0{bound}, got {value}")
