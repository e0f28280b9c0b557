"""Binance's request signatures (HMAC-SHA256, Ed25519, RSA), REST and WebSocket API, and the timestamp rule.

REST: the signed payload is the query string exactly as received (still percent-encoded) concatenated, with no
separator, with the raw form body; the ``signature`` parameter is taken out of whichever of the two carries it.
WebSocket API: every parameter except ``signature``, sorted by name, as ``name=value`` joined by ``&``, values not
percent-encoded. Every key type signs the same payload. HMAC: lowercase hex, compared case-insensitively.
Ed25519 and RSA (RSASSA-PKCS1-v1_5 with SHA-256): base64, case-sensitive, percent-encoded in a REST request (its
``+``, ``/`` and ``=``) and decoded here like any form value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote_plus

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from services.exchange_simulator import errors
from shared.config import ConfigError

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
    """The exact bytes Binance signs for a REST request, and the signature the request carries (form-decoded)."""
    query, query_signature = strip_signature(raw_query)
    body, body_signature = strip_signature(raw_body)
    signature = query_signature if query_signature is not None else body_signature
    return query + body, None if signature is None else unquote_plus(signature)


def verify(secret: str, payload: str, signature: str) -> bool:
    """Whether ``signature`` (hex, any case) is the HMAC of ``payload``."""
    return hmac.compare_digest(hmac_hex(secret, payload), signature.strip().lower())


class Verifier(Protocol):
    """Checks the signature of one API key over a payload (REST or WebSocket API form)."""

    def verify(self, payload: str, signature: str) -> bool:
        """Whether ``signature`` (as the request carries it, REST percent-encoding removed) signs ``payload``."""
        ...


class HmacVerifier:
    """An HMAC key: the shared secret."""

    def __init__(self, secret: str):
        self._secret = secret

    def verify(self, payload: str, signature: str) -> bool:
        return verify(self._secret, payload, signature)


class PublicKeyVerifier:
    """An Ed25519 or RSA key: the public half; signatures are base64."""

    def __init__(self, key: Ed25519PublicKey | RSAPublicKey):
        self.key = key

    @property
    def kind(self) -> str:
        return "Ed25519" if isinstance(self.key, Ed25519PublicKey) else "RSA"

    def verify(self, payload: str, signature: str) -> bool:
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        try:
            if isinstance(self.key, Ed25519PublicKey):
                self.key.verify(raw, payload.encode("utf-8"))
            else:
                self.key.verify(raw, payload.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def public_key_verifier(pem: bytes, variable: str = "SIM_PUBLIC_KEY_FILE") -> PublicKeyVerifier:
    """A verifier for a PEM public key (Ed25519, or RSA of 2048 to 4096 bits); ConfigError naming ``variable``."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{variable} is not a PEM public key (Ed25519 or RSA)") from None
    if isinstance(key, RSAPublicKey) and not 2048 <= key.key_size <= 4096:
        raise ConfigError(f"{variable} holds a {key.key_size}-bit RSA key; Binance accepts 2048 to 4096 bits")
    if not isinstance(key, Ed25519PublicKey | RSAPublicKey):
        raise ConfigError(f"{variable} holds an unsupported key type; Binance accepts Ed25519 and RSA keys")
    return PublicKeyVerifier(key)


def load_public_key(path: str, variable: str = "SIM_PUBLIC_KEY_FILE") -> PublicKeyVerifier:
    """Read a PEM public key file; ConfigError naming ``variable`` when it is unreadable or unsupported."""
    try:
        pem = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{variable}: cannot read {path}: {error.strerror or error}") from None
    return public_key_verifier(pem, variable)


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
