"""The live board in a real browser: Debian's chromium, driven by playwright.

The gateway runs against the real broker; the test publishes ticks, a record break and a
divergence window to the namespace's topics, opens the board with its token and checks
that the record breaks (replayed and live), prices and the open window appear. A
screenshot goes to test-artifacts/board.png. Install the browser with
scripts/install-chromium.sh (Debian's package; nothing is downloaded at run time).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from sinks.gateway.protocol import TokenTable
from sinks.gateway.server import Gateway, GatewayConfig
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 30_000  # a bound on each wait, not a measure

playwright_api = pytest.importorskip("playwright.async_api")


@contextlib.asynccontextmanager
async def board_page(url: str) -> AsyncIterator[tuple[Any, list[str]]]:
    """Debian's headless Chromium on the board at ``url``: (page, script errors so far)."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url)
            yield page, errors
        finally:
            await browser.close()


pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: run scripts/install-chromium.sh"
    ),
]

T0 = 1_769_385_600_000  # 2026-01-26 00:00 UTC


def _tick(symbol: str, i: int, price: float) -> list[Any]:
    ts = T0 + i * 60_000
    return [symbol, ts, price, price - 0.2, price + 0.2, 1.0, "sim", i, ts]


def _break(record: str, i: int, price: float, level: float, step: float) -> dict[str, Any]:
    return {
        "kind": "record_break",
        "symbol": "XAU",
        "record": record,
        "ts_ms": T0 + i * 60_000,
        "price": price,
        "level": level,
        "step": step,
        "prev_ts_ms": T0 - 86_400_000,
        "since_prev_s": 86_400.0 + i * 60,
        "first_time": 1,
    }


@pytest.fixture
async def board(kafka_bootstrap: str, namespace: str) -> AsyncIterator[tuple[Gateway, Any]]:
    await ensure_topics(
        Settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace, partitions=1)
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0)
    await producer.start()
    gw = Gateway(
        GatewayConfig(
            kafka_bootstrap=kafka_bootstrap,
            namespace=namespace,
            tokens=TokenTable.parse_list("board-token"),
            port=0,
            conflation_ms=50,
            partitions=1,
        )
    )
    await gw.start()
    try:
        await gw.ready.wait()
        yield gw, producer
    finally:
        await gw.stop()
        await producer.stop()


async def test_board_shows_record_breaks(board: tuple[Gateway, AIOKafkaProducer]) -> None:
    gw, producer = board
    topics = Topics(gw.config.namespace)
    xau = [4_960.0 + 2.0 * i for i in range(40)]  # through $5,000 at i = 20
    xag = [104.0 + 0.08 * i for i in range(40)]
    await producer.send(
        topics.ticks, orjson.dumps([_tick("XAU", i, p) for i, p in enumerate(xau)]), key=b"XAU"
    )
    await producer.send(
        topics.ticks, orjson.dumps([_tick("XAG", i, p) for i, p in enumerate(xag)]), key=b"XAG"
    )
    for row in (
        _break("level_up", 20, xau[20], 5_000.0, 100.0),
        {
            "kind": "divergence_window",
            "pair": "XAU/XAG",
            "metric": "ratio",
            "direction": -1,
            "opened_at_ms": T0 + 30 * 60_000,
            "closed_at_ms": None,
            "open_value": 46.1,
            "peak_value": 45.9,
            "peak_at_ms": T0 + 35 * 60_000,
            "close_value": None,
        },
    ):
        await producer.send(topics.signals, orjson.dumps(row), key=b"XAU")
    await producer.flush()

    async with board_page(f"http://127.0.0.1:{gw.port}/?token=board-token") as (page, errors):
        # the record break published before the page opened (replayed on subscribe)
        level = page.locator('#breaks li[data-record="level_up"]')
        await level.wait_for(timeout=WAIT_MS)
        text = await level.inner_text()
        assert "XAU" in text and "5,000" in text and "first time" in text

        # prices, ATH distance, next round level, ratio and the open window
        card = page.locator('.card[data-symbol="XAU"]')
        await card.locator(".px").filter(has_text="5,038.00").wait_for(timeout=WAIT_MS)
        card_text = await card.inner_text()
        assert "ATH" in card_text and "next level" in card_text and "5,100" in card_text
        await page.locator("#windows tr.window").wait_for(timeout=WAIT_MS)
        assert "ratio" in await page.locator("#windows").inner_text()
        ratio = await page.locator("#ratioval").inner_text()
        assert ratio.replace(".", "").isdigit()

        # and a record break arriving live, while the page is open
        await producer.send_and_wait(
            topics.signals, orjson.dumps(_break("ath", 39, xau[39], 5_030.0, 0.0)), key=b"XAU"
        )
        ath = page.locator('#breaks li[data-record="ath"]')
        await ath.wait_for(timeout=WAIT_MS)
        assert "ATH" in await ath.inner_text()
        assert await page.locator("#breaks li.break").count() == 2
        assert not errors, errors

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)
