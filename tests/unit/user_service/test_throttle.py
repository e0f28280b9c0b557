"""Throttling failed authentications: slower answers, then a refused address; per key for distributed guesses."""

from __future__ import annotations

import pytest

from services.user_service.domain.throttle import Throttle, ThrottlePolicy, client_host

POLICY = ThrottlePolicy(
    slow_after=3, ban_after=6, window_ms=60_000, ban_ms=300_000, first_delay_ms=50, max_delay_ms=400
)
KEY = "key_01J9Z3ABCDEFGHJKMNPQRSTVWX"


def test_answers_slow_down_after_a_few_failures_then_the_address_is_refused_once() -> None:
    throttle = Throttle(POLICY)
    verdicts = [throttle.failed("203.0.113.7", "", 1_000 + i) for i in range(6)]
    assert [v.delay_ms for v in verdicts] == [0, 0, 0, 50, 100, 200]
    assert [v.ban_started for v in verdicts] == [False] * 5 + [True]
    assert (verdicts[-1].trigger, verdicts[-1].failures, verdicts[-1].banned_until_ms) == ("address", 6, 301_005)
    assert throttle.refused_for_ms("203.0.113.7", 1_006) == 299_999


def test_the_delay_never_exceeds_the_maximum() -> None:
    throttle = Throttle(ThrottlePolicy(slow_after=1, ban_after=50, first_delay_ms=50, max_delay_ms=400))
    delays = [throttle.failed("198.51.100.1", "", i).delay_ms for i in range(10)]
    assert delays == [0, 50, 100, 200, 400, 400, 400, 400, 400, 400]


def test_other_addresses_are_not_refused_and_a_refusal_ends() -> None:
    throttle = Throttle(POLICY)
    for i in range(6):
        throttle.failed("203.0.113.7", "", i)
    assert throttle.refused_for_ms("198.51.100.1", 10) == 0
    assert throttle.refused_for_ms("203.0.113.7", 300_004) == 1
    assert throttle.refused_for_ms("203.0.113.7", 300_005) == 0
    # Counting starts afresh once the refusal is over.
    assert throttle.failed("203.0.113.7", "", 300_006).failures == 1


def test_failures_spread_beyond_the_window_never_refuse() -> None:
    throttle = Throttle(POLICY)
    for i in range(20):
        verdict = throttle.failed("203.0.113.7", "", i * 30_000)
        assert not verdict.ban_started
    assert throttle.refused_for_ms("203.0.113.7", 20 * 30_000) == 0


def test_a_distributed_guess_at_one_key_makes_it_hot_and_refuses_each_failing_address_at_once() -> None:
    throttle = Throttle(POLICY)
    for i in range(6):  # six addresses, one failure each: none reaches its own limit
        verdict = throttle.failed(f"203.0.113.{i}", KEY, 1_000 + i)
    assert verdict.ban_started and verdict.trigger == "key" and verdict.delay_ms == POLICY.max_delay_ms
    newcomer = throttle.failed("192.0.2.99", KEY, 2_000)
    assert newcomer.ban_started and newcomer.trigger == "key"
    assert throttle.refused_for_ms("192.0.2.99", 2_001) > 0
    # An address that fails against another key is not affected by the hot key.
    assert not throttle.failed("192.0.2.100", "key_01J9Z3ABCDEFGHJKMNPQRSTVWY", 2_002).ban_started


def test_unknown_keys_are_not_counted_per_key() -> None:
    throttle = Throttle(POLICY)
    for i in range(50):
        assert not throttle.failed(f"10.0.{i}.1", "", i).ban_started


def test_the_tables_are_bounded() -> None:
    throttle = Throttle(ThrottlePolicy(max_tracked=100))
    for i in range(1_000):
        throttle.failed(f"10.0.{i // 250}.{i % 250}", f"key_{i}", i)
    assert len(throttle._hosts) == 100 and len(throttle._keys) == 100


def test_a_policy_that_refuses_before_slowing_is_refused() -> None:
    with pytest.raises(ValueError, match="slow_after"):
        ThrottlePolicy(slow_after=10, ban_after=5)


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:203.0.113.7:51234", "203.0.113.7"),
        ("ipv6:[::1]:51234", "::1"),
        ("ipv6:%5B2001:db8::1%5D:443", "2001:db8::1"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
        ("", ""),
    ],
)
def test_the_client_address_drops_the_port(peer: str, host: str) -> None:
    assert client_host(peer) == host
