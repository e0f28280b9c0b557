"""API key format and hashing.

A key is ``tk_<ULID>_<secret>``: the ULID names the stored record (``key_<ULID>``), the secret is
32 random bytes in URL-safe base64 without padding. Only SHA-256 of the secret is stored; that is
enough for 256-bit random secrets (no dictionary to attack) and keeps lookup by id cheap. The
log masker recognises the ``tk_`` shape, so a key pasted into a message is hidden anyway.

Scopes and expiry: a key has READ, or READ and TRADE (``Scope``), and may expire. Keys stored
before scopes existed have no grant row and are trade keys without expiry. A key a user's own key
creates is no wider than that key (``grant``): only scopes it has itself, and never outliving it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.user_service.domain.model import TRADE_SCOPES, ApiKey, Scope
from shared.errors import InvalidArgument, PermissionDenied
from shared.ids import new_ulid
from shared.timeutil import iso_from_ms

_KEY = re.compile(r"^tk_([0-9A-HJKMNP-TV-Z]{26})_([A-Za-z0-9_-]{43})$")
SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly made key: the id, the full secret key for the client (shown once) and the hash to store."""

    key_id: str
    api_key: str
    secret_hash: str


@dataclass(frozen=True, slots=True)
class PresentedKey:
    """A key a client presented, split into the id to look up and the secret to check."""

    key_id: str
    secret: str

    @property
    def id_prefix(self) -> str:
        """A short, non-secret prefix of the key id for security logs."""
        return self.key_id[:14]


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def issue() -> IssuedKey:
    """Make a new random key."""
    ulid = new_ulid()
    secret = base64.urlsafe_b64encode(os.urandom(SECRET_BYTES)).rstrip(b"=").decode()
    return IssuedKey(key_id=f"key_{ulid}", api_key=f"tk_{ulid}_{secret}", secret_hash=hash_secret(secret))


def parse(api_key: str) -> PresentedKey | None:
    """Split a presented key; None if it does not have our shape."""
    match = _KEY.fullmatch(api_key)
    if match is None:
        return None
    return PresentedKey(key_id=f"key_{match.group(1)}", secret=match.group(2))


def looks_like_api_key(token: str) -> bool:
    """Whether a bearer token is meant as an API key (as opposed to an operator token)."""
    return token.startswith("tk_")


def verify(presented: PresentedKey, stored_hash: str) -> bool:
    """Compare the presented secret with the stored hash in constant time."""
    return hmac.compare_digest(hash_secret(presented.secret), stored_hash)


class KeyWiderThanCaller(PermissionDenied):
    """A user's key asked to create or revoke a key wider than itself."""

    default_reason = "KEY_WIDER_THAN_CALLER"


def normalize_scopes(scopes: Iterable[Scope]) -> frozenset[Scope]:
    """The scopes as stored: every key can read, so READ is always among them."""
    return frozenset(scopes) | {Scope.READ}


def scopes_text(scopes: Iterable[Scope]) -> str:
    """Stored form of a set of scopes, for example ``READ,TRADE``."""
    return ",".join(sorted(s.value for s in scopes))


def scopes_from_text(text: str | None) -> frozenset[Scope]:
    """Scopes from their stored form; None (a key made before scopes existed) is a trade key."""
    if text is None:
        return TRADE_SCOPES
    return frozenset(Scope(part) for part in text.split(",") if part)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a new key may do and when it stops."""

    scopes: frozenset[Scope]
    expire_ms: int | None


def grant(
    requested: frozenset[Scope],
    expire_ms: int | None,
    now_ms: int,
    *,
    caller_scopes: frozenset[Scope] | None = None,
    caller_expire_ms: int | None = None,
) -> Grant:
    """Decide a new key's scopes and expiry.

    ``caller_scopes`` is None for the admin: empty ``requested`` then means a trade key. For a
    user's key it is that key's scopes: empty means the same, and anything it lacks is refused. A
    caller key that expires passes its expiry on: the new key may not outlive it.
    """
    if expire_ms is not None and expire_ms <= now_ms:
        raise InvalidArgument("expire_time", "must be in the future")
    if caller_scopes is None:
        return Grant(normalize_scopes(requested) if requested else TRADE_SCOPES, expire_ms)
    scopes = normalize_scopes(requested) if requested else caller_scopes
    if not scopes <= caller_scopes:
        raise KeyWiderThanCaller(
            f"an API key may only grant scopes it has itself ({scopes_text(caller_scopes)})",
            metadata={"field": "scopes"},
        )
    if caller_expire_ms is not None:
        if expire_ms is None:
            expire_ms = caller_expire_ms
        elif expire_ms > caller_expire_ms:
            raise KeyWiderThanCaller(
                f"an API key may not create a key that outlives it (it expires at {iso_from_ms(caller_expire_ms)})",
                metadata={"field": "expire_time"},
            )
    return Grant(scopes, expire_ms)


def check_revoke(target: ApiKey, caller_scopes: frozenset[Scope]) -> None:
    """A user's key may revoke only keys whose scopes it has itself (a read key cannot stop a trade key)."""
    if not target.scopes <= caller_scopes:
        raise KeyWiderThanCaller(
            f"an API key may only revoke keys whose scopes it has itself ({scopes_text(caller_scopes)})",
            metadata={"field": "key_id"},
        )
