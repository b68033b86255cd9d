"""What one desk client subscribed to, per kind, within a cap on how many symbols it names.

Why a cap: a subscription is memory the gateway holds, and work its fan-out does, for as long
as the client stays connected. Unbounded, one client with a valid token could send subscribe
after subscribe naming new (even made-up) symbols, or unsubscribe symbol after symbol from a
``"*"`` subscription (exclusions are kept too), and grow the gateway's memory without limit.

What counts: the distinct names a client's subscription holds, over all kinds, whether
selected or excluded: a symbol, a pair ``XAU/XAG`` or a sync group ``XAU+XAG`` is one name
however many kinds it is subscribed under. ``"*"`` costs nothing (it names no one), and
symbols subscribed on top of a kind's ``"*"`` are not kept (it covers them). Kinds need no
cap of their own: there are ``len(KINDS)`` of them, so what one client holds stays under
``cap * len(KINDS)`` set entries.

A change that would take the subscription over the cap is refused whole with the protocol
error ``too_many_symbols`` and leaves the subscription as it was: the client keeps what it had
and is told why (session.py sends the error frame and counts it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sinks.gateway.protocol import ALL, KINDS, MAX_SYMBOLS, TOO_MANY_SYMBOLS, ProtocolError, members


class _KindSelection:
    """One kind's selection: ``all`` but ``excluded``, or the listed ``symbols``."""

    __slots__ = ("all", "symbols", "excluded")

    def __init__(
        self, all: bool = False, symbols: Iterable[str] = (), excluded: Iterable[str] = ()
    ) -> None:
        self.all = all
        self.symbols: set[str] = set(symbols)
        self.excluded: set[str] = set(excluded)

    def copy(self) -> _KindSelection:
        return _KindSelection(self.all, self.symbols, self.excluded)

    def matches(self, symbol: str) -> bool:
        return symbol in self.symbols or (self.all and symbol not in self.excluded)

    def empty(self) -> bool:
        return not self.all and not self.symbols


class Subscription:
    """What one client asked for: per kind, a set of symbols, or all but some.

    A row whose key joins several symbols (a pair 'XAU/XAG', a sync group 'XAU+XAG')
    matches when the key itself or any of its symbols is selected. ``limit``: the most
    names the subscription may hold (see the module doc); a change past it raises
    ProtocolError ``too_many_symbols`` and changes nothing.
    """

    def __init__(self, limit: int = MAX_SYMBOLS) -> None:
        self.limit = limit
        self._kinds: dict[str, _KindSelection] = {}
        self._cache: dict[tuple[str, str], bool] = {}

    def subscribe(self, symbols: frozenset[str] | None, kinds: Iterable[str]) -> None:
        staged = {k: (self._kinds.get(k) or _KindSelection()).copy() for k in kinds}
        for sel in staged.values():
            if symbols is None:
                sel.all = True
                sel.excluded.clear()
                sel.symbols.clear()  # "*" covers them
            else:
                sel.excluded -= symbols
                if not sel.all:
                    sel.symbols |= symbols
        self._commit(staged, "subscribe")

    def unsubscribe(self, symbols: frozenset[str] | None, kinds: Iterable[str]) -> None:
        staged = {k: sel.copy() for k in kinds if (sel := self._kinds.get(k)) is not None}
        for sel in staged.values():
            if symbols is None:
                sel.all = False
                sel.symbols.clear()
                sel.excluded.clear()
            else:
                sel.symbols -= symbols
                if sel.all:
                    sel.excluded |= symbols
        self._commit(staged, "unsubscribe")

    def _commit(self, staged: dict[str, _KindSelection], op: str) -> None:
        """Adopt the staged kinds, unless the whole would then name more than ``limit``."""
        held = self.size({**self._kinds, **staged})
        if held > self.limit:
            raise ProtocolError(
                TOO_MANY_SYMBOLS,
                f"this {op} would make your subscriptions name {held} symbols (pairs and sync "
                f'groups count as one each, an exception to "*" too); a client may name at '
                f'most {self.limit}. Nothing changed: unsubscribe some first, or use "*"',
            )
        self._cache.clear()
        for kind, sel in staged.items():
            if sel.empty():
                self._kinds.pop(kind, None)
            else:
                self._kinds[kind] = sel

    def size(self, kinds: dict[str, _KindSelection] | None = None) -> int:
        """The distinct names held (selected or excluded), which the cap bounds."""
        names: set[str] = set()
        for sel in (self._kinds if kinds is None else kinds).values():
            names |= sel.symbols
            names |= sel.excluded
        return len(names)

    def wants(self, kind: str, key: str) -> bool:
        """Whether a row of subscription kind ``kind`` keyed ``key`` goes to this client."""
        cached = self._cache.get((kind, key))
        if cached is not None:
            return cached
        sel = self._kinds.get(kind)
        if sel is None:
            result = False
        elif sel.matches(key):
            result = True
        else:
            parts = members(key)
            result = len(parts) > 1 and any(sel.matches(p) for p in parts)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(kind, key)] = result
        return result

    def kinds(self) -> frozenset[str]:
        return frozenset(self._kinds)

    def active(self) -> bool:
        return bool(self._kinds)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in KINDS:
            sel = self._kinds.get(kind)
            if sel is None:
                continue
            if sel.all:
                out[kind] = {"symbols": ALL, "except": sorted(sel.excluded)}
            else:
                out[kind] = {"symbols": sorted(sel.symbols)}
        return out
