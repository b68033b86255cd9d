"""Sources of ticks (replay, simulator, websocket), validation, and the Kafka publisher."""
