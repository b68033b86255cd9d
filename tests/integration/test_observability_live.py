"""Observability checked against real servers, not just parsed.

1. A real Prometheus (Debian's package) scrapes a running ``tickstream run`` (simulated live
   market, real broker, chDB) every second, with deploy/prometheus/prometheus.yml's jobs
   (targets rewritten to the run's ports) and alerts.yml loaded; every dashboard expression and
   every alert rule is evaluated through its HTTP API; then Ctrl-C (SIGINT) must stop it, code 0.
2. After ``tickstream run --replay examples/gold_silver_2026-01-26.csv --until-drained`` (with
   three bad lines appended), every ClickHouse query of the dashboards (panels, annotations,
   variables) runs against the chDB directory the pipeline wrote, through clickhouse-connect,
   and must return rows (unless it reads only a table of ``NOT_WRITTEN_BY_A_REPLAY_YET`` that
   the replay left empty).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_deploy_files import (
    ALERTS,
    DASHBOARDS,
    PROM_CONFIG,
    alert_rules,
    dashboard_promql,
    dashboard_sql,
    expand_clickhouse_macros,
    expand_grafana_promql,
    load_dashboard,
    load_yaml,
    promql_metric_names,
)
from tests.prometheus_server import Prometheus, free_port_pair, prometheus_binary, wait_for
from tests.replaying import replay_until_drained

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gold_silver_2026-01-26.csv"

# Grafana's $__rate_interval is max($__interval + scrape interval, 4 x scrape interval); with the
# 1 s scrape used here that is 4 s. 5 s keeps a margin of one sample for scrape jitter.
RATE_INTERVAL = "5s"
SCRAPE_INTERVAL = "1s"

# Which process of `tickstream run` serves what the compose stack runs as separate services:
# producer and sink share the parent process's port P, the processor (child) serves P + 1.
# The gateway is not part of `tickstream run`; its job is dropped.
RUN_PORT_OFFSET = {"producer": 0, "sink": 0, "processor": 1}


def _scrape_jobs(port: int, prometheus_port: int) -> list[dict[str, Any]]:
    """deploy/prometheus/prometheus.yml's scrape jobs with the targets rewritten for `run`."""
    jobs, seen = [], set()
    for job in load_yaml(PROM_CONFIG)["scrape_configs"]:
        name = job["job_name"]
        if name == "prometheus":
            address = f"127.0.0.1:{prometheus_port}"
        elif name in RUN_PORT_OFFSET:
            address = f"127.0.0.1:{port + RUN_PORT_OFFSET[name]}"
        else:
            continue
        if address in seen:  # one endpoint scraped twice would double every sum()
            continue
        seen.add(address)
        job = {k: v for k, v in job.items() if k != "dns_sd_configs"}  # compose's replicas
        job["static_configs"] = [{"targets": [address]}]
        jobs.append(job)
    assert {j["job_name"] for j in jobs} >= {"producer", "processor"}, jobs
    return jobs


# ------------------------------------------------------------------- live pipeline + Prometheus


@dataclass
class Live:
    prom: Prometheus
    pipeline: subprocess.Popen[bytes]
    pipeline_log: Path
    metrics_port: int
    namespace: str

    def log(self) -> str:
        return self.pipeline_log.read_text(errors="replace")[-4000:]


def _stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    # whatever is left of the group (the processor child, if it outlived its parent)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait()


def _first_value(doc: dict[str, Any]) -> float | None:
    result = doc.get("data", {}).get("result") or []
    if not result:
        return None
    return float(result[0]["value"][1])


def _steady_state(live: Live) -> dict[str, Any]:
    """Targets up, scraped at least 5 times each, and ticks flowing through processor and sink."""
    assert live.pipeline.poll() is None, f"pipeline exited early:\n{live.log()}"
    targets = live.prom.api("targets")["data"]["activeTargets"]
    return {
        "targets": {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets},
        "min_scrapes": _first_value(live.prom.query("min(count_over_time(up[1m]))")),
        "processor_ticks_per_s": _first_value(
            live.prom.query(f"sum(rate(tickstream_processor_ticks_total[{RATE_INTERVAL}]))")
        ),
        "sink_ticks_per_s": _first_value(
            live.prom.query(
                f'sum(rate(tickstream_sink_rows_total{{table="ticks"}}[{RATE_INTERVAL}]))'
            )
        ),
    }


def _is_steady(state: dict[str, Any]) -> bool:
    return (
        bool(state["targets"])
        and all(health == "up" for health, _ in state["targets"].values())
        and (state["min_scrapes"] or 0) >= 5
        and (state["processor_ticks_per_s"] or 0) > 0
        and (state["sink_ticks_per_s"] or 0) > 0
    )


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`tickstream run` (live simulator) scraped every second by a real Prometheus."""
    prometheus_binary()  # install before starting anything
    tmp = tmp_path_factory.mktemp("observability-live")
    namespace = "t" + uuid.uuid4().hex[:10]
    port = free_port_pair()
    log_path = tmp / "pipeline.log"
    with log_path.open("wb") as log:
        pipeline = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "run",
                "--namespace",
                namespace,
                "--kafka-bootstrap",
                kafka_bootstrap,
                "--clickhouse-url",
                f"chdb://{tmp / 'chdb'}",
                "--metrics-port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,  # the processor's Faust data dir and record seeds go under tmp, not the repo
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    prom: Prometheus | None = None
    try:
        config = load_yaml(PROM_CONFIG)
        config["global"].update(
            scrape_interval=SCRAPE_INTERVAL,
            scrape_timeout=SCRAPE_INTERVAL,
            evaluation_interval=SCRAPE_INTERVAL,
        )
        assert config["rule_files"] == ["alerts.yml"]
        prom = Prometheus(tmp / "prometheus", config, {"alerts.yml": ALERTS.read_text()})
        config["scrape_configs"] = _scrape_jobs(port, prom.port)
        prom.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        prom.start()
        live = Live(prom, pipeline, log_path, port, namespace)
        state = wait_for(lambda: _steady_state(live), _is_steady, timeout_s=120)
        assert _is_steady(state), f"{state}\npipeline log:\n{live.log()}\n{prom.log()}"
        yield live
    finally:
        _stop_group(pipeline)
        if prom is not None:
            prom.stop()


# ------------------------------------------------------------------------------ the checks


def _has_finite_sample(doc: dict[str, Any]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in doc.get("data", {}).get("result") or [])


@pytest.mark.kafka
def test_every_dashboard_expression_returns_data(live: Live) -> None:
    """Each panel query of every dashboard parses and returns at least one finite sample.

    $__rate_interval is expanded to 5 s (Grafana would pick 4 s for a 1 s scrape). A
    histogram_quantile over a histogram that did not move in the window is NaN, which Grafana
    draws as nothing, so "data" means a finite value, not only a non-empty vector; a series
    that is NaN next to a finite one (e.g. the minute-bar table's insert latency between two
    inserts) is fine. Polled for a bounded time, since a 5 s window can fall between batches.
    """
    exprs = [
        (f"{name}: {where}", expand_grafana_promql(expr, RATE_INTERVAL))
        for name in DASHBOARDS
        for where, expr in dashboard_promql(load_dashboard(name))
    ]
    assert exprs

    def evaluate() -> dict[str, dict[str, Any]]:
        return {where: live.prom.query(expr) for where, expr in exprs}

    def all_good(results: dict[str, dict[str, Any]]) -> bool:
        return all(r["status"] == "success" and _has_finite_sample(r) for r in results.values())

    results = wait_for(evaluate, all_good, timeout_s=30, interval_s=1)
    exprs_by_where = dict(exprs)
    errors = {w: r.get("error") for w, r in results.items() if r["status"] != "success"}
    assert not errors, f"Prometheus refused dashboard expressions: {errors}"
    empty = {
        w: {"expr": exprs_by_where[w], "result": r["data"]["result"]}
        for w, r in results.items()
        if not _has_finite_sample(r)
    }
    assert not empty, (
        "dashboard expressions with no finite data on a healthy running pipeline:\n"
        + json.dumps(empty, indent=1)
    )


@pytest.mark.kafka
def test_alert_rules_are_loaded_and_evaluate_without_error(live: Live) -> None:
    """/api/v1/rules lists every group and rule of alerts.yml, each evaluated with health ok."""
    wanted = {
        group["name"]: [rule["alert"] for rule in group["rules"]]
        for group in load_yaml(ALERTS)["groups"]
    }

    def rules() -> dict[str, list[dict[str, Any]]]:
        doc = live.prom.api("rules")
        assert doc["status"] == "success", doc
        return {g["name"]: g["rules"] for g in doc["data"]["groups"]}

    def evaluated(groups: dict[str, list[dict[str, Any]]]) -> bool:
        return all(r["health"] != "unknown" for rs in groups.values() for r in rs)

    groups = wait_for(rules, evaluated, timeout_s=30)
    assert {name: [r["name"] for r in rs] for name, rs in groups.items()} == wanted
    unhealthy = {
        r["name"]: (r["health"], r.get("lastError"))
        for rs in groups.values()
        for r in rs
        if r["health"] != "ok"
    }
    assert not unhealthy, unhealthy
    for rs in groups.values():
        for r in rs:
            assert r["type"] == "alerting" and r["lastEvaluation"], r
    # A healthy pipeline raises nothing, not even pending. One exception: the ticks published
    # while the processor boots wait for it, so their end-to-end latency (inside the rule's 5 m
    # window) may exceed 5 s on a slow machine; that rule may be pending, never firing.
    active = {
        r["name"]: [(a["state"], a["labels"], a["value"]) for a in r["alerts"]]
        for rs in groups.values()
        for r in rs
        if r["state"] != "inactive"
        and not (r["name"] == "TickstreamEndToEndLatencyHigh" and r["state"] == "pending")
    }
    assert not active, f"alerts pending or firing on a healthy pipeline: {active}"


@pytest.mark.kafka
def test_every_metric_an_alert_reads_is_exported(live: Live) -> None:
    """Each alert expression evaluates, and every metric it reads has a series.

    An alert expression is a condition that is false while the pipeline is healthy, so an
    empty result is the expected answer and proves nothing; stripping the comparison does not
    help either (`... or vector(0)` makes some of them non-empty whatever the metric does).
    What a healthy pipeline can show is the rule's underlying series: every metric name the
    expression selects must have at least one series in Prometheus. A labelled counter that
    prometheus_client only creates at its first increment (an error counter before the first
    error) has no series, and then a rule on it cannot be told apart from a rule on a metric
    that is misspelt or not exported at all; such names are listed in the failure message with
    the alerts that read them (the fix is to initialise the known label sets at zero).
    """
    rules = alert_rules()
    refused = {}
    for rule in rules:
        doc = live.prom.query(rule["expr"])
        if doc["status"] != "success":
            refused[rule["alert"]] = doc.get("error")
    assert not refused, f"Prometheus refused alert expressions: {refused}"

    needed = {r["alert"]: promql_metric_names(r["expr"]) for r in rules}
    names = sorted(set().union(*needed.values()))
    selector = "|".join(names)

    def exported() -> set[str]:
        doc = live.prom.query(f'group by (__name__) ({{__name__=~"{selector}"}})')
        assert doc["status"] == "success", doc
        return {r["metric"]["__name__"] for r in doc["data"]["result"]}

    present = wait_for(exported, lambda got: got >= set(names), timeout_s=10, interval_s=1)
    missing = {
        alert: sorted(metric_names - present)
        for alert, metric_names in needed.items()
        if metric_names - present
    }
    assert not missing, (
        "alert rules reading metrics with no series in a healthy running pipeline "
        f"(alert -> metrics): {json.dumps(missing, indent=1)}"
    )


@pytest.mark.kafka
def test_ctrl_c_stops_the_whole_pipeline_with_exit_code_0(live: Live) -> None:
    """SIGINT to the process group (what Ctrl-C does): `run` and its processor child exit, 0."""
    proc = live.pipeline
    assert proc.poll() is None, live.log()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`tickstream run` still running 60 s after SIGINT:\n{live.log()}")
    assert code == 0, f"exit code {code} after SIGINT:\n{live.log()}"
    left = wait_for(lambda: _group_alive(proc.pid), lambda alive: not alive, timeout_s=30)
    assert not left, f"processes of the pipeline's group still running after it exited: {left}"
    assert "Traceback" not in live.log(), live.log()


def _group_alive(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(f"{stat.parent.name} {text[: text.rindex(')') + 1]}")
    return alive


# --------------------------------------------------------------- dashboards' SQL after replay

_SQL_SCRIPT = r"""
import json, sys
import clickhouse_connect

dsn, queries = json.loads(sys.stdin.read())
client = clickhouse_connect.get_client(dsn=dsn, settings={"final": 1})
out = {}
for where, sql in queries:
    try:
        rows = client.query(sql).result_rows
        out[where] = {"rows": len(rows), "data": [[str(v) for v in r] for r in rows[:50]]}
    except Exception as exc:
        out[where] = {"error": str(exc).strip().splitlines()[0][:500]}
client.close()
print(json.dumps(out))
"""

# Lines a real file may hold: they go to the dead-letter topic and rejected_ticks, so the
# dashboards' rejection panels have something to show.
BAD_LINES = (
    "this is not a tick",
    "1769414230000,XAU,not-a-price,5045.0,5046.0",
    "1769414231000,XAG,-3.5,-3.6,-3.4",
)


# Tables a replay of the example does not fill yet, with the reason. A dashboard query that
# reads only such tables may come back empty, but only while the replay verifiably left every
# table it reads empty (their counts are taken below); it must still run without error, and
# its figures are checked on known rows by tests/integration/test_schema_queries.py. As soon
# as the pipeline writes such a table, its queries must return rows like every other.
NOT_WRITTEN_BY_A_REPLAY_YET = {
    "signal_ledger": "the processor does not emit desk signal events (real-time desk path) yet",
}


def _tables_read(sql: str) -> set[str]:
    return set(re.findall(r"\btickstream\.(\w+)", sql))


def _run_sql(chdb_dir: Path, queries: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Run queries with clickhouse-connect in a child process (chDB: one data dir per process)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SQL_SCRIPT)],
        input=json.dumps([f"chdb://{chdb_dir}", queries]),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.kafka
def test_dashboard_sql_returns_rows_after_replaying_the_example(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    """Every ClickHouse panel, annotation and variable query returns rows on replayed data.

    The replayed file is the example with three bad lines appended (malformed, not a number,
    negative price). Time range: 2026-01-26 00:00 UTC up to now, because the example's ticks
    are from that day while rejected_ticks.received_at is the wall-clock receive time of the
    replay. $symbol takes every value its variable query returns, as "All" does in Grafana.
    A query reading only tables of NOT_WRITTEN_BY_A_REPLAY_YET that the replay left empty
    must run, but may return nothing.
    """
    csv_path = tmp_path / "gold_silver_with_bad_lines.csv"
    shutil.copyfile(EXAMPLE, csv_path)
    with csv_path.open("a") as f:
        f.write("\n".join(BAD_LINES) + "\n")
    chdb_dir = tmp_path / "chdb"
    replay_until_drained(csv_path, chdb_dir, kafka_bootstrap, namespace)

    start_s = 1_769_385_600  # 2026-01-26T00:00:00Z
    end_s = int(time.time()) + 60
    raw = [(w, sql) for name in DASHBOARDS for w, sql in dashboard_sql(load_dashboard(name))]
    assert raw
    variables = [(w, sql) for w, sql in raw if w.startswith("variable ")]
    assert [w for w, _ in variables] == ["variable symbol"], variables
    (symbol_var,) = _run_sql(chdb_dir, variables).values()
    assert "error" not in symbol_var, symbol_var
    symbols = [row[0] for row in symbol_var["data"]]
    assert symbols == ["XAG", "XAU"], symbols

    queries = [(w, expand_clickhouse_macros(sql, start_s, end_s, symbols)) for w, sql in raw]
    tables = (
        "bars_1m",
        "rolling_highs",
        "record_breaks",
        "divergence_windows",
        "rejected_ticks",
        *NOT_WRITTEN_BY_A_REPLAY_YET,
    )
    counts = [(f"count {t}", f"SELECT count() FROM tickstream.{t}") for t in tables]
    results = _run_sql(chdb_dir, queries + counts)
    errors = {w: r["error"] for w, r in results.items() if "error" in r}
    assert not errors, f"dashboard queries ClickHouse refused: {json.dumps(errors, indent=1)}"
    unwritten = {
        t for t in NOT_WRITTEN_BY_A_REPLAY_YET if results[f"count {t}"]["data"][0][0] == "0"
    }

    def excused(sql: str) -> bool:  # reads only tables the replay verifiably left empty
        read = _tables_read(sql)
        return bool(read) and read <= unwritten

    empty = sorted(w for w, sql in queries if results[w]["rows"] == 0 and not excused(sql))
    assert not empty, (
        f"dashboard queries that returned no rows after the replay: {empty}\n"
        f"table row counts: { {w: results[w]['data'][0][0] for w, _ in counts} }"
    )
