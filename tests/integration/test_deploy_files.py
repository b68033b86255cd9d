"""Checks of the production stack files: compose, Dockerfile, Prometheus rules, Grafana.

Nothing here needs Docker or a running service. promtool comes from Debian's prometheus
package (scripts/install-prometheus.sh installs it when missing); the dashboards' SQL runs
against an embedded chDB holding small tables of the documented shape.

The helpers ``dashboard_promql``, ``dashboard_sql``, ``expand_grafana_promql`` and
``expand_clickhouse_macros`` are meant for tests that evaluate the same queries against a
live Prometheus / ClickHouse.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from tickstream import metrics
from tickstream.settings import default_of, envvar, setting_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARDS = {
    "pipeline-health": DEPLOY / "grafana" / "dashboards" / "pipeline-health.json",
    "markets": DEPLOY / "grafana" / "dashboards" / "markets.json",
}
TICKSTREAM_SERVICES = ("producer", "processor", "sink", "gateway")
CLICKHOUSE_USERS = DEPLOY / "clickhouse" / "users.d" / "tickstream.xml"
CLICKHOUSE_CONFIG = DEPLOY / "clickhouse" / "config.d" / "access-control.xml"
ENV_EXAMPLE = ROOT / ".env.example"
# The setting whose port serves each service's /metrics: the gateway's are on its desk port.
METRICS_PORT_SETTING = {"gateway": "gateway.port"}
# The ClickHouse user of each service that talks to ClickHouse; the others get no credentials.
CLICKHOUSE_ROLE = {"sink": "tickstream_writer", "processor": "tickstream_reader"}


# ---------------------------------------------------------------------------------- helpers


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_dashboard(name: str) -> dict[str, Any]:
    return json.loads(DASHBOARDS[name].read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def dashboard_promql(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every Prometheus query in a dashboard: panel targets."""
    found = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                found.append((f"{panel['title']}/{target['refId']}", target["expr"]))
    return found


def dashboard_sql(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, sql) of every ClickHouse query: panel targets, annotations and variables."""
    found = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            if "rawSql" in target:
                found.append((f"{panel['title']}/{target['refId']}", target["rawSql"]))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        sql = annotation.get("target", {}).get("rawSql")
        if sql:
            found.append((f"annotation {annotation['name']}", sql))
    for variable in dashboard.get("templating", {}).get("list", []):
        if (
            variable.get("type") == "query"
            and isinstance(variable.get("query"), str)
            and variable.get("datasource", {}).get("uid") == "clickhouse"
        ):
            found.append((f"variable {variable['name']}", variable["query"]))
    return found


def expand_grafana_promql(expr: str, rate_interval: str = "1m") -> str:
    """Replace Grafana's interval variables so Prometheus (or promtool) accepts the expr."""
    for var, value in (
        ("$__rate_interval", rate_interval),
        ("${__rate_interval}", rate_interval),
        ("$__interval", "15s"),
        ("${__interval}", "15s"),
        ("$__range", "1h"),
    ):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unexpanded variable in {expr!r}"
    return expr


def expand_clickhouse_macros(
    sql: str, start_s: int, end_s: int, symbols: list[str], interval_s: int = 60
) -> str:
    """Expand grafana-clickhouse-datasource macros and the $symbol variable as Grafana does."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m[1]} >= toDateTime({start_s}) AND {m[1]} <= toDateTime({end_s})",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\((\w+)\)",
        lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {interval_s} second)",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({start_s})")
    sql = sql.replace("$__toTime", f"toDateTime({end_s})")
    sql = sql.replace("${symbol:singlequote}", ",".join(f"'{s}'" for s in symbols))
    assert "$" not in sql, f"unexpanded macro or variable in {sql!r}"
    return sql


def defined_metric_names() -> set[str]:
    """Every series name tickstream/metrics.py can expose (counters _total, histograms ...)."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            if family.type == "counter":
                names |= {f"{family.name}_total", f"{family.name}_created"}
            elif family.type == "histogram":
                names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
            else:
                names.add(family.name)
    return names


_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Roughly the metric names an expression selects (enough for our dashboards and rules)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range / subquery selectors
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        word, call = m[1], m[2]
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


# --------------------------------------------------------------------------------- promtool


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool on PATH, installed from Debian's prometheus package when missing."""
    path = shutil.which("promtool")
    if path is None:
        proc = _run(["bash", str(ROOT / "scripts" / "install-prometheus.sh")])
        assert proc.returncode == 0, f"install-prometheus.sh failed:\n{proc.stdout}{proc.stderr}"
        path = shutil.which("promtool")
    assert path, "promtool still missing after scripts/install-prometheus.sh"
    return path


def test_promtool_accepts_alert_rules(promtool: str) -> None:
    proc = _run([promtool, "check", "rules", str(ALERTS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_accepts_prometheus_config(promtool: str) -> None:
    proc = _run([promtool, "check", "config", str(PROM_CONFIG)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_parses_every_dashboard_expression(promtool: str, tmp_path: Path) -> None:
    exprs = dashboard_promql(load_dashboard("pipeline-health"))
    assert exprs
    rules = [
        {"record": f"tickstream:dashboard_expr_{i}", "expr": expand_grafana_promql(expr)}
        for i, (_, expr) in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = _run([promtool, "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(rules)} rules found" in proc.stdout


def _alert_expr(name: str) -> str:
    (rule,) = [r for r in alert_rules() if r.get("alert") == name]
    return " ".join(rule["expr"].split())


def test_alert_expressions_select_what_they_should(promtool: str, tmp_path: Path) -> None:
    """promtool unit test: each key alert expression on a small synthetic history."""
    series = [
        # a healthy source and one that rejects half of its input, one that only rejects
        ('tickstream_producer_ticks_total{source="clean",symbol="XAU"}', "0+600x20"),
        ('tickstream_producer_rejected_total{source="clean",reason="spike"}', "0+6x20"),
        ('tickstream_producer_ticks_total{source="sim",symbol="XAG"}', "0+60x20"),
        ('tickstream_producer_rejected_total{source="sim",reason="spike"}', "0+60x20"),
        ('tickstream_producer_rejected_total{source="bad",reason="parse"}', "0+60x20"),
        # the processor consumed nothing
        ('tickstream_processor_ticks_total{symbol="XAU"}', "0+0x20"),
        # XAU last seen at t=0, XAG kept current
        ('tickstream_last_tick_timestamp_seconds{component="processor",symbol="XAU"}', "0x20"),
        ('tickstream_last_tick_timestamp_seconds{component="processor",symbol="XAG"}', "0+60x20"),
        # one group falling behind, one steady
        (
            'tickstream_consumer_lag_messages{group="g1",topic="t.ticks",partition="0"}',
            "0+200x20",
        ),
        ('tickstream_consumer_lag_messages{group="g1",topic="t.ticks",partition="1"}', "1000x20"),
        ('tickstream_consumer_lag_messages{group="g2",topic="t.ticks",partition="0"}', "5000x20"),
        # sink failing on one table
        ('tickstream_sink_errors_total{table="bars_1m",reason="timeout"}', "0+60x20"),
        ("tickstream_sink_retries_total", "0+60x20"),
        # one row quarantined at t=5m, none on another table
        (
            'tickstream_sink_quarantined_rows_total{table="record_breaks",reason_class="parse"}',
            "0x4 1x15",
        ),
        ('tickstream_sink_quarantined_rows_total{table="ticks",reason_class="parse"}', "0x20"),
    ]
    cases = [
        ("TickstreamRejectionRateSpike", [('{source="sim"}', 0.5), ('{source="bad"}', 1)]),
        ("TickstreamProcessorStalled", [("{}", 0)]),
        ("TickstreamNoTicksProduced", []),
        ("TickstreamStaleFeed", [('{symbol="XAU"}', 600)]),
        ("TickstreamConsumerLagGrowing", [('{group="g1",topic="t.ticks"}', 3000)]),
        ("TickstreamSinkInsertErrors", [('{table="bars_1m",reason="timeout"}', 1)]),
        ("TickstreamSinkRetrying", [("{}", 1)]),
        ("TickstreamSinkQuarantinedRows", [('{table="record_breaks",reason_class="parse"}', 1)]),
    ]
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": [
                    {
                        "expr": _alert_expr(name),
                        "eval_time": "10m",
                        "exp_samples": [{"labels": lbl, "value": val} for lbl, val in samples],
                    }
                    for name, samples in cases
                ],
            },
            {
                # nothing published at all: the counter is absent
                "interval": "1m",
                "input_series": [{"series": "tickstream_sink_retries_total", "values": "0x20"}],
                "promql_expr_test": [
                    {
                        "expr": _alert_expr("TickstreamNoTicksProduced"),
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": 0}],
                    }
                ],
            },
        ],
    }
    path = tmp_path / "alerts-test.yml"
    path.write_text(yaml.safe_dump(tests))
    proc = _run([promtool, "test", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]
    text = ALERTS.read_text()
    for needed in (
        "tickstream_consumer_lag_messages",
        "tickstream_last_tick_timestamp_seconds",
        "tickstream_sink_errors_total",
        "tickstream_sink_retries_total",
        "tickstream_sink_quarantined_rows_total",
        "tickstream_producer_rejected_total",
        "tickstream_producer_ticks_total",
        "tickstream_processor_ticks_total",
    ):
        assert needed in text, f"no alert on {needed}"


# ------------------------------------------------------------------------- metric names


def test_promql_name_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(a_bucket{x="b c"}[5m])))'
        " / on() group_left sum without (x) (b_total offset 5m) or vector(0) > bool 1e3"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total"}


def test_every_promql_expression_names_defined_metrics() -> None:
    defined = defined_metric_names()
    assert "tickstream_producer_ticks_total" in defined
    assert "tickstream_e2e_latency_seconds_bucket" in defined
    exprs = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    for name in DASHBOARDS:
        exprs += [(f"{name}: {w}", e) for w, e in dashboard_promql(load_dashboard(name))]
    unknown = {
        where: sorted(promql_metric_names(expr) - defined)
        for where, expr in exprs
        if promql_metric_names(expr) - defined
    }
    assert not unknown, f"metrics not defined in tickstream/metrics.py: {unknown}"
    for where, expr in exprs:
        assert promql_metric_names(expr), f"{where} selects no metric: {expr}"


# ---------------------------------------------------------------------------------- compose


def test_compose_services_are_complete() -> None:
    services = compose()["services"]
    assert {
        "kafka",
        "clickhouse",
        "prometheus",
        "grafana",
        *TICKSTREAM_SERVICES,
    } <= set(services)
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("restart"), f"{name} has no restart policy"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}"
            assert services[dep].get("healthcheck"), f"{name} waits on {dep} without healthcheck"
    for name in TICKSTREAM_SERVICES:
        assert services[name]["build"]["context"] == "."
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["clickhouse"]["ulimits"]["nofile"]["soft"] >= 262144
    named = set(compose()["volumes"])
    for svc in services.values():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in named, f"volume {source} is not declared"


def command_envvars(command: list[str]) -> set[str]:
    """The environment variables `tickstream COMMAND...` reads: its options' and its groups'."""
    import click

    from cli.main import _register, cli

    def read_by(node: click.Command) -> set[str]:
        return {p.envvar for p in node.params if isinstance(p.envvar, str)}

    _register()
    node: click.Command = cli
    names = read_by(node)
    for word in command:
        if not isinstance(node, click.Group) or word not in node.commands:
            break
        node = node.commands[word]
        names |= read_by(node)
    return names


def test_compose_env_names_settings_the_command_reads() -> None:
    """A TICKSTREAM_* variable no option reads would be silently ignored: a setting that is
    not one, or one the service's command does not take (the producer has no ClickHouse)."""
    settings = {envvar(name) for name in setting_names()}  # the gateway section's included
    used = 0
    for name, svc in compose()["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        ours = [key for key in env if key.startswith("TICKSTREAM_")]
        used += len(ours)
        if not ours:
            continue
        assert name in TICKSTREAM_SERVICES, f"{name} is given tickstream settings: {ours}"
        reads = command_envvars(svc["command"])
        unknown = sorted(set(ours) - settings)
        assert not unknown, f"{name}: not settings in tickstream/settings.py: {unknown}"
        ignored = sorted(set(ours) - reads)
        assert not ignored, f"{name}: `tickstream {' '.join(svc['command'])}` ignores {ignored}"
    assert used, "no TICKSTREAM_* variable in docker-compose.yml"


def _served_port(service: dict[str, Any], name: str) -> int:
    """The port of the service's /metrics: its setting's value in compose, else the default."""
    setting = METRICS_PORT_SETTING.get(name, "metrics_port")
    return int(service["environment"].get(envvar(setting), default_of(setting)))


def test_prometheus_scrapes_the_port_each_service_serves_metrics_on() -> None:
    services = compose()["services"]
    jobs = {job["job_name"]: job for job in load_yaml(PROM_CONFIG)["scrape_configs"]}
    scraped: dict[str, list[str]] = {}
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host = target.rsplit(":", 1)[0]
                scraped.setdefault(host, []).append(target)
        for dns in job.get("dns_sd_configs", []):  # a scalable service: every replica
            assert dns["type"] == "A", job["job_name"]
            for host in dns["names"]:
                scraped.setdefault(host, []).append(f"{host}:{dns['port']}")
    for name in TICKSTREAM_SERVICES:
        env = services[name]["environment"]
        assert env["TICKSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
        port = _served_port(services[name], name)
        assert port, f"{name} serves no metrics"
        assert scraped.get(name) == [f"{name}:{port}"], (
            f"Prometheus should scrape {name}:{port} once, scrapes {scraped.get(name)}"
        )
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
    assert set(scraped) <= {*TICKSTREAM_SERVICES, "localhost"}, scraped
    ports = [_served_port(services[n], n) for n in TICKSTREAM_SERVICES]
    assert len(set(ports)) == len(ports), "each service gets its own metrics port"


def _required_variables() -> set[str]:
    """Variables of docker-compose.yml written ${NAME:?message}: compose stops without them."""
    return set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))


def test_secrets_are_required_never_defaulted() -> None:
    text = COMPOSE_FILE.read_text()
    secret = re.compile(r"PASSWORD|TOKEN|SECRET", re.I)
    references = re.findall(r"\$\{(\w+)(:?[-?+]?)", text)
    for name, how in references:
        if secret.search(name):
            assert how == ":?", f"${{{name}}} must be ${{{name}:?message}}: required, no default"
    required = _required_variables()
    assert {
        "CLICKHOUSE_ADMIN_PASSWORD",
        "CLICKHOUSE_WRITER_PASSWORD",
        "CLICKHOUSE_READER_PASSWORD",
        "CLICKHOUSE_ANALYST_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "GATEWAY_TOKENS",
    } <= required
    for name in required:  # the message says what to set and where
        for message in re.findall(r"\$\{" + name + r":\?([^}]*)\}", text):
            assert name in message and ".env" in message, message
    # .env.example lists exactly the required variables, each empty: a copy left unedited
    # stops compose instead of starting with a guessable password.
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert set(example) == required
    assert all(value == "" for value in example.values()), example


def test_each_service_gets_only_the_credentials_of_its_role() -> None:
    services = compose()["services"]
    for name in TICKSTREAM_SERVICES:
        env = services[name]["environment"]
        url = env.get("TICKSTREAM_CLICKHOUSE_URL")
        role = CLICKHOUSE_ROLE.get(name)
        if role is None:
            assert url is None, f"{name} never uses ClickHouse and must get no credentials"
            assert not [k for k in env if "CLICKHOUSE" in k or "PASSWORD" in k], name
            continue
        match = re.fullmatch(r"http://(\w+):\$\{(\w+):\?[^}]*\}@clickhouse:8123", url)
        assert match, f"{name}: {url}"
        assert match[1] == role, f"{name} connects as {match[1]}, not {role}"
        assert env["TICKSTREAM_CLICKHOUSE_DATABASE"] == "tickstream"  # the users' grants
        password = services["clickhouse"]["environment"]
        assert f"${{{match[2]}:?" in password[_password_variable(role)], (name, match[2])
    grafana = services["grafana"]["environment"]
    assert grafana["CLICKHOUSE_USER"] == "analyst"
    assert grafana["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_ANALYST_PASSWORD:?")
    clickhouse = services["clickhouse"]["environment"]
    assert clickhouse["CLICKHOUSE_USER"] != "default"  # the image then drops `default`
    assert clickhouse["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_ADMIN_PASSWORD:?")
    # the ClickHouse healthcheck needs no password on a command line
    assert "password" not in str(services["clickhouse"]["healthcheck"]).lower()


def _users_xml() -> ET.Element:
    return ET.parse(CLICKHOUSE_USERS).getroot()


def _password_variable(user: str) -> str:
    (password,) = _users_xml().findall(f"users/{user}/password")
    return password.attrib["from_env"]


def _grants(user: str) -> list[str]:
    return [
        " ".join((q.text or "").split()) for q in _users_xml().findall(f"users/{user}/grants/query")
    ]


def test_clickhouse_users_hold_their_role_and_no_more() -> None:
    root = _users_xml()
    users = {u.tag for u in root.findall("users/*")}
    assert users == {*CLICKHOUSE_ROLE.values(), "analyst"}
    for user in users:  # no password in the file; the service's environment has it
        assert root.find(f"users/{user}/password").text is None
        variable = _password_variable(user)
        assert variable in compose()["services"]["clickhouse"]["environment"], variable
        assert _grants(user), f"{user} without grants would have every privilege"
    profile = root.find("profiles/tickstream_analyst")
    assert root.find("users/analyst/profile").text == "tickstream_analyst"
    assert profile.find("readonly").text == "1"  # not 2: no setting may change
    assert profile.find("final").text == "1"
    constraints = profile.find("constraints")
    assert constraints.find("final/readonly") is not None
    assert constraints.find("max_memory_usage/readonly") is not None
    for setting in constraints:  # only bounded settings may change in readonly mode
        if setting.find("changeable_in_readonly") is not None:
            assert setting.find("min") is not None and setting.find("max") is not None
    assert _grants("analyst") == ["GRANT SELECT ON tickstream.*"]
    reader = _grants("tickstream_reader")
    assert "GRANT SELECT ON tickstream.*" in reader
    for grant in reader:
        assert re.fullmatch(r"GRANT (SELECT|CREATE DATABASE) ON tickstream\.\*", grant), grant
    writer = " ".join(_grants("tickstream_writer"))
    for needed in ("INSERT", "CREATE TABLE", "CREATE VIEW", "ALTER", "OPTIMIZE"):
        assert needed in writer, f"the sink needs {needed}"
    assert "ALL" not in writer.split() and "*.*" not in writer
    config = ET.parse(CLICKHOUSE_CONFIG).getroot()
    assert (
        config.find("access_control_improvements/settings_constraints_replace_previous").text
        == "true"
    )
    mounts = compose()["services"]["clickhouse"]["volumes"]
    for path, where in ((CLICKHOUSE_USERS, "users.d"), (CLICKHOUSE_CONFIG, "config.d")):
        mount = f"./{path.relative_to(ROOT)}:/etc/clickhouse-server/{where}/{path.name}:ro"
        assert mount in mounts, mount


def test_gateway_is_reachable_through_its_published_port() -> None:
    gateway = compose()["services"]["gateway"]
    env = gateway["environment"]
    assert env["TICKSTREAM_GATEWAY_HOST"] == "0.0.0.0"
    port = env["TICKSTREAM_GATEWAY_PORT"]
    assert gateway["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert env["TICKSTREAM_GATEWAY_TOKENS"].startswith("${GATEWAY_TOKENS:?")
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
    assert "TICKSTREAM_GATEWAY_PORT" in " ".join(gateway["healthcheck"]["test"])


def test_compose_mounts_match_prometheus_and_grafana_paths() -> None:
    services = compose()["services"]
    prom = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert load_yaml(PROM_CONFIG)["rule_files"] == ["alerts.yml"]
    graf = services["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in graf["volumes"]
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    mount = f"./deploy/grafana/dashboards:{provider['options']['path']}:ro"
    assert mount in graf["volumes"]
    env = graf["environment"]
    plugins = env.get("GF_PLUGINS_PREINSTALL_SYNC", "") + env.get("GF_INSTALL_PLUGINS", "")
    assert "grafana-clickhouse-datasource" in plugins


def _compose_cli() -> list[str] | None:
    if shutil.which("docker") and _run(["docker", "compose", "version"]).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_cli_accepts_the_file(tmp_path: Path) -> None:
    """With every required secret set (test_compose_services.py checks the missing ones)."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no compose implementation (docker compose / docker-compose) installed")
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{name}=x{i}\n" for i, name in enumerate(_required_variables())))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "CLICKHOUSE_"))}
    proc = _run(
        [*cli, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_builds_the_package_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "python:3.11-slim" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0")), users
    assert re.search(r'^ENTRYPOINT \["tickstream"\]', text, re.M)
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ignore[0] == "*", ".dockerignore starts by excluding everything, then allows"
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in include["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        if (ROOT / package).is_dir():
            assert f"!{package}/" in ignore, f".dockerignore keeps {package}/ out of the image"
    assert "!pyproject.toml" in ignore


# ---------------------------------------------------------------------------------- grafana


def test_datasources_have_fixed_uids() -> None:
    sources = {d["uid"]: d for d in load_yaml(DATASOURCES)["datasources"]}
    assert set(sources) == {"prometheus", "clickhouse"}
    scrape = load_yaml(PROM_CONFIG)["global"]["scrape_interval"]
    assert sources["prometheus"]["jsonData"]["timeInterval"] == scrape
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    ch = sources["clickhouse"]
    assert ch["type"] == "grafana-clickhouse-datasource"
    assert ch["jsonData"]["protocol"] == "http"
    assert ch["jsonData"]["host"] == "clickhouse" and ch["jsonData"]["port"] == 8123
    assert ch["jsonData"]["defaultDatabase"] == "tickstream"
    assert "password" in ch["secureJsonData"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_references_provisioned_datasources(name: str) -> None:
    dashboard = load_dashboard(name)
    assert dashboard["uid"] in {"tickstream-pipeline-health", "tickstream-markets"}
    known = {d["uid"] for d in load_yaml(DATASOURCES)["datasources"]}
    used = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict) and ds.get("type") != "grafana":
                used.add(ds.get("uid"))
            elif isinstance(ds, str):
                used.add(ds)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    assert used and used <= known, f"unknown datasource uids {used - known}"
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("expr") or target.get("rawSql"), panel["title"]


def test_pipeline_dashboard_covers_the_brief() -> None:
    exprs = " ".join(e for _, e in dashboard_promql(load_dashboard("pipeline-health")))
    for needed in (
        "tickstream_producer_ticks_total",
        "tickstream_processor_ticks_total",
        "tickstream_sink_rows_total",
        "tickstream_e2e_latency_seconds_bucket",
        "tickstream_sink_insert_seconds_bucket",
        "tickstream_producer_send_seconds_bucket",
        "tickstream_consumer_lag_messages",
        "tickstream_sink_errors_total",
        "tickstream_sink_retries_total",
        "tickstream_producer_rejected_total",
        "tickstream_last_tick_timestamp_seconds",
    ):
        assert needed in exprs, f"no panel on {needed}"


# Small tables shaped as the analysts' tables are documented; the dashboards' SQL runs on them.
_CHDB_SCRIPT = r"""
import json, sys
from chdb import session

queries = json.loads(sys.stdin.read())
s = session.Session()
ddl = '''
CREATE DATABASE tickstream;
CREATE TABLE tickstream.bars_1m (symbol LowCardinality(String), ts DateTime64(3, 'UTC'),
  open Float64, high Float64, low Float64, close Float64, ticks UInt32)
  ENGINE = MergeTree ORDER BY (symbol, ts);
CREATE TABLE tickstream.rolling_highs (symbol LowCardinality(String), window String,
  ts DateTime64(3, 'UTC'), high Float64, high_ts DateTime64(3, 'UTC'), low Float64,
  low_ts DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY (symbol, window, ts);
CREATE TABLE tickstream.record_breaks (symbol LowCardinality(String), kind String,
  ts DateTime64(3, 'UTC'), price Float64, level Nullable(Float64), step Nullable(Float64),
  prev_ts Nullable(DateTime64(3, 'UTC')), since_prev_s Nullable(Float64), first_time Bool)
  ENGINE = MergeTree ORDER BY (symbol, ts);
CREATE TABLE tickstream.divergence_windows (pair String, metric String, direction Int8,
  opened_at DateTime64(3, 'UTC'), closed_at Nullable(DateTime64(3, 'UTC')), open_value Float64,
  peak_value Float64, peak_at DateTime64(3, 'UTC'), close_value Nullable(Float64))
  ENGINE = MergeTree ORDER BY (pair, metric, opened_at);
CREATE TABLE tickstream.rejected_ticks (received_at DateTime64(3, 'UTC'), source String,
  position UInt64, raw String, reason String, detail String, symbol Nullable(String))
  ENGINE = MergeTree ORDER BY received_at;
CREATE TABLE tickstream.signal_ledger (id String, status LowCardinality(String),
  signal LowCardinality(String), symbol LowCardinality(String), ts DateTime64(3, 'UTC'),
  price Float64, recv_ts Nullable(DateTime64(3, 'UTC')), emitted_at DateTime64(3, 'UTC'),
  announced UInt8, reason LowCardinality(String), row String)
  ENGINE = MergeTree ORDER BY (symbol, id, status);
INSERT INTO tickstream.bars_1m SELECT sym, toDateTime64('2026-01-26 00:00:00', 3, 'UTC')
  + toIntervalMinute(number), p, p + 1, p - 1, p + 0.5, 10
  FROM (SELECT number, arrayJoin([('XAU', 5000.0 + number), ('XAG', 100.0 + number / 10)])
        AS pr, pr.1 AS sym, pr.2 AS p FROM numbers(90));
INSERT INTO tickstream.rolling_highs VALUES
  ('XAU', '1d', '2026-01-26 00:30:00', 5031, '2026-01-26 00:30:00', 4999, '2026-01-26 00:00:00'),
  ('XAU', '52w', '2026-01-26 00:30:00', 5031, '2026-01-26 00:30:00', 2600, '2025-02-01 00:00:00'),
  ('XAG', '1d', '2026-01-26 00:30:00', 104, '2026-01-26 00:30:00', 99, '2026-01-26 00:00:00');
INSERT INTO tickstream.record_breaks VALUES
  ('XAU', 'level_up', '2026-01-26 00:20:00', 5020.5, 5000, 100, '2025-12-01 00:00:00', 4.9e6, 1),
  ('XAU', 'ath', '2026-01-26 00:40:00', 5040.5, NULL, NULL, NULL, NULL, 0),
  ('XAU', 'ath', '2026-01-26 00:40:00', 5040.5, NULL, NULL, NULL, NULL, 0);
INSERT INTO tickstream.divergence_windows VALUES
  ('XAU/XAG', 'ratio', 1, '2026-01-26 00:10:00', NULL, 49.1, 49.5, '2026-01-26 00:15:00', NULL),
  ('XAU/XAG', 'ratio', 1, '2026-01-26 00:10:00', '2026-01-26 00:30:00', 49.1, 49.8,
   '2026-01-26 00:20:00', 49.0),
  ('XAU/XAG', 'return_spread', -1, '2026-01-26 00:50:00', NULL, -0.01, -0.02,
   '2026-01-26 00:55:00', NULL);
INSERT INTO tickstream.rejected_ticks VALUES
  ('2026-01-26 00:05:00', 'replay:ticks.csv', 17, 'XAU,abc', 'parse', 'price is not a number',
   NULL),
  ('2026-01-26 00:06:00', 'simulate', 18, '{}', 'spike', '12 MAD from the median', 'XAG');
INSERT INTO tickstream.signal_ledger VALUES
  ('a1', 'provisional', 'record_break', 'XAU', '2026-01-26 00:40:00', 5040.5,
   '2026-01-26 00:40:00.004', '2026-01-26 00:40:00.021', 0, '', '{}'),
  ('a1', 'confirmed', 'record_break', 'XAU', '2026-01-26 00:40:00', 5040.5,
   '2026-01-26 00:40:00.004', '2026-01-26 00:40:02.113', 1, '', '{}'),
  ('b2', 'provisional', 'rolling_break', 'XAG', '2026-01-26 00:50:00', 104.2, NULL,
   '2026-01-26 00:50:00.030', 0, '', '{}'),
  ('b2', 'retracted', 'rolling_break', 'XAG', '2026-01-26 00:50:00', 104.2, NULL,
   '2026-01-26 00:50:02.040', 0, 'late_tick', '{}'),
  ('c3', 'confirmed', 'record_break', 'XAG+XAU', '2026-01-26 01:10:00', 104.9,
   '2026-01-26 01:10:00.002', '2026-01-26 01:10:02.500', 0, '', '{}');
'''
for stmt in ddl.split(';'):
    if stmt.strip():
        s.query(stmt)
out = {}
for where, sql in queries:
    try:
        res = s.query(sql, 'JSONCompact')
        out[where] = {'rows': len(json.loads(res.bytes())['data'])}
    except Exception as exc:
        out[where] = {'error': str(exc).splitlines()[0][:500]}
s.close()
print(json.dumps(out))
"""


def test_markets_sql_runs_on_tables_of_the_documented_shape() -> None:
    start, end = 1769385600, 1769385600 + 2 * 3600  # 2026-01-26 00:00 .. 02:00 UTC
    queries = [
        (where, expand_clickhouse_macros(sql, start, end, ["XAU", "XAG"]))
        for where, sql in dashboard_sql(load_dashboard("markets"))
    ]
    assert len(queries) >= 10
    for where, sql in queries:
        assert "tickstream." in sql, f"{where}: name the database (tickstream.<table>)"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHDB_SCRIPT)],
        input=json.dumps(queries),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = {w: r["error"] for w, r in results.items() if "error" in r}
    assert not errors, errors
    empty = [w for w, r in results.items() if r["rows"] == 0]
    assert not empty, f"queries that returned nothing on sample data: {empty}"
