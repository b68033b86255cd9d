"""docker-compose.yml without Docker: every tickstream service, started as compose starts it.

No Docker engine runs here. The test reads the compose file, resolved with a test .env by
`docker compose config` / `docker-compose config` when one is installed, else by a YAML-level
reader of the same interpolation rules, and for each service built from ./Dockerfile starts
`python -m cli <its command>` (the image's ENTRYPOINT, `tickstream`) with exactly its compose
environment over the image's ENV, mapped to this machine:

* addresses of compose services: the broker's in-network listener (kafka:9092) becomes the
  test broker, and, since no ClickHouse server runs here, the ClickHouse HTTP URL becomes a
  chDB directory of the service's own, holding the schema as the sink leaves it (the URL's
  credentials then go unused: test_deploy_files.py checks the roles);
* every port setting (metrics, gateway; a default one too) becomes a free local port, which
  stands for that container port from then on.

Each service must then start and stay up, and pass its compose healthcheck (its command, run
here) and the image's HEALTHCHECK; every scrape target of deploy/prometheus/prometheus.yml,
mapped the same way and reached on this machine's non-loopback address as another container
would reach it, must answer with metrics, scraped by a real Prometheus; every published port
must reach its service from outside; ticks must flow from the producer to the sink and to a
desk holding a token of the .env; the services must stop on SIGTERM within their grace
period; and no secret of the .env may appear in their output. A wrong variable, host, port or
scrape target in docker-compose.yml or prometheus.yml fails it.

The other tests here: a missing or empty secret stops `docker compose config` (and the
YAML-level reader) with a message naming it, and the YAML-level reader agrees with compose.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.prometheus_server import Prometheus, free_port, wait_for
from tickstream.settings import default_of, envvar, setting_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROM_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

START_TIMEOUT_S = 180.0
FLOW_TIMEOUT_S = 90.0
# Settings that are TCP ports a service listens on (TICKSTREAM_METRICS_PORT, _GATEWAY_PORT).
PORT_SETTINGS = tuple(n for n in setting_names() if n == "metrics_port" or n.endswith(".port"))


# ------------------------------------------------------------------- reading the compose file


class MissingVariable(Exception):
    """A ${NAME:?message} (or ${NAME?message}) variable without a value."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")


_REFERENCE = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution in every string of ``value`` (``$$`` is a ``$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match[str]) -> str:
        if m[1]:
            return "$"
        name = m[2] or m[5]
        how, arg = m[3] or "", m[4] or ""
        given = env.get(name)
        empty = not given  # the colon forms treat an empty value as unset
        if how == ":-":
            return arg if empty else str(given)
        if how == "-":
            return arg if given is None else given
        if how == ":+":
            return "" if empty else arg
        if how == "+":
            return "" if given is None else arg
        if (how == ":?" and empty) or (how == "?" and given is None):
            raise MissingVariable(name, arg)
        return given or ""

    return _REFERENCE.sub(substitute, value)


def required_variables() -> set[str]:
    """Variables docker-compose.yml writes ${NAME:?message}: compose stops without them."""
    return set(re.findall(r"\$\{(\w+):?\?", COMPOSE_FILE.read_text()))


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def yaml_level_config(env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file with its anchors merged and its variables substituted (no Docker)."""
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    return {key: interpolate(value, env) for key, value in doc.items() if not key.startswith("x-")}


def compose_cli() -> list[str] | None:
    if shutil.which("docker") and _quiet(["docker", "compose", "version"]) == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _quiet(cmd: list[str]) -> int:
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode


def compose_config(cli: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    """`compose config` with only this env file (nothing of this process's environment)."""
    return subprocess.run(
        [*cli, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)},
    )


def resolve_compose(env_file: Path) -> dict[str, Any]:
    cli = compose_cli()
    if cli is None:
        return yaml_level_config(read_env_file(env_file))
    proc = compose_config(cli, env_file)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def secret_values() -> dict[str, str]:
    """A value for every required variable: random passwords and two desk tokens."""
    values = {name: f"{name.lower()}-{secrets.token_hex(12)}" for name in required_variables()}
    values["GATEWAY_TOKENS"] = f"desk-{secrets.token_hex(8)},metals-{secrets.token_hex(8)}:XAU+XAG"
    return values


def write_env(path: Path, values: Mapping[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def secret_words(values: Mapping[str, str]) -> set[str]:
    """Every secret of the .env, the gateway's tokens one by one."""
    words = {v for k, v in values.items() if k in required_variables() and v}
    for entry in re.split(r"[,\s]+", values.get("GATEWAY_TOKENS", "")):
        if entry:
            words.add(entry.partition(":")[0])
    return words


# ------------------------------------------------------------------------ a missing secret


@pytest.mark.parametrize("name", sorted(required_variables()))
@pytest.mark.parametrize("how", ["missing", "empty"])
def test_a_missing_secret_stops_compose_naming_it(name: str, how: str, tmp_path: Path) -> None:
    values = secret_values()
    if how == "missing":
        del values[name]
    else:
        values[name] = ""
    env_file = write_env(tmp_path / "test.env", values)
    with pytest.raises(MissingVariable) as caught:
        yaml_level_config(read_env_file(env_file))
    assert caught.value.name == name
    assert name in str(caught.value) and ".env" in str(caught.value)
    cli = compose_cli()
    if cli is None:
        return  # the YAML-level check above stands in for it
    proc = compose_config(cli, env_file)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"compose accepted the file without {name}"
    assert f"set {name} in .env" in output, output
    leaked = [w for w in secret_words(values) if w in output]
    assert not leaked, "compose's message shows other secrets"


def test_yaml_level_reading_agrees_with_compose(tmp_path: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no compose implementation (docker compose / docker-compose) installed")
    values = secret_values()
    env_file = write_env(tmp_path / "test.env", values)
    ours = yaml_level_config(values)["services"]
    theirs = resolve_compose(env_file)["services"]
    assert set(ours) == set(theirs)
    for name, service in theirs.items():
        env = service.get("environment") or {}
        mine = ours[name].get("environment") or {}
        assert {k: str(v) for k, v in env.items()} == {k: str(v) for k, v in mine.items()}, name
        assert service.get("command") == ours[name].get("command"), name
        assert service["healthcheck"]["test"] == ours[name]["healthcheck"]["test"], name


# ------------------------------------------------------------------- the image (Dockerfile)


@dataclass(frozen=True)
class Image:
    entrypoint: list[str]
    env: dict[str, str]
    healthcheck: list[str]


def read_image() -> Image:
    """ENTRYPOINT, ENV and HEALTHCHECK of the Dockerfile's last stage (the runtime image)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")  # continued lines
    stage = re.split(r"^FROM ", text, flags=re.M)[-1]
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])\s*$", stage, re.M)
    health = re.search(r"^HEALTHCHECK .*?\bCMD (\[.*\])\s*$", stage, re.M)
    assert entrypoint and health, "the runtime stage needs an exec-form ENTRYPOINT and HEALTHCHECK"
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", stage, re.M):
        for word in shlex.split(line):
            key, _, value = word.partition("=")
            env[key] = value
    env.pop("PATH", None)  # the image's venv; here it is this interpreter's
    return Image(json.loads(entrypoint[1]), env, json.loads(health[1]))


# ------------------------------------------------------------------- services run locally


def outside_address() -> str | None:
    """An address of this machine other than loopback: how another container reaches it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    healthcheck: list[str]
    grace_s: float
    ports: dict[int, int] = field(default_factory=dict)  # container port -> local port
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "output.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def run_check(self, argv: list[str], env: Mapping[str, str] | None = None) -> int:
        try:
            return subprocess.run(
                argv, env=dict(env or self.env), capture_output=True, timeout=15
            ).returncode
        except subprocess.TimeoutExpired:
            return -1

    def healthy(self) -> bool:
        return self.run_check(self.healthcheck) == 0

    def stop(self) -> int | None:
        """SIGTERM, as `docker stop`; the exit code, or None when it outlived its grace."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                return None
        with contextlib.suppress(ProcessLookupError):  # whatever it left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


def _seconds(text: str | None, default: float) -> float:
    if not text:
        return default
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", str(text))
    assert match, text
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match[2]]


def _command_argv(test: Any) -> list[str]:
    """A compose healthcheck test as an argv: CMD as is, CMD-SHELL (or a string) through sh."""
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *rest = test
    if kind == "CMD-SHELL":
        return ["sh", "-c", rest[0]]
    assert kind == "CMD", test
    return list(rest)


def _with_ports(argv: list[str], ports: Mapping[int, int]) -> list[str]:
    """A port written into a command stands for the container's: the local one replaces it."""
    out = []
    for word in argv:
        for container, local in ports.items():
            word = re.sub(rf"(?<!\d){container}(?!\d)", str(local), word)
        out.append(word)
    return out


def _container_port(entry: Any) -> int:
    """The container side of a `ports` entry, short (127.0.0.1:8765:8765) or long syntax."""
    if isinstance(entry, dict):
        return int(entry["target"])
    return int(str(entry).split("/")[0].rsplit(":", 1)[-1])


def _in_network_kafka(services: Mapping[str, Any]) -> set[str]:
    """The broker's advertised addresses other containers use (kafka:9092)."""
    found = set()
    for name, svc in services.items():
        env = svc.get("environment") or {}
        for listener in str(env.get("KAFKA_ADVERTISED_LISTENERS", "")).split(","):
            address = listener.split("://", 1)[-1]
            host = address.rsplit(":", 1)[0]
            if host in (name, svc.get("hostname")):
                found.add(address)
    assert found, "no in-network Kafka listener in docker-compose.yml"
    return found


def _clickhouse_http(services: Mapping[str, Any]) -> set[tuple[str, int]]:
    """(host, port) of the ClickHouse server's HTTP interface inside the compose network."""
    found = set()
    for name, svc in services.items():
        if str(svc.get("image", "")).startswith("clickhouse/clickhouse-server"):
            found |= {(name, 8123), (str(svc.get("hostname", name)), 8123)}
    assert found, "no ClickHouse service in docker-compose.yml"
    return found


def _migrate_chdb(url: str, database: str) -> None:
    """The schema as the sink leaves it, in the chDB directory standing for the server."""
    code = (
        "import sys\n"
        "from sinks.schema import migrate\n"
        "from tickstream.clickhouse import connect\n"
        "from tickstream.settings import Settings\n"
        "s = Settings(clickhouse_url=sys.argv[1], clickhouse_database=sys.argv[2])\n"
        "client = connect(s)\n"
        "migrate(client, s.clickhouse_database)\n"
        "client.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, url, database],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def local_services(
    config: dict[str, Any], image: Image, bootstrap: str, base: Path
) -> list[Service]:
    """Each service built from ./Dockerfile, as this machine runs it (see the module doc)."""
    assert image.entrypoint == ["tickstream"], image.entrypoint  # = python -m cli
    services = config["services"]
    kafka = _in_network_kafka(services)
    clickhouse = _clickhouse_http(services)
    out = []
    for name, svc in services.items():
        if not svc.get("build"):
            continue
        workdir = base / name  # the image's WORKDIR /data
        workdir.mkdir(parents=True)
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            **image.env,
            **{k: str(v) for k, v in (svc.get("environment") or {}).items() if v is not None},
        }
        if "TICKSTREAM_KAFKA_BOOTSTRAP" in env:
            env["TICKSTREAM_KAFKA_BOOTSTRAP"] = ",".join(
                bootstrap if address.strip() in kafka else address
                for address in env["TICKSTREAM_KAFKA_BOOTSTRAP"].split(",")
            )
        if "TICKSTREAM_CLICKHOUSE_URL" in env:
            url = urlsplit(env["TICKSTREAM_CLICKHOUSE_URL"])
            if url.scheme == "http" and (url.hostname, url.port) in clickhouse:
                chdb = f"chdb://{workdir / 'chdb'}"
                _migrate_chdb(chdb, env.get("TICKSTREAM_CLICKHOUSE_DATABASE", "tickstream"))
                env["TICKSTREAM_CLICKHOUSE_URL"] = chdb
        ports: dict[int, int] = {}
        for setting in PORT_SETTINGS:
            container = int(env.get(envvar(setting), default_of(setting)))
            if container:
                ports[container] = free_port()
                env[envvar(setting)] = str(ports[container])
        command = svc["command"]
        if isinstance(command, str):
            command = shlex.split(command)
        healthcheck = svc.get("healthcheck") or {}
        assert healthcheck.get("test"), f"{name} has no healthcheck"
        out.append(
            Service(
                name=name,
                argv=[sys.executable, "-m", "cli", *command],
                env=env,
                workdir=workdir,
                healthcheck=_with_ports(_command_argv(healthcheck["test"]), ports),
                grace_s=_seconds(svc.get("stop_grace_period"), 10.0),
                ports=ports,
            )
        )
    assert out, "no service is built from ./Dockerfile"
    return out


@dataclass
class Stack:
    services: dict[str, Service]
    values: dict[str, str]
    compose: dict[str, Any]
    image: Image
    address: str  # where other containers reach a service: this machine, not loopback

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{s.log()[-3000:]}" for n, s in self.services.items())


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("compose")
    values = secret_values()
    values["TICKSTREAM_NAMESPACE"] = "t" + uuid.uuid4().hex[:10]
    env_file = write_env(base / "test.env", values)
    config = resolve_compose(env_file)
    image = read_image()
    services = {s.name: s for s in local_services(config, image, kafka_bootstrap, base)}
    running = Stack(services, values, config, image, outside_address() or "127.0.0.1")
    try:
        for service in services.values():
            service.start()

        def not_healthy() -> list[str]:
            down = [n for n, s in services.items() if not s.running()]
            assert not down, f"exited at start: {down}\n{running.logs()}"
            return [n for n, s in services.items() if not s.healthy()]

        unhealthy = wait_for(not_healthy, lambda left: not left, START_TIMEOUT_S, 1.0)
        assert not unhealthy, f"compose healthcheck fails: {unhealthy}\n{running.logs()}"
        yield running
    finally:
        for service in services.values():
            service.stop()


# ----------------------------------------------------------------------------------- checks


@pytest.mark.kafka
def test_every_service_starts_and_passes_its_compose_healthcheck(stack: Stack) -> None:
    time.sleep(3)  # still up a moment later: no crash right after the first good probe
    for name, service in stack.services.items():
        assert service.running(), f"{name} exited\n{service.log()[-3000:]}"
        assert service.healthy(), f"{name}: compose healthcheck fails\n{service.log()[-3000:]}"


@pytest.mark.kafka
def test_the_image_healthcheck_follows_the_role(stack: Stack) -> None:
    """The Dockerfile's HEALTHCHECK, with each service's environment (`docker run`)."""
    argv = _command_argv(["CMD", *stack.image.healthcheck])
    for name, service in stack.services.items():
        assert service.run_check(_with_ports(argv, service.ports)) == 0, (
            f"the image's HEALTHCHECK fails for {name}"
        )
    # and a container serving neither port is unhealthy
    service = next(iter(stack.services.values()))
    closed = {envvar(setting): str(free_port()) for setting in PORT_SETTINGS}
    assert service.run_check(argv, {**service.env, **closed}) != 0


def _scrape_config(stack: Stack, prometheus_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each target mapped to where its service runs."""
    config = yaml.safe_load(PROM_CONFIG.read_text())
    config.pop("rule_files", None)  # scraping only; alerts.yml has tests of its own
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s"}
    config["global"]["scrape_timeout"] = "1s"
    for job in config["scrape_configs"]:
        # a scalable service's replicas, found by DNS in compose: here its one process
        dns = job.pop("dns_sd_configs", [])
        if dns:
            targets = [f"{name}:{d['port']}" for d in dns for name in d["names"]]
            job.setdefault("static_configs", []).append({"targets": targets})
        for static in job.get("static_configs", []):
            static["targets"] = [
                _local_target(stack, t, prometheus_port) for t in static["targets"]
            ]
    return config


def _local_target(stack: Stack, target: str, prometheus_port: int) -> str:
    host, _, port = target.rpartition(":")
    if host in ("localhost", "127.0.0.1"):  # Prometheus itself
        prom = stack.compose["services"]["prometheus"]
        assert int(port) in [_container_port(p) for p in prom.get("ports", [])], target
        return f"127.0.0.1:{prometheus_port}"
    service = stack.services.get(host)
    assert service is not None, f"Prometheus scrapes {target}: no tickstream service {host!r}"
    assert int(port) in service.ports, (
        f"Prometheus scrapes {target}, but no port setting of {host} is {port} in its compose "
        f"settings (they say {sorted(service.ports)})"
    )
    return f"{stack.address}:{service.ports[int(port)]}"


@pytest.mark.kafka
def test_every_prometheus_target_answers_with_metrics(stack: Stack, tmp_path: Path) -> None:
    prom = Prometheus(tmp_path / "prometheus", {}, {})
    config = _scrape_config(stack, prom.port)
    prom.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    with prom:
        for name, job in jobs.items():  # each target directly first, for a clear message
            for static in job["static_configs"]:
                for target in static["targets"]:
                    body = _scrape(job, target)
                    assert "# TYPE " in body, f"job {name}: {target} serves no metrics"
                    if name != "prometheus":
                        assert "tickstream_" in body, f"job {name}: no tickstream_ metric"

        def up() -> dict[str, float]:
            result = prom.query("up").get("data", {}).get("result", [])
            return {r["metric"]["job"]: float(r["value"][1]) for r in result}

        seen = wait_for(up, lambda s: set(s) == set(jobs) and all(s.values()), 30)
        assert set(seen) == set(jobs) and all(seen.values()), f"up: {seen}\n{prom.log()}"
        ours = prom.query('count by (job) ({__name__=~"tickstream_.+"})')["data"]["result"]
        assert {r["metric"]["job"] for r in ours} == set(jobs) - {"prometheus"}


def _scrape(job: Mapping[str, Any], target: str) -> str:
    url = f"{job.get('scheme', 'http')}://{target}{job.get('metrics_path', '/metrics')}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())
    except OSError as exc:
        raise AssertionError(f"job {job['job_name']}: {url} does not answer: {exc}") from None


@pytest.mark.kafka
def test_published_ports_reach_their_service_from_outside(stack: Stack) -> None:
    if stack.address.startswith("127."):
        pytest.skip("this machine has no non-loopback address")
    for name, svc in stack.compose["services"].items():
        if name not in stack.services:
            continue
        for entry in svc.get("ports", []):
            container = _container_port(entry)
            service = stack.services[name]
            assert container in service.ports, (
                f"{name} publishes port {container}, on which it does not listen"
            )
            with socket.create_connection((stack.address, service.ports[container]), 5):
                pass  # a service bound to 127.0.0.1 in its container refuses this


def _gateway(stack: Stack) -> Service:
    (gateway,) = [s for s in stack.services.values() if s.argv[3:4] == ["gateway"]]
    return gateway


def _published(stack: Stack, service: Service) -> int:
    (entry,) = stack.compose["services"][service.name]["ports"]
    return service.ports[_container_port(entry)]


@pytest.mark.kafka
def test_ticks_flow_to_clickhouse_and_to_a_desk_with_a_token_of_the_env(stack: Stack) -> None:
    def total(metric: str, service: Service) -> float:
        port = service.env["TICKSTREAM_METRICS_PORT"]  # mapped already
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(metric + "{") or line.startswith(metric + " ")
        )

    checks = [
        ("producer", "tickstream_producer_ticks_total"),
        ("processor", "tickstream_processor_ticks_total"),
        ("sink", "tickstream_sink_rows_total"),
    ]
    for name, metric in checks:
        service = stack.services[name]
        got = wait_for(lambda s=service, m=metric: total(m, s), lambda v: v > 0, FLOW_TIMEOUT_S)
        assert got > 0, f"{name}: {metric} stays 0\n{stack.logs()}"

    gateway = _gateway(stack)
    port = _published(stack, gateway)
    tokens = [e.partition(":")[0] for e in stack.values["GATEWAY_TOKENS"].split(",")]
    for token in tokens:
        with ws_connect(f"ws://{stack.address}:{port}/ws?token={token}", open_timeout=10) as ws:
            ws.send(json.dumps({"op": "subscribe", "symbols": "*", "kinds": ["ticks"]}))
            first = json.loads(ws.recv(timeout=10))
            assert first["type"] == "snapshot", first
            deadline = time.monotonic() + 30
            kinds = set()
            while "tick" not in kinds and time.monotonic() < deadline:
                kinds.add(json.loads(ws.recv(timeout=30))["type"])
            assert "tick" in kinds, f"no tick reached the desk: {kinds}"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://{stack.address}:{port}/ws?token=not-{tokens[0]}", open_timeout=10)
    assert refused.value.response.status_code == 403


@pytest.mark.kafka
def test_services_stop_on_sigterm_and_never_print_a_secret(stack: Stack) -> None:
    for name, service in stack.services.items():
        code = service.stop()
        assert code is not None, f"{name} outlived its stop_grace_period of {service.grace_s}s"
        assert code == 0, f"{name} exit {code}\n{service.log()[-2000:]}"
    words = secret_words(stack.values)
    for name, service in stack.services.items():
        leaked = [w for w in words if w in service.log()]
        assert not leaked, f"{name} printed a secret of the .env"
