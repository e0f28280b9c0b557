"""Request signing exactly as Binance documents it, for HMAC, Ed25519 and RSA API keys.

REST: the payload is the query string concatenated without separator to the body, with every
name and value percent-encoded (RFC 3986: only ``A-Z a-z 0-9 - _ . ~`` stay as they are) before
signing. The encoded string is built once, signed, and sent byte for byte, so what is signed is
what the server sees.

WebSocket API: all params except ``signature``, sorted by name, ``k=v`` joined with ``&``, values
as UTF-8 text without percent-encoding.

Every key type signs the same payload; only the signature differs (one ``Signer`` per type):
HMAC-SHA256 in lowercase hex (Binance calls HMAC keys deprecated); Ed25519 (Binance's recommendation)
and RSASSA-PKCS1-v1_5 with SHA-256 in base64, which has ``+``, ``/`` and ``=`` and so is
percent-encoded in a REST request (the WebSocket API carries it as a JSON string as it is).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from shared.config import ConfigError

KEY_FILE_VARIABLE = "BINANCE_PRIVATE_KEY_FILE"
PASSPHRASE_VARIABLE = "BINANCE_PRIVATE_KEY_PASSPHRASE"  # noqa: S105 - the name of the variable
RSA_KEY_BITS = (2048, 4096)
"""The RSA key sizes Binance accepts (2048 recommended)."""

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


class Signer(Protocol):
    """Signs a payload with the API key's secret half; the key material never leaves it."""

    kind: str

    def sign(self, payload: str) -> str:
        """The signature of ``payload`` as Binance expects it (before any percent-encoding)."""
        ...


class HmacSigner:
    """An HMAC key: HMAC-SHA256 in lowercase hex."""

    kind = "HMAC"

    def __init__(self, secret: str):
        self._secret = secret

    def __repr__(self) -> str:
        return "HmacSigner(***)"

    def sign(self, payload: str) -> str:
        return hmac_sha256(self._secret, payload)


class Ed25519Signer:
    """An Ed25519 key (Binance's recommendation): the signature in base64."""

    kind = "Ed25519"

    def __init__(self, key: Ed25519PrivateKey):
        self._key = key

    def __repr__(self) -> str:
        return "Ed25519Signer(***)"

    def sign(self, payload: str) -> str:
        return base64.b64encode(self._key.sign(payload.encode())).decode("ascii")


class RsaSigner:
    """An RSA key: RSASSA-PKCS1-v1_5 with SHA-256 (Binance does not accept PSS), in base64."""

    kind = "RSA"

    def __init__(self, key: RSAPrivateKey):
        self._key = key

    def __repr__(self) -> str:
        return "RsaSigner(***)"

    def sign(self, payload: str) -> str:
        raw = self._key.sign(payload.encode(), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(raw).decode("ascii")


def signer_from_pem(pem: bytes, passphrase: str = "") -> Ed25519Signer | RsaSigner:
    """The signer of a PEM private key (Ed25519, or RSA of 2048 to 4096 bits; the type is read from the key).

    Every failure is a ConfigError naming the variable to fix; no message carries key material.
    """
    encrypted = b"ENCRYPTED" in pem
    if encrypted and not passphrase:
        raise ConfigError(f"{KEY_FILE_VARIABLE} holds an encrypted private key: set {PASSPHRASE_VARIABLE}")
    if passphrase and not encrypted:
        raise ConfigError(f"{PASSPHRASE_VARIABLE} is set but the key in {KEY_FILE_VARIABLE} is not encrypted")
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase.encode() if passphrase else None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise ConfigError(
                f"{PASSPHRASE_VARIABLE} does not decrypt the private key in {KEY_FILE_VARIABLE} "
                "(wrong passphrase or damaged file)"
            ) from None
        raise ConfigError(f"{KEY_FILE_VARIABLE} is not a PEM private key (Ed25519 or RSA)") from None
    if isinstance(key, Ed25519PrivateKey):
        return Ed25519Signer(key)
    if isinstance(key, RSAPrivateKey):
        low, high = RSA_KEY_BITS
        if not low <= key.key_size <= high:
            raise ConfigError(
                f"{KEY_FILE_VARIABLE} holds a {key.key_size}-bit RSA key; Binance accepts {low} to {high} bits"
            )
        return RsaSigner(key)
    raise ConfigError(f"{KEY_FILE_VARIABLE} holds an unsupported key type; Binance accepts Ed25519 and RSA keys")


def load_private_key(path: str, passphrase: str = "") -> Ed25519Signer | RsaSigner:
    """Read ``path`` (BINANCE_PRIVATE_KEY_FILE) and return its signer; ConfigError naming the variable on failure."""
    try:
        pem = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(
            f"{KEY_FILE_VARIABLE}: cannot read {path}: {error.strerror or type(error).__name__}"
        ) from None
    return signer_from_pem(pem, passphrase)


def load_signer(api_secret: str, private_key_file: str, passphrase: str = "") -> Signer:
    """The signer the configuration asks for: the key file's (Ed25519 or RSA) if one is set, else HMAC."""
    if private_key_file:
        return load_private_key(private_key_file, passphrase)
    return HmacSigner(api_secret)


def append_signature(signer: Signer, query: str) -> str:
    """``query`` with ``&signature=...`` appended last, the signature percent-encoded (base64 has + / =)."""
    return f"{query}&signature={_encode(signer.sign(query))}"


def ws_payload(params: Mapping[str, object]) -> str:
    """The WebSocket API signature payload: params sorted by name, not percent-encoded."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")


def sign_ws(signer: Signer, params: Mapping[str, object]) -> str:
    """The signature of WebSocket API ``params`` (sent as it is in the JSON request)."""
    return signer.sign(ws_payload(params))
