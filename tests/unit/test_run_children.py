"""`tickstream run`'s supervision of its children (cli/children.py), with stand-in children:
small Python processes that die, refuse to start, or keep crashing, as the real ones can.

Also: a child dies with its parent (cli/parent_death.py), the ports are checked before
anything starts (cli/run_ports.py), and --processors is held to the partitions."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.children import Child, Children, RestartPolicy, processor_command
from cli.parent_death import PARENT_PID_ENV
from cli.run_control import RunFailed
from cli.run_ports import check_ports
from tickstream import metrics
from tickstream.settings import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
FAST = RestartPolicy(
    first_backoff_s=0.05, max_backoff_s=0.2, stable_after_s=5.0, give_up_after=3, stop_timeout_s=5
)


def script(code: str) -> tuple[list[str], dict[str, str]]:
    return [sys.executable, "-c", textwrap.dedent(code)], dict(os.environ)


def restarts(label: str) -> float:
    value = metrics.CHILD_RESTARTS.labels(label)._value.get()  # type: ignore[attr-defined]
    return float(value)


def until(child: Child, condition: object, timeout_s: float = 20.0) -> None:
    """Check ``child`` as the run's supervision does, until ``condition()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        child.check(time.monotonic())
        time.sleep(0.02)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.terminate()
        child.wait_stopped()


def test_a_child_that_is_killed_is_started_again_logged_and_counted(
    children: list[Child], caplog: pytest.LogCaptureFixture
) -> None:
    out = io.StringIO()
    child = Child(
        "the stand-in", "stand-in-killed", script("import time; time.sleep(60)"), FAST, out
    )
    children.append(child)
    child.start()
    first = child.pid
    before = restarts("stand-in-killed")
    assert first is not None
    os.kill(first, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="cli.runner"):
        until(child, lambda: child.pid not in (None, first))
    assert child.restarts == 1
    assert restarts("stand-in-killed") == before + 1
    said = caplog.text
    assert f"the stand-in (pid {first}) was killed by SIGKILL after" in said
    assert "starting it again in 0.1s" in said or "starting it again in 0.0s" in said
    assert f"the stand-in started again (pid {child.pid}, restart 1)" in said


def test_a_child_that_refuses_to_start_stops_the_run_with_its_error(
    children: list[Child],
) -> None:
    """A bad setting makes a child exit at once with an Error: line: it would again."""
    out = io.StringIO()
    refusing = script(
        """
        import sys
        print("Usage: tickstream gateway [OPTIONS]", file=sys.stderr)
        bad = "bad setting --tls-cert / TICKSTREAM_GATEWAY_TLS_CERT: no PEM"
        print("Error: " + bad, file=sys.stderr)
        sys.exit(2)
        """
    )
    child = Child("the gateway", "stand-in-refusing", refusing, FAST, out)
    children.append(child)
    child.start()
    with pytest.raises(RunFailed) as failed:
        until(child, lambda: False)
    assert str(failed.value) == (  # as `tickstream run` spells the gateway's flags
        "the gateway could not start: bad setting --gateway-tls-cert / "
        "TICKSTREAM_GATEWAY_TLS_CERT: no PEM"
    )
    assert child.restarts == 0 and child.restart_at is None
    assert "Error: bad setting --tls-cert" in out.getvalue()  # its log is relayed as it is


def test_a_child_that_keeps_dying_at_once_is_given_up_on(children: list[Child]) -> None:
    """Exit 1 without an Error: line (a crash at import, a broker lost while starting) is
    worth a restart, but not forever: give_up_after quick exits in a row end the run."""
    out = io.StringIO()
    crashing = script(
        "import sys; print('Traceback (most recent call last):', file=sys.stderr); sys.exit(1)"
    )
    child = Child("the stream processor", "stand-in-crashing", crashing, FAST, out)
    children.append(child)
    child.start()
    delays: list[float] = []

    def record() -> bool:
        if child.restart_at is not None and (not delays or delays[-1] != child.restart_at):
            delays.append(child.restart_at)
        return False

    with pytest.raises(RunFailed) as failed:
        until(child, record)
    assert str(failed.value).startswith(
        "the stream processor stopped 3 times in a row, each within 5s of its start "
        "(the last time it exited with code 1); not starting it again"
    )
    assert child.restarts == 2


def test_backoff_doubles_up_to_its_cap_and_starts_anew_after_a_stable_run() -> None:
    policy = RestartPolicy(
        first_backoff_s=1.0, max_backoff_s=4.0, stable_after_s=60.0, give_up_after=99
    )
    child = Child("c", "stand-in-backoff", script("pass"), policy, io.StringIO())

    class Exited:
        pid = 1
        returncode = 1

        def poll(self) -> int:
            return 1

    waits = []
    now = 1000.0
    for uptime in (1, 1, 1, 1, 1, 120, 1):
        child.popen, child.started_at = Exited(), now - uptime  # type: ignore[assignment]
        child.check(now)
        assert child.restart_at is not None
        waits.append(child.restart_at - now)
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0, 1.0, 1.0]


def test_no_child_is_started_again_once_the_run_stops() -> None:
    group = Children(FAST)
    group.start_processors([script("import time; time.sleep(60)")] * 2)
    try:
        assert [c.label for c in group] == ["processor-0", "processor-1"]
        assert [c.name for c in group] == ["stream processor 0", "stream processor 1"]
        pids = [c.pid for c in group]
        group.stop()
        group.check()  # their exits now are the run's doing
        assert all(c.popen is not None and c.popen.returncode == -signal.SIGTERM for c in group)
        assert all(c.restart_at is None and c.restarts == 0 for c in group)
        assert [c.pid for c in group] == pids
    finally:
        group.stop()


# ---------------------------------------------------------------- dying with the parent


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie waits for its reaper, it runs nothing


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_child_dies_with_its_parent_even_on_sigkill(tmp_path: Path) -> None:
    """The parent stands for `tickstream run`: SIGKILLed, it can stop nobody."""
    pidfile = tmp_path / "child.pid"
    parent_code = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen(
            [sys.executable, "-c",
             "from cli.parent_death import die_with_parent; die_with_parent(); "
             "import time; time.sleep(120)"],
            env={{**os.environ, {PARENT_PID_ENV!r}: str(os.getpid())}},
        )
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child = int(pidfile.read_text())
        time.sleep(1.0)  # the child asked the kernel by now (or watches its parent)
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(child):
            assert time.monotonic() < deadline, f"child {child} outlived its parent by 5 s"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()


def test_a_child_whose_parent_is_gone_before_it_asks_exits_at_once() -> None:
    """The window between the fork and the child's request: its parent is not the one named."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli.parent_death import die_with_parent; die_with_parent(); print('ran on')",
        ],
        env={**os.environ, PARENT_PID_ENV: "1"},  # not this child's parent
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL and "ran on" not in proc.stdout


def test_a_command_not_started_by_a_run_is_left_alone() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from cli.parent_death import die_with_parent; die_with_parent()"],
        env={k: v for k, v in os.environ.items() if k != PARENT_PID_ENV},
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0


# ---------------------------------------------------------------- ports and --processors


def busy_port(host: str = "0.0.0.0") -> socket.socket:
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen()
    return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def test_a_busy_metrics_port_is_one_line_naming_its_flag() -> None:
    with busy_port() as busy:
        port = busy.getsockname()[1]
        with pytest.raises(RunFailed) as failed:
            check_ports(Settings(metrics_port=port), gateway_port_given=False)
    text = str(failed.value)
    assert text.startswith("--metrics-port / TICKSTREAM_METRICS_PORT: cannot listen on ")
    assert "for the run's metrics" in text and "\n" not in text


def test_a_busy_processor_metrics_port_names_the_flag_and_the_rule() -> None:
    with busy_port() as busy:
        taken = busy.getsockname()[1]
        settings = Settings(metrics_port=taken - 2, processors=2)
        with pytest.raises(RunFailed, match=r"--metrics-port / TICKSTREAM_METRICS_PORT: .*"
                           r"processor 1's metrics \(--metrics-port \+ 2\)"):  # fmt: skip
            check_ports(settings, gateway_port_given=False)


def test_a_busy_gateway_port_fails_when_given_and_warns_when_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with busy_port("127.0.0.1") as busy:
        port = busy.getsockname()[1]
        settings = Settings(metrics_port=0)
        settings = settings.replace(gateway=settings.gateway.replace(port=port))
        with pytest.raises(RunFailed, match="^--gateway-port / TICKSTREAM_GATEWAY_PORT: "):
            check_ports(settings, gateway_port_given=True)
        with caplog.at_level(logging.WARNING, logger="cli.runner"):
            skipped = check_ports(settings, gateway_port_given=False)
    assert skipped == f"none: port {port} is taken (see the warning above)"
    assert "no live board: --gateway-port" in caplog.text


def test_one_port_for_two_servers_is_refused_before_anything_binds() -> None:
    port = free_port()
    settings = Settings(metrics_port=port - 1)  # the processor's would be the gateway's
    settings = settings.replace(gateway=settings.gateway.replace(port=port))
    with pytest.raises(RunFailed, match="--gateway-port .* both processor 0's metrics"):
        check_ports(settings, gateway_port_given=True)
    with pytest.raises(ConfigError, match="--clickhouse-http-port"):
        check_ports(
            Settings(metrics_port=port, clickhouse_http_port=port), gateway_port_given=False
        )
    with pytest.raises(RunFailed, match="would need port 65536"):
        check_ports(Settings(metrics_port=65534, processors=2), gateway_port_given=False)


def test_processors_are_one_to_the_partitions() -> None:
    assert Settings(partitions=3, processors=3).processors == 3
    for bad in (0, 4):
        named = r"^--processors / TICKSTREAM_PROCESSORS: .*\(--partitions, 3\)"
        with pytest.raises(ConfigError, match=named):
            Settings(partitions=3, processors=bad)


def test_each_processor_gets_its_own_metrics_port() -> None:
    settings = Settings(metrics_port=9500, processors=3)
    ports = [processor_command(settings, i)[1]["TICKSTREAM_METRICS_PORT"] for i in range(3)]
    assert ports == ["9501", "9502", "9503"]
    off = processor_command(settings.replace(metrics_port=0), 2)[1]
    assert off["TICKSTREAM_METRICS_PORT"] == "0"
