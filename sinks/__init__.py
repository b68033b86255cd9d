"""Sinks: Kafka topics into ClickHouse, idempotently."""
