"""Request signing exactly as Binance documents it (see ../shared/reference/binance-spot-api.md §2).

REST: the payload is the query string concatenated without separator to the body, with every
name and value percent-encoded (RFC 3986: only ``A-Z a-z 0-9 - _ . ~`` stay as they are) before
signing; the signature is HMAC-SHA256 in lowercase hex. The encoded string is built once, signed,
and sent byte for byte, so what is signed is what the server sees.

WebSocket API: all params except ``signature``, sorted by name, ``k=v`` joined with ``&``, values
as UTF-8 text without percent-encoding.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

UNRESERVED = "-_.~"
_ALL_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


def _encode(text: str) -> str:
    # Names, symbols, numbers and client order ids need no escaping: skip quote() (4x the cost).
    return text if _ALL_UNRESERVED(text) else quote(text, safe=UNRESERVED)


def encode_params(params: Iterable[tuple[str, str]]) -> str:
    """Percent-encode ``name=value`` pairs in the given order (RFC 3986 unreserved set kept)."""
    return "&".join(f"{_encode(str(k))}={_encode(str(v))}" for k, v in params)


def payload(query: str, body: str = "") -> str:
    """The string Binance signs: the query string and the body concatenated with no separator."""
    return query + body


def hmac_sha256(secret: str, message: str) -> str:
    """HMAC-SHA256 of ``message`` keyed with ``secret``, lowercase hex."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign_query(secret: str, params: Iterable[tuple[str, str]]) -> str:
    """Return the encoded query string with ``&signature=...`` appended last."""
    query = encode_params(params)
    return f"{query}&signature={hmac_sha256(secret, query)}"


def ws_payload(params: Mapping[str, object]) -> str:
    """The WebSocket API signature payload: params sorted by name, not percent-encoded."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")


def sign_ws(secret: str, params: Mapping[str, object]) -> str:
    """HMAC-SHA256 signature of WebSocket API ``params``."""
    return hmac_sha256(secret, ws_payload(params))
