"""Who may use the desk feed, and which symbols each token may see.

A token is looked up once, at the websocket handshake (http.py); the access it grants
then rides on the connection, and its allow-list narrows every subscription and every
row the session sends (session.py). Refusals are protocol errors, so a desk is told why.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from sinks.gateway.protocol import ProtocolError, members
from tickstream.settings import check_token, parse_token_file, parse_token_list


@dataclass(frozen=True, slots=True)
class Access:
    """What one token may see: every symbol (allowed None) or an allow-list."""

    token_name: str
    allowed: frozenset[str] | None = None

    def check(self, symbols: frozenset[str] | None) -> None:
        """Refuse a subscription naming a symbol outside the allow-list ('*' is narrowed)."""
        if self.allowed is None or symbols is None:
            return
        refused = sorted(s for s in symbols if not self.allows(s))
        if refused:
            raise ProtocolError(
                "forbidden_symbol",
                f"this token may not subscribe to {refused}; allowed: {sorted(self.allowed)}",
            )

    def allows(self, key: str) -> bool:
        """A plain symbol must be listed; a pair or group needs itself or all its symbols."""
        allowed = self.allowed
        if allowed is None or key in allowed:
            return True
        parts = members(key)
        return len(parts) > 1 and all(p in allowed for p in parts)


class TokenTable:
    """The configured tokens, each with its optional symbol allow-list.

    The token grammar (characters, list and file formats) is the ``gateway.tokens``
    setting's, in tickstream.settings: one rule whether a token comes from a flag or code.
    """

    def __init__(self, tokens: Mapping[str, frozenset[str] | None]) -> None:
        for token in tokens:
            check_token(token)
        self._tokens = dict(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def lookup(self, presented: str | None) -> Access | None:
        """The access of a presented token, or None; compares in constant time per token."""
        if not presented:
            return None
        found: Access | None = None
        given = presented.encode()
        for i, (token, allowed) in enumerate(self._tokens.items()):
            if hmac.compare_digest(given, token.encode()) and found is None:
                found = Access(f"token#{i + 1}", allowed)
        return found

    def merged(self, other: TokenTable) -> TokenTable:
        return TokenTable({**self._tokens, **other._tokens})

    @classmethod
    def parse_list(cls, text: str) -> TokenTable:
        """``TOKEN[:SYM+SYM...]`` entries separated by commas (or whitespace)."""
        return cls(parse_token_list(text))

    @classmethod
    def parse_file(cls, text: str) -> TokenTable:
        """One token a line: ``TOKEN [SYM SYM ...]``; blank lines and '#' comments ignored."""
        return cls(parse_token_file(text))
