"""The live board in a real browser: Debian's chromium, driven by playwright.

The gateway runs against the real broker; the test publishes ticks, record breaks (as the
processor does: signal events, provisional then confirmed or retracted, besides the plain
exact rows) and a divergence window to the namespace's topics, opens the board with its
token and checks that the record breaks (replayed and live), prices and the open window
appear, that a provisional break is shown as such and turns confirmed, and that a
retracted one is withdrawn with its reason. A screenshot goes to test-artifacts/board.png.
Install the browser with scripts/install-chromium.sh (Debian's package; nothing is
downloaded at run time).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from sinks.gateway.access import TokenTable
from sinks.gateway.server import Gateway, GatewayConfig
from tickstream.contracts import RecordBreak, RollingBreak, SignalEvent, signal_id
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
async def board_page(
    url: str, init_script: str | None = None
) -> AsyncIterator[tuple[Any, list[str]]]:
    """Debian's headless Chromium on the board at ``url``: (page, script errors so far);
    ``init_script`` runs in the page before the board's own script."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            if init_script is not None:
                await page.add_init_script(init_script)
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


def _break(record: str, i: int, price: float, level: float, step: float) -> RecordBreak:
    return RecordBreak(
        symbol="XAU",
        record=record,
        ts_ms=T0 + i * 60_000,
        price=price,
        level=level,
        step=step,
        prev_ts_ms=T0 - 86_400_000,
        since_prev_s=86_400.0 + i * 60,
        first_time=1,
    )


def _event(row: RecordBreak | RollingBreak, status: str, reason: str = "") -> bytes:
    """The processor's signal_event row for ``row`` (its contract, its id)."""
    return SignalEvent(
        id=signal_id(row),
        status=status,
        signal=row.kind,
        symbol=row.key,
        ts_ms=row.ts_ms,
        price=row.price,
        recv_ms=row.ts_ms,
        emitted_ms=row.ts_ms + 2,
        announced=int(status == "confirmed"),
        reason=reason,
        row=row.encode().decode(),
    ).encode()


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
    level_up = _break("level_up", 20, xau[20], 5_000.0, 100.0)
    for value in (
        _event(level_up, "provisional"),
        level_up.encode(),  # the exact row (analyst tables): board state only
        _event(level_up, "confirmed"),
        orjson.dumps(
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
            }
        ),
    ):
        await producer.send(topics.signals, value, key=b"XAU")
    await producer.flush()

    async def publish(*values: bytes) -> None:
        for value in values:
            await producer.send(topics.signals, value, key=b"XAU")
        await producer.flush()

    async with board_page(f"http://127.0.0.1:{gw.port}/?token=board-token") as (page, errors):
        # the record break published before the page opened (replayed on subscribe), once
        level = page.locator('#breaks li[data-record="level_up"]')
        await level.and_(page.locator('[data-status="confirmed"]')).wait_for(timeout=WAIT_MS)
        assert await level.count() == 1
        text = await level.inner_text()
        assert "XAU" in text and "5,000" in text and "first time" in text
        assert "provisional" not in text

        # prices, ATH distance, next round level, ratio and the open window
        card = page.locator('.card[data-symbol="XAU"]')
        await card.locator(".px").filter(has_text="5,038.00").wait_for(timeout=WAIT_MS)
        card_text = await card.inner_text()
        assert "ATH" in card_text and "next level" in card_text and "5,100" in card_text
        await page.locator("#windows tr.window").wait_for(timeout=WAIT_MS)
        assert "ratio" in await page.locator("#windows").inner_text()
        ratio = await page.locator("#ratioval").inner_text()
        assert ratio.replace(".", "").isdigit()

        # a record break arriving live: provisional first (hollow marker, badge) ...
        ath = _break("ath", 39, xau[39], 5_030.0, 0.0)
        await publish(_event(ath, "provisional"))
        live = page.locator(f'#breaks li[data-id="{signal_id(ath)}"]')
        await live.and_(page.locator('[data-status="provisional"]')).wait_for(timeout=WAIT_MS)
        assert "provisional" in await live.inner_text()
        assert await _mark_fill(live) == "rgba(0, 0, 0, 0)"  # hollow
        # ... then confirmed: the same entry turns solid
        await publish(ath.encode(), _event(ath, "confirmed"))
        await live.and_(page.locator('[data-status="confirmed"]')).wait_for(timeout=WAIT_MS)
        assert "provisional" not in await live.inner_text()
        assert await _mark_fill(live) != "rgba(0, 0, 0, 0)"
        assert await page.locator(f'li[data-id="{signal_id(ath)}"]').count() == 1

        # a provisional break the exact computation does not confirm: struck through, with
        # the reason as its tooltip
        withdrawn = _break("ath", 40, 5_040.0, xau[39], 0.0)
        reason = "a late tick changed the high"
        await publish(_event(withdrawn, "provisional"))
        gone = page.locator(f'#breaks li[data-id="{signal_id(withdrawn)}"]')
        await gone.and_(page.locator('[data-status="provisional"]')).wait_for(timeout=WAIT_MS)
        await publish(_event(withdrawn, "retracted", reason))
        await gone.and_(page.locator(".retracted")).wait_for(timeout=WAIT_MS)
        assert await gone.get_attribute("title") == f"retracted: {reason}"
        decoration = await gone.evaluate("e => getComputedStyle(e).textDecorationLine")
        assert "line-through" in decoration
        assert await page.locator("#breaks li.break").count() == 3

        # rolling breaks have a list of their own
        roll = RollingBreak("XAU", "1h", "new_high", T0 + 39 * 60_000, xau[39], xau[38], 0)
        await publish(_event(roll, "provisional"), _event(roll, "confirmed"))
        rolled = page.locator('#rolling li[data-record="new_high"][data-status="confirmed"]')
        await rolled.wait_for(timeout=WAIT_MS)
        assert "1h high" in await rolled.inner_text()
        assert not errors, errors

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)


async def _mark_fill(item: Any) -> str:
    """The fill of a signal's marker: transparent (hollow) while provisional."""
    return str(await item.locator(".mark").evaluate("e => getComputedStyle(e).backgroundColor"))
