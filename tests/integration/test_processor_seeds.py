"""The processor waits for ClickHouse before it reads the records ClickHouse already holds.

Before, a ClickHouse that did not answer yet (a server still starting, a chDB directory
held by a running sink) left the processor without seeds after a warning, and records
ClickHouse already knew were announced again as new. Now it waits, bounded: it says at
once what it waits for and how long, and gives up with one line naming the setting (the
URL's password masked) and exit code 1. A chDB directory that is absent or empty (a first
start) has nothing to wait for.

The late server is a ClickHouse HTTP interface in a process of its own, over a chDB
directory holding the real schema and one tick, which starts listening seconds after the
processor began to ask.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.app import load_seeds
from tickstream.clickhouse import ClickHouseUnavailable
from tickstream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-pw"

# A ClickHouse HTTP interface in front of a chDB directory: enough of the protocol for
# clickhouse-connect (the query in the URL and/or the body, errors as status 500 with
# X-ClickHouse-Exception-Code). It fills the directory first, then listens after DELAY.
LATE_SERVER = textwrap.dedent(
    """
    import http.server, re, sys, threading, time, urllib.parse
    import chdb, clickhouse_connect
    from sinks.schema import migrate

    path, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    began = time.monotonic()
    client = clickhouse_connect.get_client(dsn="chdb://" + path)
    client.command("CREATE DATABASE IF NOT EXISTS tickstream")
    migrate(client, "tickstream")
    client.command(
        "INSERT INTO tickstream.ticks (symbol, ts, price) "
        "VALUES ('XAU', '2026-01-26 07:41:00', 5051.9), ('XAU', '2026-01-20 10:00:00', 4700)"
    )
    client.close()
    conn = chdb.connect(path)
    lock = threading.Lock()

    class ClickHouse(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            sql = (params.get("query", "") + "\\n" + body).strip()
            try:
                with lock:
                    data = conn.query(sql, "TabSeparated").bytes()
                self.send_response(200)
            except Exception as exc:
                data = str(exc).encode()
                code = re.search(r"Code: (\\d+)", str(exc))
                self.send_response(500)
                self.send_header("X-ClickHouse-Exception-Code", code[1] if code else "1000")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST

        def log_message(self, *args):
            pass

    time.sleep(max(0.0, delay - (time.monotonic() - began)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), ClickHouse)
    print("listening", flush=True)
    server.serve_forever()
    """
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FAST_WAIT_S = 2.0


def ch_settings(url: str, wait_s: float = FAST_WAIT_S) -> Settings:
    return Settings(
        clickhouse_url=url,
        clickhouse_database="tickstream",
        metrics_port=0,
        clickhouse_wait_s=wait_s,
    )


@pytest.fixture
def fast_deadline() -> float:
    return FAST_WAIT_S


@pytest.fixture
def late_server(tmp_path: Path) -> Iterator[tuple[int, float]]:
    """A ClickHouse that starts listening 4 s from now; (port, when it listens)."""
    port, delay = closed_port(), 4.0
    proc = subprocess.Popen(
        [sys.executable, "-c", LATE_SERVER, str(tmp_path / "chdb"), str(port), str(delay)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        yield port, time.monotonic() + delay
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_closed_port_is_waited_for_then_fails_naming_the_setting(
    fast_deadline: float, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://reader:{PASSWORD}@127.0.0.1:{closed_port()}"
    began, began_wall = time.monotonic(), time.time()
    with caplog.at_level(logging.INFO), pytest.raises(ClickHouseUnavailable) as raised:
        load_seeds(ch_settings(url), True)
    took = time.monotonic() - began
    message = str(raised.value)
    assert fast_deadline <= took < fast_deadline + 5, took
    assert "TICKSTREAM_CLICKHOUSE_URL" in message and "127.0.0.1" in message, message
    assert PASSWORD not in message and "reader:***@" in message, message
    assert "\n" not in message
    waiting = [r for r in caplog.records if "waiting for ClickHouse" in r.getMessage()]
    assert len(waiting) == 1, caplog.text  # said once, at once
    assert waiting[0].created - began_wall < 1.0
    assert "2 s" in waiting[0].getMessage() and PASSWORD not in caplog.text


def test_a_server_that_comes_up_late_gives_its_records(
    late_server: tuple[int, float], caplog: pytest.LogCaptureFixture
) -> None:
    port, listening_at = late_server
    settings = ch_settings(f"http://default:{PASSWORD}@127.0.0.1:{port}", wait_s=60)
    with caplog.at_level(logging.INFO):
        seeds = load_seeds(settings, True)
    assert time.monotonic() >= listening_at - 0.5
    assert "XAU" in seeds, caplog.text
    assert seeds["XAU"].ath == 5051.9 and seeds["XAU"].atl == 4700
    assert any("waiting for ClickHouse" in r.getMessage() for r in caplog.records)


def test_an_absent_chdb_directory_is_a_first_start(tmp_path: Path, fast_deadline: float) -> None:
    began = time.monotonic()
    assert load_seeds(ch_settings(f"chdb://{tmp_path / 'fresh'}"), True) == {}
    assert time.monotonic() - began < fast_deadline


def test_a_chdb_directory_held_by_another_process_is_waited_for(
    tmp_path: Path, fast_deadline: float
) -> None:
    path = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import clickhouse_connect, sys, time\n"
            f"c = clickhouse_connect.get_client(dsn='chdb://{path}')\n"
            "print('holding', flush=True)\n"
            "time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"holding"
        began = time.monotonic()
        with pytest.raises(ClickHouseUnavailable) as raised:
            load_seeds(ch_settings(f"chdb://{path}"), True)
        assert time.monotonic() - began >= fast_deadline
        assert "another process" in str(raised.value), raised.value
        assert "--no-seed-from-clickhouse" in str(raised.value)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.kafka
def test_the_worker_exits_1_with_one_line(settings: Settings, tmp_path: Path) -> None:
    """The real command: `tickstream process` with its deadline cut to 2 s."""
    url = f"http://reader:{PASSWORD}@127.0.0.1:{closed_port()}"
    env = {
        **os.environ,
        **settings.replace(clickhouse_url=url, clickhouse_wait_s=FAST_WAIT_S).to_env(),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cli", "-q", "process"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the processor did not stop for want of ClickHouse: {exc.stderr!r}")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 1, proc.stderr
    assert len(errors) == 1 and "TICKSTREAM_CLICKHOUSE_URL" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr, proc.stderr
