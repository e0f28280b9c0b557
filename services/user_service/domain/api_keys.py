"""API key format and hashing.

A key is ``tk_<ULID>_<secret>``: the ULID names the stored record (``key_<ULID>``), the secret is
32 random bytes in URL-safe base64 without padding. Only SHA-256 of the secret is stored; that is
enough for 256-bit random secrets (no dictionary to attack) and keeps lookup by id cheap. The
log masker recognises the ``tk_`` shape, so a key pasted into a message is hidden anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from shared.ids import new_ulid

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
