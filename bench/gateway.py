"""Desk feed gateway under load: N websocket clients, every symbol, a paced tick stream.

    python bench/gateway.py [--clients 500] [--rate 10000] [--seconds 15] [--symbols 10]
                            [--conflation-ms 250] [--kafka-bootstrap 127.0.0.1:9092]

Three processes on loopback: the gateway (`tickstream gateway`, as deployed), the clients
(one asyncio process holding every websocket, each subscribed to "*" and all kinds) and
this one, which publishes ticks at --rate to a fresh namespace's ticks topic and one
record break every 100 ms to its signals topic. Bounded: warm-up, then --seconds measured.

Latency is from creation to receipt: the Kafka timestamp of the message (stamped by this
process's producer when it sends; the gateway passes it on as ``created_ms``) to the
moment a client's recv() returns, same clock. Ticks are conflated (at most one per symbol
per interval), so their latency includes the wait for the next flush; record breaks are
never conflated. Gateway CPU comes from its own getrusage (its /stats endpoint) over the
measured window. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from array import array
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> dict[str, Any]:
    """GET a gateway page that needs a token (/stats), the bench's own token in a header."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as r:
        return orjson.loads(r.read())


def _pct(values: array, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- clients (own process)


def clients_main(url: str, n: int, start_at: float, stop_at: float, out: Any) -> None:
    """Open n websockets, subscribe, record latencies between start_at and stop_at."""
    result = asyncio.run(_clients(url, n, start_at, stop_at))
    out.send(result)
    out.close()


async def _clients(url: str, n: int, start_at: float, stop_at: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    tick_lat = array("d")
    signal_lat = array("d")
    frames = [0]
    closed_codes: list[int] = []
    connected = 0

    async def one(i: int) -> None:
        nonlocal connected
        # stagger the opening handshakes a little
        await asyncio.sleep(i * 0.002)
        async with connect(url, max_queue=64, open_timeout=30, compression=None) as ws:
            connected += 1
            await ws.send(orjson.dumps({"op": "subscribe", "symbols": "*", "kinds": "*"}))
            try:
                async for raw in ws:
                    now = time.time()
                    if now >= stop_at:
                        return
                    if now < start_at:
                        continue
                    doc = orjson.loads(raw)
                    frames[0] += 1
                    created = doc.get("created_ms")
                    if created is None:
                        continue
                    lat = now * 1000 - created
                    if doc["type"] == "tick":
                        tick_lat.append(lat)
                    elif doc["type"] == "record_break":
                        signal_lat.append(lat)
            except ConnectionClosed as exc:
                if exc.rcvd is not None:
                    closed_codes.append(exc.rcvd.code)

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {
        "connected": connected,
        "tick_lat": tick_lat,
        "signal_lat": signal_lat,
        "frames": frames[0],
        "closed_codes": closed_codes,
        "errors": errors[:5],
        "n_errors": len(errors),
    }


# ---------------------------------------------------------------- producer (this process)


async def produce(
    bootstrap: str, namespace: str, symbols: list[str], rate: int, until: float
) -> tuple[int, int]:
    from aiokafka import AIOKafkaProducer

    from tickstream.topics import Topics

    topics = Topics(namespace)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
    await producer.start()
    loop = asyncio.get_running_loop()
    step = 0.02  # one batch per symbol every 20 ms
    per_batch = max(1, round(rate * step / len(symbols)))
    prices = {s: 100.0 + 10 * i for i, s in enumerate(symbols)}
    seq = 0
    ticks = signals = 0
    next_at = loop.time()
    next_signal = time.time()
    try:
        while time.time() < until:
            now_ms = time.time_ns() // 1_000_000
            for s in symbols:
                rows = []
                for _ in range(per_batch):
                    seq += 1
                    prices[s] *= 1 + ((seq * 7919) % 11 - 5) * 1e-5
                    p = round(prices[s], 4)
                    rows.append([s, now_ms, p, p - 0.01, p + 0.01, 1.0, "bench", seq, now_ms])
                await producer.send(topics.ticks, orjson.dumps(rows), key=s.encode())
                ticks += per_batch
            if time.time() >= next_signal:
                next_signal += 0.1
                signals += 1
                s = symbols[signals % len(symbols)]
                row = {
                    "kind": "record_break",
                    "symbol": s,
                    "record": "ath",
                    "ts_ms": now_ms * 1000 + signals,  # unique identity per signal
                    "price": prices[s],
                    "level": prices[s],
                    "step": 0.0,
                    "prev_ts_ms": None,
                    "since_prev_s": None,
                    "first_time": 1,
                }
                await producer.send(topics.signals, orjson.dumps(row), key=s.encode())
            next_at += step
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await producer.flush()
    finally:
        await producer.stop()
    return ticks, signals


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--rate", type=int, default=10_000, help="ticks per second in")
    ap.add_argument("--seconds", type=float, default=15.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--conflation-ms", type=int, default=250)
    ap.add_argument(
        "--kafka-bootstrap",
        default=os.environ.get("TICKSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
    )
    args = ap.parse_args()

    from bench.scratch import drop_scratch
    from tickstream import kafka_local
    from tickstream.settings import Settings

    if not kafka_local.reachable(args.kafka_bootstrap):
        sys.exit(f"no broker at {args.kafka_bootstrap}: `tickstream kafka up` first")
    namespace = "bench" + uuid.uuid4().hex[:8]
    symbols = [f"S{i:02d}" for i in range(args.symbols)]
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    gateway = subprocess.Popen(
        [
            sys.executable, "-m", "cli", "-q", "gateway",
            "--port", str(port),
            "--tokens", TOKEN,
            "--conflation-ms", str(args.conflation_ms),
            "--kafka-bootstrap", args.kafka_bootstrap,
            "--namespace", namespace,
        ],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(base + "/healthz", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            if time.time() > deadline or gateway.poll() is not None:
                sys.exit("gateway did not come up")
            time.sleep(0.2)

        connect_s = max(5.0, args.clients * 0.004)
        start_at = time.time() + connect_s + args.warmup
        stop_at = start_at + args.seconds
        ctx = mp.get_context("spawn")
        recv_end, send_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=clients_main,
            args=(
                f"ws://127.0.0.1:{port}/ws?token={TOKEN}",
                args.clients,
                start_at,
                stop_at,
                send_end,
            ),
        )
        proc.start()
        load_before = os.getloadavg()[0]

        async def run() -> tuple[tuple[int, int], dict[str, Any], dict[str, Any]]:
            producing = asyncio.create_task(
                produce(args.kafka_bootstrap, namespace, symbols, args.rate, stop_at + 0.5)
            )
            await asyncio.sleep(max(0.0, start_at - time.time()))
            before = await asyncio.to_thread(_get_json, base + "/stats")
            await asyncio.sleep(max(0.0, stop_at - time.time()))
            after = await asyncio.to_thread(_get_json, base + "/stats")
            return await producing, before, after

        (ticks, signals), before, after = asyncio.run(run())
        result = recv_end.recv()
        proc.join(30)
    finally:
        gateway.terminate()
        try:
            gateway.wait(15)
        except subprocess.TimeoutExpired:
            gateway.kill()
        scratch = Settings(kafka_bootstrap=args.kafka_bootstrap, namespace=namespace)
        asyncio.run(drop_scratch(scratch))

    window = args.seconds
    cpu = (after["cpu_user_s"] + after["cpu_system_s"]) - (
        before["cpu_user_s"] + before["cpu_system_s"]
    )
    ticks_in = after["ticks_in"] - before["ticks_in"]
    tl, sl = result["tick_lat"], result["signal_lat"]
    print(
        f"gateway bench: {args.clients} clients (all symbols, all kinds), {args.symbols} symbols,"
    )
    print(
        f"  input {ticks_in / window:,.0f} ticks/s into the gateway over {window:.0f} s "
        f"(target {args.rate:,}), {signals / (window + args.warmup + connect_s):.0f} "
        f"record breaks/s, conflation {args.conflation_ms} ms"
    )
    print(
        f"  clients connected {result['connected']}/{args.clients}, "
        f"errors {result['n_errors']} {result['errors'][:2]}, closes {result['closed_codes'][:5]}"
    )
    print(f"  frames received {result['frames'] / window:,.0f}/s in all")
    for name, lat in (("tick (conflated)", tl), ("record break", sl)):
        if lat:
            print(
                f"  latency {name:17s} creation->receipt: p50 {_pct(lat, 0.5):7.1f} ms  "
                f"p99 {_pct(lat, 0.99):7.1f} ms  max {max(lat):7.1f} ms  "
                f"mean {statistics.fmean(lat):7.1f} ms  (n={len(lat):,})"
            )
    print(
        f"  gateway CPU {cpu:.2f} s over {window:.0f} s = {100 * cpu / window:.0f}% of one core; "
        f"max RSS {after.get('max_rss_mb', float('nan')):.0f} MB; "
        f"slow disconnects {after['slow_disconnects']}, "
        f"ticks conflated {after['ticks_conflated'] - before['ticks_conflated']:,}"
    )
    print(f"  machine: {os.cpu_count()} cores, load average {load_before:.2f} at start")


if __name__ == "__main__":
    main()
