"""The desk feed gateway: a sink of ticks and signals toward trading desks over websockets.

``protocol`` (messages, subscriptions, access), ``conflation`` and ``state`` (snapshots,
the signal log for replays) are pure; ``feed`` holds the Kafka consumer, ``session`` the
websockets, ``http`` the plain pages, and ``server`` puts them together.
"""
