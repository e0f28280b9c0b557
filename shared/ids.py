"""Identifiers that cannot collide: a millisecond timestamp plus 80 random bits (ULID layout).

A timestamp alone collides as soon as two orders arrive in the same millisecond, so 80 bits
come from ``os.urandom``; within one process, ids made in the same millisecond are strictly
increasing, so they also sort in creation order.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_ulid() -> str:
    """Return a 26-character, lexicographically sortable, collision-free identifier."""
    global _last_ms, _last_rand
    with _lock:
        now = time.time_ns() // 1_000_000
        if now <= _last_ms:
            # Same (or earlier, if the clock stepped back) millisecond: increment the random part
            # so that ids keep increasing and stay unique.
            now = _last_ms
            rand = _last_rand + 1
            if rand >= 1 << 80:
                now += 1
                rand = int.from_bytes(os.urandom(10), "big")
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = now, rand
    return _encode(now, 10) + _encode(rand, 16)


def new_id(prefix: str) -> str:
    """Return ``<prefix>_<ulid>``, for example ``ord_01J9Z3...``; at most 30 characters for 3-letter prefixes."""
    return f"{prefix}_{new_ulid()}"


def first_id_at(prefix: str, at_ms: int) -> str:
    """The smallest ``new_id(prefix)`` made at ``at_ms`` or later sorts at or after this one.

    Ids sort in creation order, so a range of them (``first_id_at(p, a) < id < first_id_at(p, b)``)
    is a range of creation times; a process's clock bounds the ids it made before a moment.
    """
    return f"{prefix}_{_encode(max(0, at_ms), 10)}{'0' * 16}"


def id_time_ms(identifier: str) -> int:
    """The creation time (ms) of a ``new_id``/``new_ulid`` identifier."""
    value = 0
    for char in identifier.rsplit("_", 1)[-1][:10]:
        value = value * 32 + _ALPHABET.index(char)
    return value
