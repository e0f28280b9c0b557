"""Throttling of failed authentications, per client address and per API key. Pure: the time is passed in.

A client address (``client_host``: the peer without its port, so reconnecting does not start afresh)
that fails ``slow_after`` times within ``window_ms`` has its next failures answered more slowly
(``first_delay_ms``, doubling, at most ``max_delay_ms``); at ``ban_after`` failures it is refused
for ``ban_ms``, whatever it presents (the caller answers RESOURCE_EXHAUSTED with the time left).

An existing key that fails ``ban_after`` times within the window, from any number of addresses (a
distributed guess at one key), becomes "hot" for ``ban_ms``: every failure against it is answered
after ``max_delay_ms`` and refuses the failing address at once. The key's owner, presenting the
right secret, is not failing and is not affected. Only keys that exist are counted per key: an
unknown key id is a random string that would never repeat, and counting it would only let a guesser
fill the memory.

Counting starts at an address's or key's first failure and covers ``window_ms`` from there; both
tables are bounded (``max_tracked``, the least recently failing dropped first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """When failures slow answers down and when they refuse an address."""

    slow_after: int = 5
    ban_after: int = 20
    window_ms: int = 60_000
    ban_ms: int = 300_000
    first_delay_ms: int = 50
    max_delay_ms: int = 1_000
    max_tracked: int = 100_000

    def __post_init__(self) -> None:
        if not 0 < self.slow_after <= self.ban_after:
            raise ValueError("0 < slow_after <= ban_after is required")
        if self.window_ms <= 0 or self.ban_ms <= 0:
            raise ValueError("window_ms and ban_ms must be positive")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a failed attempt leads to.

    ``delay_ms``: hold the answer this long. ``ban_started``: this failure started the address's
    refusal, which lasts until ``banned_until_ms``; ``trigger`` says why ("address": its own
    failures, "key": a failure against a hot key). ``failures``: the address's failures in its window.
    """

    delay_ms: int
    failures: int
    ban_started: bool = False
    banned_until_ms: int = 0
    trigger: str = ""


@dataclass(slots=True)
class _Count:
    start_ms: int
    failures: int = 0
    until_ms: int = 0  # the address is refused, or the key hot, until then (0: not)


def client_host(peer: str) -> str:
    """The client's address without its port: ``ipv4:203.0.113.7:51234`` -> ``203.0.113.7``.

    IPv6 peers (``ipv6:[::1]:51234``, percent-encoded or not) give the bare address; anything else
    (a Unix socket, an empty string) is returned as it is.
    """
    text = unquote(peer)
    scheme, sep, rest = text.partition(":")
    if not sep:
        return text
    if scheme == "ipv4":
        return rest.rsplit(":", 1)[0]
    if scheme == "ipv6":
        if rest.startswith("["):
            return rest[1:].split("]", 1)[0]
        return rest
    return text


class Throttle:
    """Counts failed authentications by client address and by key, and decides delays and refusals."""

    def __init__(self, policy: ThrottlePolicy | None = None):
        self.policy = policy or ThrottlePolicy()
        self._hosts: OrderedDict[str, _Count] = OrderedDict()
        self._keys: OrderedDict[str, _Count] = OrderedDict()

    def refused_for_ms(self, host: str, now_ms: int) -> int:
        """How much longer ``host`` is refused (0: it is not)."""
        if not host:
            return 0
        count = self._hosts.get(host)
        if count is None or count.until_ms <= now_ms:
            return 0
        return count.until_ms - now_ms

    def failed(self, host: str, key_id: str, now_ms: int) -> Verdict:
        """Count one failed authentication from ``host`` (may be empty) against ``key_id`` (an existing key, or '')."""
        policy = self.policy
        key_hot = False
        key_failures = 0
        if key_id:
            key = self._count(self._keys, key_id, now_ms)
            key.failures += 1
            key_failures = key.failures
            if key.until_ms <= now_ms and key.failures >= policy.ban_after:
                key.until_ms = now_ms + policy.ban_ms
            key_hot = key.until_ms > now_ms
        host_failures = 0
        if host:
            count = self._count(self._hosts, host, now_ms)
            count.failures += 1
            host_failures = count.failures
            if count.until_ms <= now_ms and (count.failures >= policy.ban_after or key_hot):
                count.until_ms = now_ms + policy.ban_ms
                trigger = "address" if count.failures >= policy.ban_after else "key"
                return Verdict(self._delay(host_failures, key_hot), host_failures, True, count.until_ms, trigger)
        return Verdict(self._delay(max(host_failures, key_failures), key_hot), host_failures)

    def _delay(self, failures: int, key_hot: bool) -> int:
        policy = self.policy
        if key_hot:
            return policy.max_delay_ms
        if failures <= policy.slow_after:
            return 0
        return min(policy.max_delay_ms, policy.first_delay_ms << min(failures - policy.slow_after - 1, 30))

    def _count(self, table: OrderedDict[str, _Count], name: str, now_ms: int) -> _Count:
        """The count of ``name``, started afresh when its window and any refusal are over."""
        count = table.get(name)
        if count is None or (now_ms - count.start_ms >= self.policy.window_ms and count.until_ms <= now_ms):
            count = _Count(start_ms=now_ms)
            table[name] = count
        table.move_to_end(name)
        while len(table) > self.policy.max_tracked:
            table.popitem(last=False)
        return count
