"""The ports `tickstream run` listens on, checked before anything starts.

A port found taken half-way through start-up (after the topics, the seeds, the sink)
used to surface as a child's exit code or a bind's traceback. Checked first, each is one
line naming the flag that moves it: the run's metrics (``--metrics-port``), each
processor's (``--metrics-port`` + 1 + i), the gateway's (``--gateway-port``). The
ClickHouse HTTP interface checks its own (``tickstream.chdb_http.check_settings``).
Something may still take a port between the check and the bind: the child then refuses
to start with the same kind of line, and the run stops with it.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import NamedTuple

from cli.children import processor_metrics_port
from cli.run_control import RunFailed
from tickstream.settings import ConfigError, Settings, envvar

log = logging.getLogger("cli.runner")


class _Port(NamedTuple):
    port: int
    host: str
    owner: str  # what listens there, as a sentence says it
    flag: str  # as `tickstream run` spells the setting that moves it


def check_ports(settings: Settings, gateway_port_given: bool) -> str | None:
    """Raise (RunFailed, ConfigError) on a port the run needs and cannot have. Returns why the run
    serves no board when the gateway's default port is taken: a warning, as the board
    is a convenience unless its port was asked for."""
    ports = _ports(settings)
    seen: dict[int, _Port] = {}
    for wanted in ports:
        other = seen.setdefault(wanted.port, wanted)
        if other is not wanted:
            raise RunFailed(
                f"{wanted.flag}: port {wanted.port} would serve both {other.owner} and "
                f"{wanted.owner}; give each its own port"
            )
    http = settings.clickhouse_http_port
    if http in seen and settings.is_chdb:
        raise ConfigError(
            "clickhouse_http_port", f"port {http} is {seen[http].owner}'s too; give another"
        )
    skipped = None
    for wanted in ports:
        if wanted.port > 65535:
            raise RunFailed(
                f"{wanted.flag}: {wanted.owner} would need port {wanted.port}; pick a lower "
                "--metrics-port, or 0 for none"
            )
        problem = _taken(wanted.host, wanted.port)
        if not problem:
            continue
        message = (
            f"{wanted.flag}: cannot listen on {wanted.host}:{wanted.port} for {wanted.owner} "
            f"({problem}); is another tickstream run still running? Pick another port, or 0 "
            "for none"
        )
        if wanted.owner == "the gateway" and not gateway_port_given:
            log.warning("no live board: %s", message)
            skipped = f"none: port {wanted.port} is taken (see the warning above)"
            continue
        raise RunFailed(message)
    return skipped


def _ports(settings: Settings) -> list[_Port]:
    """The ports the run and its children listen on but for the ClickHouse HTTP one,
    whose own check knows whether a taken one warns or fails."""
    metrics = f"--metrics-port / {envvar('metrics_port')}"
    ports: list[_Port] = []
    if settings.metrics_port:
        ports.append(_Port(settings.metrics_port, "0.0.0.0", "the run's metrics", metrics))
        for i in range(settings.processors):
            port = processor_metrics_port(settings, i)
            owner = f"processor {i}'s metrics (--metrics-port + {1 + i})"
            ports.append(_Port(port, "0.0.0.0", owner, metrics))
    gateway = settings.gateway
    if gateway.port:
        flag = f"--gateway-port / {envvar('gateway.port')}"
        ports.append(_Port(gateway.port, gateway.host, "the gateway", flag))
    return ports


def _taken(host: str, port: int) -> str:
    """Why nothing can listen on host:port now ("" when it can): bound and released at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc)
    return ""
