"""A real Prometheus server for tests: Debian's ``prometheus`` on a free loopback port.

``scripts/install-prometheus.sh`` installs the package when the binary is missing. The server
gets its own config, rule files and TSDB directory under a temp dir; the HTTP API is read with
urllib (no extra dependency).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def prometheus_binary() -> str:
    """`prometheus` on PATH, installed from Debian's package when missing."""
    path = shutil.which("prometheus")
    if path is None:
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-prometheus.sh")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"install-prometheus.sh failed:\n{proc.stdout}{proc.stderr}"
        path = shutil.which("prometheus")
    assert path, "prometheus still missing after scripts/install-prometheus.sh"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port P with P + 1 also free (``tickstream run`` serves the processor on P + 1)."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("0.0.0.0", port))
                b.bind(("0.0.0.0", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports found")


def wait_for(
    probe: Callable[[], T], done: Callable[[T], bool], timeout_s: float, interval_s: float = 0.5
) -> T:
    """Call ``probe`` until ``done(result)`` or the bound passes; return the last result.

    The caller asserts on the returned value, so a timeout fails with the real state.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(interval_s)


class Prometheus:
    """One Prometheus process; ``config`` is the prometheus.yml content, ``files`` rule files."""

    def __init__(self, workdir: Path, config: dict[str, Any], files: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (workdir / name).write_text(text)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 60) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    prometheus_binary(),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except (urllib.error.URLError, OSError):
                return False

        assert wait_for(ready, bool, ready_timeout_s, 0.2), f"prometheus not ready:\n{self.log()}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>; returns the JSON document, also for 4xx answers (errors)."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "error": f"HTTP {exc.code}: {body[:500]!r}"}

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query: {status, data: {resultType, result}} or {status, errorType, error}."""
        return self.api("query", query=expr)

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
