"""Secrets out of URLs before they reach a log line, an error, a metric label or a table.

Feed URLs carry API keys in their query (``wss://feed?apikey=...``) and ClickHouse URLs
carry a password (``http://user:pass@host:8123``): both are settings a user pastes, and
both end up in messages. Every place that shows a URL shows ``redact_url(url)``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# query parameters whose value is a credential, matched case-insensitively
_SECRET_PARAM = re.compile(
    r"(key|token|secret|password|passwd|pwd|auth|signature|sig|session|credential)", re.I
)


def redact_url(url: str) -> str:
    """The URL with its password and credential-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if netloc == parts.netloc and not query:
        return url  # nothing to hide (and chdb:///path stays as written)
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
