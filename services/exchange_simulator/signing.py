"""Binance's HMAC-SHA256 request signatures, REST and WebSocket API, and the timestamp/recvWindow rule.

REST: the signed payload is the query string exactly as received (still percent-encoded) concatenated, with no
separator, with the raw form body; the ``signature`` parameter is taken out of whichever of the two carries it.
WebSocket API: every parameter except ``signature``, sorted by name, as ``name=value`` joined by ``&``, values not
percent-encoded. The hex signature compares case-insensitively (HMAC only).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from services.exchange_simulator import errors

MAX_RECV_WINDOW_MS = Decimal(60000)
DEFAULT_RECV_WINDOW_MS = Decimal(5000)
MAX_AHEAD_MS = 1000


def hmac_hex(secret: str, payload: str | bytes) -> str:
    """HMAC-SHA256 of ``payload`` keyed with ``secret``, as lowercase hex."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hmac.new(secret.encode("utf-8"), data, hashlib.sha256).hexdigest()


def strip_signature(raw: str) -> tuple[str, str | None]:
    """Remove the ``signature=...`` pair from a raw query string or form body; return (rest, signature)."""
    if "signature=" not in raw:
        return raw, None
    kept: list[str] = []
    signature: str | None = None
    for part in raw.split("&"):
        if part.startswith("signature="):
            signature = part[len("signature=") :]
        else:
            kept.append(part)
    return "&".join(kept), signature


def rest_payload(raw_query: str, raw_body: str) -> tuple[str, str | None]:
    """The exact bytes Binance signs for a REST request, and the signature the request carries."""
    query, query_signature = strip_signature(raw_query)
    body, body_signature = strip_signature(raw_body)
    return query + body, query_signature if query_signature is not None else body_signature


def verify(secret: str, payload: str, signature: str) -> bool:
    """Whether ``signature`` (hex, any case) is the HMAC of ``payload``."""
    return hmac.compare_digest(hmac_hex(secret, payload), signature.strip().lower())


def _ws_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ws_payload(params: Mapping[str, Any]) -> str:
    """The payload Binance signs for a WebSocket API request: sorted ``k=v`` pairs, signature excluded."""
    return "&".join(f"{key}={_ws_value(params[key])}" for key in sorted(params) if key != "signature")


def parse_recv_window(raw: str | None) -> Decimal:
    """recvWindow in ms (up to 3 decimals, at most 60000); -1131 when it is out of range."""
    if raw is None or raw == "":
        return DEFAULT_RECV_WINDOW_MS
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise errors.illegal_chars("recvWindow", "^[0-9]{1,20}(\\.[0-9]{1,3})?$") from None
    if not value.is_finite() or value <= 0 or value > MAX_RECV_WINDOW_MS:
        raise errors.bad_recv_window()
    return value


def parse_timestamp(raw: Any) -> int:
    """A timestamp in ms (or µs, which Binance also accepts), as ms; -1102 when missing or malformed."""
    text = str(raw) if raw is not None else ""
    if not text.isdigit():
        raise errors.mandatory("timestamp")
    value = int(text)
    if value >= 10**14:  # microseconds (ms timestamps have 13 digits until the year 2286)
        value //= 1000
    return value


def check_timestamp(timestamp_ms: int, recv_window_ms: Decimal, now_ms: int) -> None:
    """Binance's rule: timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow, else -1021."""
    if timestamp_ms >= now_ms + MAX_AHEAD_MS:
        raise errors.ahead_of_server()
    if now_ms - timestamp_ms > recv_window_ms:
        raise errors.outside_recv_window()
