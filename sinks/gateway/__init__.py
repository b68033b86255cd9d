"""The desk feed gateway: a sink of ticks and signals toward trading desks over websockets.

``protocol`` (messages, subscriptions, access, conflation) and ``state`` (snapshots,
the signal log for replays) are pure; ``server`` holds the sockets and the Kafka consumer.
"""
