"""Pure, typed event-time analytics: no Kafka, Faust or ClickHouse in here."""
