"""Page tokens: one opaque format for every list of every service (AIP-158).

A token is URL-safe base64 of JSON with the position (the last item's key on the page, a string or an
integer) and a short hash of the token's scope. The scope is whatever must match when the token comes
back: a list's name, or its name and filters, so that a token reused with another list or other filters
is refused instead of silently returning a wrong page. Clients never read a token; only this module does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list and the token of the next page ('' on the last page)."""

    items: list[T]
    next_page_token: str


def page_limit(value: int, field: str = "page_size") -> int:
    """The number of items a page may hold: 0 means 100, above 1000 is lowered to 1000 (AIP-158).

    A negative size is INVALID_ARGUMENT naming ``field``.
    """
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    return min(value, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE


def encode_page_token(position: str | int, scope: str) -> str:
    """Return an opaque page token for ``position`` in the list ``scope`` names."""
    raw = json.dumps({"p": position, "f": _digest(scope)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, scope: str) -> str | int:
    """Return the position in ``token``; INVALID_ARGUMENT if it is malformed or was made for another scope."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position = data["p"]
        digest = data["f"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token", "is not a page token of this list") from None
    if digest != _digest(scope) or not isinstance(position, str | int):
        raise InvalidArgument(
            "page_token", "was made for another list or other filters; start again without a page token"
        )
    return position


def _digest(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]
