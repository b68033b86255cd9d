"""The live board of `tickstream run`, in headless Chromium, with the whole pipeline real.

`tickstream run --replay FILE --speed 16` (no --until-drained: it keeps running) publishes a
paced file to the test broker; the Faust processor finds gold crossing $5,000 half-way
through it (seeded records: first $4,000 in October 2025, the $4,900 level in January);
the signal goes through `<ns>.signals` to the gateway `run` started, and from there to the
board opened with the token of the start-up banner. The test waits (bounded) for the
record-break row, checks its text, saves test-artifacts/pipeline-board.png, and stops the
run with SIGINT: it exits 0 and the gateway's port is closed again.

The second test paces a file in real time (`--speed 1`) with `--allowed-lateness-ms 2500`:
the page, with a recorder injected before its script (every websocket frame, and every
state a signal's list item is rendered in), sees gold's $5,000 crossing arrive
provisional, shown hollow with its badge, then about 2.5 s later the same id confirmed,
once the ticks after it carried gold's watermark past it; the test polls the list
meanwhile and saves test-artifacts/pipeline-confirmed.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_gateway_browser import (
    ARTIFACTS,
    CHROMIUM,
    board_page,
)

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


def start_run(
    tmp_path: Path,
    write: Callable[[Path], None],
    kafka_bootstrap: str,
    namespace: str,
    speed: str,
    *extra: str,
) -> tuple[subprocess.Popen[bytes], Path, int]:
    """`tickstream run --replay` of the file ``write`` makes, with SEEDS (no --until-drained:
    it keeps serving), logging to run.log, in a process group of its own, in ``tmp_path``:
    (the run, its log, its gateway's port)."""
    csv_path, seeds, log = tmp_path / "gold.csv", tmp_path / "seeds.json", tmp_path / "run.log"
    write(csv_path)
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
                speed,
                "--record-seeds",
                str(seeds),
                "--kafka-bootstrap",
                kafka_bootstrap,
                "--namespace",
                namespace,
                "--clickhouse-url",
                f"chdb://{log.parent / 'chdb'}",
                "--metrics-port",
                "0",
                "--gateway-port",
                str(port),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,  # the processor's Faust data dir stays under tmp_path
            start_new_session=True,
        )
    return proc, log, port


async def test_run_serves_the_live_board(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    proc, log, port = start_run(tmp_path, write_replay, kafka_bootstrap, namespace, SPEED)
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


# ---------------------------------------------------------------- provisional, then confirmed
#
# The same pipeline, paced in real time (--speed 1) with an allowed lateness of 2.5 s: gold
# crosses $5,000 after a lead-in long enough for the processor and the page to be live, the
# break goes out provisional on its tick's arrival, and is confirmed once the ticks that
# follow it (all in order) carry gold's watermark past it, about LATENESS_MS later.

LIVE_SPEED = "1"  # real time: event-time lateness is wall time on the page
LATENESS_MS = 2_500  # provisional and confirmed this far apart (event time, so wall time)
LIVE_STEP_MS = 500  # one XAU tick every 500 ms of event time, one XAG tick in between
LIVE_LEAD_MS = 24_000  # before the break: the processor starts, the page subscribes
LIVE_TAIL_MS = 2 * LATENESS_MS  # after it: the watermark passes it well before the file ends
LIVE_CROSS = LIVE_LEAD_MS // LIVE_STEP_MS  # the first XAU tick at or above $5,000


def live_xau_price(i: int) -> float:
    return round(5_000.02 + 0.05 * (i - LIVE_CROSS), 2)  # 4,999.97, then 5,000.02 at the cross


def write_live_replay(path: Path) -> None:
    lines = ["ts,symbol,price,bid,ask"]
    for i in range((LIVE_LEAD_MS + LIVE_TAIL_MS) // LIVE_STEP_MS):
        ts = START_MS + LIVE_STEP_MS * i
        gold = live_xau_price(i)  # stays below the seeded ATH (5,015): one break, the level
        silver = round(101.2 + 0.3 * (i % 2), 3)
        lines.append(f"{ts},XAU,{gold},{gold - 0.15:.2f},{gold + 0.15:.2f}")
        lines.append(
            f"{ts + LIVE_STEP_MS // 2},XAG,{silver},{silver - 0.01:.3f},{silver + 0.01:.3f}"
        )
    path.write_text("\n".join(lines) + "\n")


# Runs in the page before its own script: every websocket frame the board receives goes to
# window.__frames (arrival number, wall time, the signal fields), and every status a list
# item of a signal is rendered with goes to window.__dom (a MutationObserver: the board
# re-renders its lists, so a state lasting a single frame is seen too).
RECORDER = """
(() => {
  const frames = (window.__frames = []);
  const dom = (window.__dom = []);
  const FIELDS = ["id", "status", "symbol", "record", "level", "step", "window", "ts_ms",
                  "price", "announced", "reason", "recv_ms", "emitted_ms"];
  const Native = window.WebSocket;
  let n = 0;
  class Recording extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (ev) => {
        const f = { n: n++, t: Date.now(), type: null };
        let m = null;
        try { m = JSON.parse(ev.data); } catch (e) { f.type = "unparsed"; }
        if (m) {
          f.type = m.type;
          if (m.type === "record_break" || m.type === "rolling_break") {
            for (const k of FIELDS) f[k] = m[k];
          }
          if (m.type === "snapshot") {
            f.signals = (m.signals || []).map((s) => ({ id: s.id, status: s.status }));
          }
        }
        frames.push(f);
      });
    }
  }
  window.WebSocket = Recording;

  const last = new Map();
  const seen = (li) => {
    const id = li.dataset.id;
    const key = li.dataset.status + "|" + li.className;
    if (!id || last.get(id) === key) return;
    last.set(id, key);
    const mark = li.querySelector(".mark");
    dom.push({ t: Date.now(), id, status: li.dataset.status, cls: li.className,
               list: li.parentElement ? li.parentElement.id : null, text: li.textContent,
               fill: mark ? getComputedStyle(mark).backgroundColor : null });
  };
  new MutationObserver((records) => {
    for (const r of records) {
      for (const node of r.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        if (node.matches("li[data-id]")) seen(node);
        else node.querySelectorAll("li[data-id]").forEach(seen);
      }
    }
  }).observe(document, { childList: true, subtree: true });
})();
"""

# The record-break list items as the page shows them now (read by the test's own polling).
READ_BREAKS = """
() => [...document.querySelectorAll("#breaks li[data-id]")].map((li) => {
  const mark = li.querySelector(".mark");
  return { id: li.dataset.id, status: li.dataset.status, cls: li.className,
           record: li.dataset.record, symbol: li.dataset.symbol, text: li.textContent,
           fill: mark ? getComputedStyle(mark).backgroundColor : null };
})
"""
HOLLOW = "rgba(0, 0, 0, 0)"  # a marker's fill while provisional (transparent)


def is_target(item: dict[str, Any]) -> bool:
    """The list item of gold's $5,000 crossing on the 1,000 grid."""
    return (
        item["record"] == "level_up"
        and item["symbol"] == "XAU"
        and "↑ 5,000" in item["text"]
        and "on the 1,000 grid" in item["text"]
    )


async def test_board_sees_a_provisional_break_turn_confirmed(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    proc, log, port = start_run(
        tmp_path,
        write_live_replay,
        kafka_bootstrap,
        namespace,
        LIVE_SPEED,
        "--allowed-lateness-ms",
        str(LATENESS_MS),
    )
    try:
        banner = wait_for_line(proc, log, rf"live board: (http://127\.0\.0\.1:{port}/\?token=\S+)")
        async with board_page(banner.group(1), RECORDER) as (page, errors):
            # poll the list until the crossing shows confirmed, noting each state it shows
            polled: list[tuple[float, str, str, str | None]] = []  # (t, status, class, fill)
            deadline = time.monotonic() + WAIT_S
            while not (polled and polled[-1][1] == "confirmed"):
                assert proc.poll() is None, f"the run exited with {proc.returncode}"
                assert time.monotonic() < deadline, (
                    f"the crossing never showed confirmed; states seen {polled}; "
                    f"page: {await page.evaluate(READ_BREAKS)}; "
                    f"signal frames: {signal_frames(await page.evaluate('window.__frames'))}"
                )
                for item in await page.evaluate(READ_BREAKS):
                    state = (item["status"], item["cls"], item["fill"])
                    if is_target(item) and (not polled or polled[-1][1:] != state):
                        polled.append((time.time(), *state))
                await asyncio.sleep(0.05)
            frames: list[dict[str, Any]] = await page.evaluate("window.__frames")
            dom: list[dict[str, Any]] = await page.evaluate("window.__dom")
            final = [item for item in await page.evaluate(READ_BREAKS) if is_target(item)]
            assert not errors, errors
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "pipeline-confirmed.png"), full_page=True)
        seen = signal_frames(frames)  # for the messages

        # on the wire: the crossing's frames, one id, provisional first, then confirmed
        crossing = [
            f
            for f in frames
            if f["type"] == "record_break"
            and (f["symbol"], f["record"], f["level"], f["step"]) == ("XAU", "level_up", 5000, 1000)
        ]
        assert crossing, seen
        sid = crossing[0]["id"]
        assert [(f["id"], f["status"]) for f in crossing] == [
            (sid, "provisional"),
            (sid, "confirmed"),
        ], seen
        provisional, confirmed = crossing
        assert provisional["n"] < confirmed["n"] and provisional["t"] <= confirmed["t"], seen
        assert provisional["price"] == confirmed["price"] == live_xau_price(LIVE_CROSS)
        assert provisional["ts_ms"] == confirmed["ts_ms"] == START_MS + LIVE_STEP_MS * LIVE_CROSS
        assert confirmed["announced"] == 1 and confirmed["reason"] == "", confirmed
        # the page had subscribed (snapshot received) before the break went out, and its
        # snapshot did not already hold it: both steps reached the page live
        snapshots = [f for f in frames if f["type"] == "snapshot"]
        assert snapshots and snapshots[0]["n"] < provisional["n"], seen
        before = [snap for snap in snapshots if snap["n"] < provisional["n"]]
        assert all(s["id"] != sid for snap in before for s in snap["signals"]), before
        # no record break of the run was retracted (an in-order feed), none skipped a step
        for other in {f["id"] for f in frames if f["type"] == "record_break"}:
            statuses = [f["status"] for f in frames if f.get("id") == other]
            assert statuses in (["provisional"], ["provisional", "confirmed"]), (other, seen)

        # in the page: the crossing's item, by id, was rendered provisional (class, badge,
        # hollow marker), then confirmed (solid marker, no badge), and in no other state
        rendered = [d for d in dom if d["id"] == sid]
        assert [d["status"] for d in rendered] == ["provisional", "confirmed"], rendered
        shown, settled = rendered
        assert "provisional" in shown["cls"].split() and shown["fill"] == HOLLOW, shown
        assert "provisional" in shown["text"], shown
        assert "confirmed" in settled["cls"].split() and settled["fill"] != HOLLOW, settled
        assert "provisional" not in settled["text"], settled
        assert shown["t"] >= provisional["t"] and settled["t"] >= confirmed["t"], rendered
        # the test's own polling saw both states too, in that order, and the item stays
        assert [p[1] for p in polled] == ["provisional", "confirmed"], (polled, seen)
        assert polled[0][3] == HOLLOW and polled[-1][3] != HOLLOW, polled
        assert [(i["id"], i["status"]) for i in final] == [(sid, "confirmed")], final
        assert "provisional" not in final[0]["text"], final

        print(  # for the record (pytest -s): how far apart, and how much margin the lead-in left
            f"\n{sid}: provisional (frame {provisional['n']}) to confirmed (frame "
            f"{confirmed['n']}): {(confirmed['t'] - provisional['t']) / 1000:.2f} s on the page, "
            f"{(polled[-1][0] - polled[0][0]):.2f} s by polling (lateness {LATENESS_MS} ms); "
            f"subscribed {(provisional['t'] - snapshots[0]['t']) / 1000:.1f} s before the break; "
            f"processor lag at the break (emitted - recv) "
            f"{provisional['emitted_ms'] - provisional['recv_ms']} ms"
        )

        # Ctrl-C once the file is published: the run exits 0
        wait_for_line(proc, log, r"published: ")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=WAIT_S)
        assert code == 0, log.read_text(errors="replace")[-4000:]
    finally:
        if proc.poll() is None:
            stop_group(proc)
        print(f"--- the run's log (tail) ---\n{log.read_text(errors='replace')[-6000:]}")


def signal_frames(frames: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The record-break frames and snapshots a page received, short, for failure messages."""
    return [
        (f["n"], f["t"], f["type"], f.get("id"), f.get("status"), f.get("record"), f.get("step"))
        for f in frames
        if f["type"] in ("record_break", "snapshot")
    ]
