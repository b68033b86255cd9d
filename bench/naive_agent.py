"""The baseline: a per-event Faust agent keeping a running max per symbol.

One tick per Kafka message, one agent iteration per tick: the textbook way.
`bench/analytics.py` runs it as a worker and times it against tickstream's
batched processor on the same broker.
"""

from __future__ import annotations

import sys

import faust
import orjson


def create_app(bootstrap: str, topic: str, out_topic: str) -> faust.App:
    app = faust.App(
        f"{topic}.naive",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=3,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    done = app.topic(out_topic, key_serializer="raw", value_serializer="raw")
    highs: dict[str, float] = {}

    @app.agent(source)
    async def running_max(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            doc = orjson.loads(value)
            if isinstance(doc, dict):  # end marker: report and carry on
                await done.send(
                    key=b"", value=orjson.dumps({"done": doc["run_id"], "highs": highs})
                )
                continue
            symbol, price = doc[0], doc[2]
            if price > highs.get(symbol, float("-inf")):
                highs[symbol] = price

    return app


if __name__ == "__main__":
    bootstrap, topic, out_topic = sys.argv[1:4]
    app = create_app(bootstrap, topic, out_topic)
    worker = faust.Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()
