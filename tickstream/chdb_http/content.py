"""Bodies on the wire: the Content-Encoding of requests, the Content-Type of results.

Clients compress what they send (clickhouse-connect compresses inserts with lz4 or zstd
when it can), so every encoding they use is understood; ClickHouse's own block
compression (``compress=1``/``decompress=1``) is not, and is refused where the request is
read. Responses are never compressed, which HTTP and every client allow.
"""

from __future__ import annotations

import gzip
import zlib

from tickstream.chdb_http.messages import QueryError

_BINARY_FORMATS = (
    "native",
    "rowbinary",
    "parquet",
    "arrow",
    "orc",
    "avro",
    "protobuf",
    "msgpack",
    "capnproto",
    "bsoneachrow",
    "npy",
    "rawblob",
)


def content_type(fmt: str | None) -> str:
    name = (fmt or "").lower()
    if name.startswith(_BINARY_FORMATS):
        return "application/octet-stream"
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8"
    if name.startswith("json"):
        return "application/json; charset=UTF-8"
    return "text/plain; charset=UTF-8"


def decompressed(data: bytes, encoding: str) -> bytes:
    """A request body in its Content-Encoding; zstd and lz4 as clickhouse-connect sends them."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    try:
        if encoding == "gzip":
            return gzip.decompress(data)
        if encoding == "deflate":
            return zlib.decompress(data)
        if encoding == "zstd":
            try:
                from compression import zstd  # type: ignore[import-not-found]  # 3.14+
            except ImportError:
                from backports import zstd  # type: ignore[no-redef]
            return zstd.decompress(data)
        if encoding == "lz4":
            import lz4.frame

            parts, rest = [], data
            while rest:  # one frame per chunk of a streamed insert
                frame = lz4.frame.LZ4FrameDecompressor()
                parts.append(frame.decompress(rest))
                if not frame.eof:
                    raise ValueError("truncated lz4 frame")
                rest = frame.unused_data
            return b"".join(parts)
    except ImportError as exc:
        raise QueryError.of(48, "NOT_IMPLEMENTED", f"no {encoding} decoder here ({exc})") from None
    except Exception as exc:
        raise QueryError.of(354, "CANNOT_DECOMPRESS", f"{encoding} body: {exc}", 400) from None
    raise QueryError.of(
        48,
        "NOT_IMPLEMENTED",
        f"Content-Encoding {encoding!r}: use gzip, deflate, zstd, lz4 or none",
        400,
    )
