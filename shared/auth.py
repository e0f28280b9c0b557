"""Bearer-token helpers shared by the services' authorization code."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from shared.errors import Unauthenticated

AUTHORIZATION = "authorization"


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """Return the token of ``authorization: Bearer <token>``, or raise UNAUTHENTICATED."""
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer <token>'", reason="MALFORMED_CREDENTIALS")
            return token.strip()
    raise Unauthenticated("missing 'authorization: Bearer <token>' metadata", reason="MISSING_CREDENTIALS")


def same_secret(a: str, b: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Metadata that authenticates a call with ``token``."""
    return ((AUTHORIZATION, f"Bearer {token}"),)
