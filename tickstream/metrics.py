"""Prometheus metric definitions shared by every component.

One prefix (``tickstream_``), base units, ``_total`` on counters, histograms
for latencies and batch sizes; labels stay low-cardinality (symbol, source,
reason, table, topic/partition).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000)

# producers
PRODUCER_TICKS = Counter(
    "tickstream_producer_ticks_total",
    "Ticks accepted and published to the ticks topic.",
    ["source", "symbol"],
)
PRODUCER_REJECTED = Counter(
    "tickstream_producer_rejected_total",
    "Inputs rejected by validation and sent to the DLQ.",
    ["source", "reason"],
)
PRODUCER_BYTES = Counter(
    "tickstream_producer_bytes_total", "Bytes of message values published.", ["topic"]
)
PRODUCER_SEND_SECONDS = Histogram(
    "tickstream_producer_send_seconds",
    "Time from send to broker acknowledgement of a batch.",
    buckets=_LATENCY_BUCKETS,
)
PRODUCER_ERRORS = Counter("tickstream_producer_errors_total", "Publish errors.", ["topic"])
PRODUCER_BUFFER = Gauge(
    "tickstream_producer_buffer_messages", "Messages waiting for a broker acknowledgement."
)
FEED_STALE = Gauge(
    "tickstream_feed_stale",
    "1 while a live feed has sent nothing for longer than its stale limit, else 0.",
    ["source"],
)
FEED_RECONNECTS = Counter(
    "tickstream_feed_reconnects_total",
    "Times a live feed connected again after its connection was lost.",
    ["source"],
)

# processors
PROCESSOR_TICKS = Counter(
    "tickstream_processor_ticks_total", "Ticks consumed by the stream processor.", ["symbol"]
)
PROCESSOR_LATE = Counter(
    "tickstream_processor_late_ticks_total",
    "Ticks later than the allowed lateness, kept aside on the late topic.",
    ["symbol"],
)
PROCESSOR_BATCH = Histogram(
    "tickstream_processor_batch_size", "Events per processed batch.", buckets=_BATCH_BUCKETS
)
PROCESSOR_BATCH_SECONDS = Histogram(
    "tickstream_processor_batch_seconds", "Kernel time per batch.", buckets=_LATENCY_BUCKETS
)
PROCESSOR_OUTPUTS = Counter(
    "tickstream_processor_outputs_total", "Rows and signals emitted by the processor.", ["kind"]
)
PROCESSOR_HEARTBEATS = Counter(
    "tickstream_processor_heartbeats_total",
    "Clock heartbeats taken from the ticks topic, by what they did to their symbol's clock "
    "(advanced; no_clock, behind, beyond_jump: nothing).",
    ["outcome"],
)
PROCESSOR_ERRORS = Counter(
    "tickstream_processor_errors_total", "Messages the processor could not decode.", ["reason"]
)

# sink
SINK_ROWS = Counter("tickstream_sink_rows_total", "Rows inserted into ClickHouse.", ["table"])
SINK_INSERT_SECONDS = Histogram(
    "tickstream_sink_insert_seconds",
    "ClickHouse insert latency.",
    ["table"],
    buckets=_LATENCY_BUCKETS,
)
SINK_BATCH_ROWS = Histogram(
    "tickstream_sink_batch_rows", "Rows per ClickHouse insert.", ["table"], buckets=_BATCH_BUCKETS
)
SINK_ERRORS = Counter(
    "tickstream_sink_errors_total", "Failed inserts or undecodable messages.", ["table", "reason"]
)
SINK_RETRIES = Counter("tickstream_sink_retries_total", "Insert retries after a failure.")
SINK_QUARANTINED = Counter(
    "tickstream_sink_quarantined_rows_total",
    "Rows ClickHouse refused for data reasons, sent to the quarantine topic instead.",
    ["table", "reason_class"],
)
CONSUMER_LAG = Gauge(
    "tickstream_consumer_lag_messages",
    "Messages behind the log end, per partition.",
    ["group", "topic", "partition"],
)

# freshness and latency
LAST_TICK_TS = Gauge(
    "tickstream_last_tick_timestamp_seconds",
    "Event time of the newest tick seen.",
    ["component", "symbol"],
)
E2E_LATENCY = Histogram(
    "tickstream_e2e_latency_seconds",
    "Wall-clock time from a tick's receive time to a stage.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)


# desk feed gateway (sinks/gateway)
GATEWAY_CLIENTS = Gauge("tickstream_gateway_clients", "Desk clients connected to the gateway.")
GATEWAY_MESSAGES_SENT = Counter(
    "tickstream_gateway_messages_sent_total",
    "Frames written to desk clients, by frame type.",
    ["kind"],
)
GATEWAY_TICKS_CONFLATED = Counter(
    "tickstream_gateway_ticks_conflated_total",
    "Ticks superseded by a newer tick of the same symbol within a conflation interval.",
)
GATEWAY_TICKS_DROPPED = Counter(
    "tickstream_gateway_ticks_dropped_total",
    "Ticks queued for a client that was disconnected as a slow consumer.",
)
GATEWAY_SLOW_DISCONNECTS = Counter(
    "tickstream_gateway_slow_disconnects_total",
    "Clients disconnected because their send buffer went over the limit.",
)
GATEWAY_SEND_LATENCY = Histogram(
    "tickstream_gateway_send_latency_seconds",
    "Time from a message's creation (its Kafka timestamp) to its write to a client socket.",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
GATEWAY_REFUSED = Counter(
    "tickstream_gateway_refused_total",
    "Requests refused for a missing or unknown token (websocket handshakes, /stats).",
    ["reason"],
)
GATEWAY_CLIENT_ERRORS = Counter(
    "tickstream_gateway_client_errors_total",
    "Error frames sent for client messages (bad JSON, unknown op, forbidden symbol, "
    "too_many_symbols: a subscription refused at the per-client symbol cap...).",
    ["error"],
)
GATEWAY_UNDECODABLE = Counter(
    "tickstream_gateway_undecodable_total",
    "Kafka messages the gateway could not decode, by topic role.",
    ["topic"],
)
SIGNAL_LATENCY = Histogram(
    "tickstream_signal_latency_seconds",
    "Wall-clock time from the producer's receipt of a signal's causing tick (recv_ms) to "
    "the gateway's fan-out of the signal event, by status and signal kind.",
    ["status", "signal"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

DIVERGENCE_OPEN = Gauge(
    "tickstream_divergence_window_open",
    "Direction of the open divergence window per pair and metric (+1, -1; 0 = none open).",
    ["pair", "metric"],
)
EVENT_LAG = Histogram(
    "tickstream_event_lag_seconds",
    "Wall-clock time since the event time (the tick's ts) of the newest item at a stage; "
    "large during replays of history by design.",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)

# `tickstream run` (cli/children.py)
CHILD_RESTARTS = Counter(
    "tickstream_child_restarts_total",
    "Child processes of `tickstream run` started again after an exit the run did not ask "
    "for (a crash, a kill), by child (processor-0, processor-1, ..., gateway).",
    ["child"],
)


def serve_metrics(port: int, component: str) -> int:
    """Expose /metrics on ``port`` (0 = off); returns the port in use."""
    if port <= 0:
        return 0
    try:
        start_http_server(port, addr="0.0.0.0")
    except OSError as exc:  # a busy port is a setting to change, not a traceback
        from tickstream.settings import ConfigError

        raise ConfigError(
            "metrics_port",
            f"cannot serve the {component}'s metrics on port {port} ({exc.strerror}); "
            "every component running on one host needs its own port (0 = off)",
        ) from None
    log.info("%s metrics on http://0.0.0.0:%d/metrics (all interfaces)", component, port)
    return port
