"""Per-client bookkeeping of what to send: tick conflation and the signals already delivered.

Pure, like the protocol: the sessions (``session.py``) own one of each per client, and
the gateway one ``Conflator`` for the ticks of every client.
"""

from __future__ import annotations

from typing import Any


class SeqSet:
    """The signal sequence numbers one client received: a bitmap from a moving base.

    One bit per signal of the log (25 KB for 200,000 signals), so a later replay can skip
    what the client already has; ``trim`` forgets the numbers the log no longer holds.
    """

    __slots__ = ("_base", "_bits")

    def __init__(self) -> None:
        self._base = 1  # sequence number of bit 0 (a multiple of 8, plus 1)
        self._bits = bytearray()

    def add(self, seq: int) -> None:
        i = seq - self._base
        if i < 0:
            return  # older than what is tracked: the log has evicted it anyway
        byte = i >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte + 1 - len(self._bits)))
        self._bits[byte] |= 1 << (i & 7)

    def __contains__(self, seq: int) -> bool:
        i = seq - self._base
        if i < 0:
            return False
        byte = i >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (i & 7)))

    def trim(self, oldest: int) -> None:
        """Forget sequence numbers below ``oldest`` (whole bytes only)."""
        drop = (oldest - self._base) >> 3
        if drop > 0:
            del self._bits[:drop]
            self._base += drop * 8

    def __len__(self) -> int:
        return sum(bin(b).count("1") for b in self._bits)


# --------------------------------------------------------------------------- conflation


class Conflator:
    """Latest item per key until drained: the per-interval conflation of ticks."""

    __slots__ = ("_latest", "superseded")

    def __init__(self) -> None:
        self._latest: dict[str, Any] = {}
        self.superseded = 0  # items replaced before they were drained, ever

    def offer(self, key: str, item: Any) -> bool:
        """Keep ``item`` as the latest of ``key``; True when it replaced an undrained one."""
        latest = self._latest
        replaced = key in latest
        if replaced:
            self.superseded += 1
            del latest[key]  # re-insert: drain order follows the newest update
        latest[key] = item
        return replaced

    def pending(self) -> dict[str, Any]:
        """A copy of the undrained items by key."""
        return dict(self._latest)

    def drain(self) -> list[Any]:
        items = list(self._latest.values())
        self._latest.clear()
        return items

    def __len__(self) -> int:
        return len(self._latest)

    def __bool__(self) -> bool:
        return bool(self._latest)
