"""The live board of `tickstream run`, in headless Chromium, with the whole pipeline real.

`tickstream run --replay FILE --speed 16` (no --until-drained: it keeps running) publishes a
paced file to the test broker; the Faust processor finds gold crossing $5,000 half-way
through it (seeded records: first $4,000 in October 2025, the $4,900 level in January);
the signal goes through `<ns>.signals` to the gateway `run` started, and from there to the
board opened with the token of the start-up banner. The test waits (bounded) for the
record-break row, checks its text, saves test-artifacts/pipeline-board.png, and stops the
run with SIGINT: it exits 0 and the gateway's port is closed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser.test_gateway_browser import ARTIFACTS, CHROMIUM, board_page

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: run scripts/install-chromium.sh"
    ),
]

START_MS = 1_769_395_800_000  # 2026-01-26T02:50:00Z
XAU_TICKS = 120  # one every 2 s of event time, XAG in between: 240 s, 15 s at --speed 16
SPEED = "16"
CROSS = 58  # the first XAU tick at or above $5,000
WAIT_S = 120.0  # bounds on waits, not measures

SEEDS = {
    "XAU": {
        "ath": 5_015.0,
        "ath_ts": "2026-01-23T15:42:10Z",
        "atl": 252.8,
        "atl_ts": "1999-07-20T00:00:00Z",
        "first_up": [[1000, 4000, "2025-10-08T07:12:00Z"], [100, 4900, "2026-01-22T09:30:00Z"]],
        "first_down": [],
    },
    "XAG": {
        "ath": 103.55,
        "ath_ts": "2026-01-23T16:05:00Z",
        "atl": 3.55,
        "atl_ts": "1993-02-26T00:00:00Z",
        "first_up": [],
        "first_down": [],
    },
}


def xau_price(i: int) -> float:
    return round(4_980.0 + 0.35 * i, 2)  # 4,999.95 at i = 57, 5,000.30 at i = 58


def write_replay(path: Path) -> None:
    lines = ["ts,symbol,price,bid,ask"]
    for i in range(XAU_TICKS):
        ts = START_MS + 2_000 * i
        gold = xau_price(i)
        silver = round(101.2 + 0.3 * (i % 2), 3)  # well inside 101..102: no level, no ATH
        lines.append(f"{ts},XAU,{gold},{gold - 0.15:.2f},{gold + 0.15:.2f}")
        lines.append(f"{ts + 1_000},XAG,{silver},{silver - 0.01:.3f},{silver + 0.01:.3f}")
    path.write_text("\n".join(lines) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_line(proc: subprocess.Popen[bytes], log: Path, pattern: str) -> re.Match[str]:
    """The first match of ``pattern`` in the run's log, once it is there (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        text = log.read_text(errors="replace")
        found = re.search(pattern, text)
        if found:
            return found
        assert proc.poll() is None, f"run exited with {proc.returncode}:\n{text[-4000:]}"
        assert time.monotonic() < deadline, f"no {pattern!r} in the run's log:\n{text[-4000:]}"
        time.sleep(0.2)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Whatever is left of the run's process group (only after a failure)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def test_run_serves_the_live_board(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    csv_path, seeds, log = tmp_path / "gold.csv", tmp_path / "seeds.json", tmp_path / "run.log"
    write_replay(csv_path)
    seeds.write_text(json.dumps(SEEDS))
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "run",
                "--replay",
                str(csv_path),
                "--speed",
                SPEED,
                "--record-seeds",
                str(seeds),
                "--kafka-bootstrap",
                kafka_bootstrap,
                "--namespace",
                namespace,
                "--clickhouse-url",
                f"chdb://{tmp_path / 'chdb'}",
                "--metrics-port",
                "0",
                "--gateway-port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,  # the processor's Faust data dir stays under tmp_path
            start_new_session=True,
        )
    try:
        banner = wait_for_line(proc, log, rf"live board: (http://127\.0\.0\.1:{port}/\?token=\S+)")
        url = banner.group(1)
        assert len(url.split("token=", 1)[1]) >= 16  # a generated token, not a guessable one

        async with board_page(url) as (page, errors):
            # gold through $5,000 (levels of step 100 and 1000 both): the first tick above
            crossing = (
                page.locator('#breaks li[data-record="level_up"][data-symbol="XAU"]')
                .filter(has_text="↑ 5,000")
                .filter(has_text="on the 1,000 grid")
            )
            await crossing.wait_for(timeout=WAIT_S * 1000)
            text = await crossing.inner_text()
            assert f"XAU at {xau_price(CROSS):,.2f}" in text, text
            # milestone velocity: since gold's first $4,000 (from the seeds)
            assert "first time" in text and "after 4,000" in text, text
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(START_MS / 1000 + 2 * CROSS))
            assert when in text, text

            # the card shows gold's price, and the page had no script error
            card = page.locator('.card[data-symbol="XAU"]')
            await card.wait_for(timeout=WAIT_S * 1000)
            # the distance to the all-time high is measured from the seeded record
            assert "ATH 5,015.00" in await card.inner_text()
            assert not errors, errors

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "pipeline-board.png"), full_page=True)

        # Ctrl-C once the file is published (the run keeps serving until then and after)
        wait_for_line(proc, log, r"published: ")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=WAIT_S)
        assert code == 0, log.read_text(errors="replace")[-4000:]
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the gateway stopped with the rest
    finally:
        if proc.poll() is None:
            stop_group(proc)
