"""Input rules: every bad value is INVALID_ARGUMENT naming the proto field."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.user_service.domain import validation as v
from services.user_service.domain.model import UserStatus
from shared.errors import InvalidArgument


@pytest.mark.parametrize("name", ["ann", "a.b-c_d", "0day", "x" * 32, "abc123"])
def test_valid_usernames_pass_unchanged(name: str) -> None:
    assert v.username(name) == name


@pytest.mark.parametrize("name", ["", "ab", "x" * 33, "Ann", "_ann", ".ann", "-ann", "an n", "ann!", "änn", "ann\n"])
def test_bad_usernames_name_the_field(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        v.username(name)
    assert caught.value.field == "username"


@pytest.mark.parametrize(
    ("given", "stored"),
    [("ann@example.com", "ann@example.com"), ("Ann.Lee+x@Mail.Example.ORG", "ann.lee+x@mail.example.org")],
)
def test_emails_are_stored_lower_case(given: str, stored: str) -> None:
    assert v.email(given) == stored


@pytest.mark.parametrize(
    "address",
    [
        "",
        "ann",
        "ann@",
        "@example.com",
        "ann@example",
        "ann@@example.com",
        "ann @example.com",
        "ann@exa mple.com",
        "ann@-example.com",
        "ann@example.c0m",
        "a" * 65 + "@example.com",
        "ann@" + "a" * 250 + ".com",
    ],
)
def test_bad_emails_name_the_field(address: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        v.email(address)
    assert caught.value.field == "email"


@pytest.mark.parametrize("code", ["BTC", "USDT", "1INCH", "AB", "A" * 20])
def test_valid_assets(code: str) -> None:
    assert v.asset(code) == code


@pytest.mark.parametrize("code", ["", "B", "btc", "BT C", "BTC-USD", "A" * 21, "ÄBC"])
def test_bad_assets_name_the_given_field(code: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        v.asset(code, "debit_asset")
    assert caught.value.field == "debit_asset"


def test_user_ids_must_be_usr_and_a_ulid() -> None:
    assert v.user_id("usr_01J9Z3ABCDEFGHJKMNPQRSTVWX") == "usr_01J9Z3ABCDEFGHJKMNPQRSTVWX"
    for bad in [
        "",
        "usr_",
        "usr_01J9Z3ABCDEFGHJKMNPQRSTVW",
        "key_01J9Z3ABCDEFGHJKMNPQRSTVWX",
        "usr_01J9Z3ABCDEFGHJKMNPQRSTVWI",
    ]:
        with pytest.raises(InvalidArgument) as caught:
            v.user_id(bad)
        assert caught.value.field == "user_id"


@pytest.mark.parametrize(
    ("value", "max_len", "ok"),
    [
        ("r-1", 64, True),
        ("BTCUSDT:12345", 128, True),
        ("x" * 64, 64, True),
        ("x" * 65, 64, False),
        ("", 64, False),
        ("a b", 64, False),
        ("a\tb", 64, False),
        ("é", 64, False),
    ],
)
def test_idempotency_keys_are_visible_ascii_within_length(value: str, max_len: int, ok: bool) -> None:
    if ok:
        assert v.token(value, "request_id", max_len) == value
    else:
        with pytest.raises(InvalidArgument) as caught:
            v.token(value, "request_id", max_len)
        assert caught.value.field == "request_id"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1", Decimal("0.1")),
        ("100", Decimal(100)),
        ("0.00000001", Decimal("1E-8")),
        ("99999999999999999999.99999999", Decimal("99999999999999999999.99999999")),
        ("1.50000000", Decimal("1.5")),
        ("1.123456780", Decimal("1.12345678")),
    ],
)
def test_amounts_are_exact(text: str, expected: Decimal) -> None:
    assert v.amount(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "1e5",
        "1E5",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "1.123456789",
        "-1",
        "0",
        "0.00000000",
        "-0",
        "1,5",
        "0x10",
        "abc",
        "1.2.3",
        "123456789012345678901",
        "1" + "0" * 30,
    ],
)
def test_bad_amounts_name_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        v.amount(text, "debit_amount")
    assert caught.value.field == "debit_amount"


def test_fee_may_be_zero_or_empty_but_not_negative() -> None:
    assert v.fee("") == 0
    assert v.fee("0") == 0
    assert str(v.fee("-0")) == "0E-8", "negative zero is normalised away"
    assert v.fee("0.001") == Decimal("0.001")
    for bad in ["-0.1", "1e-3", "NaN"]:
        with pytest.raises(InvalidArgument) as caught:
            v.fee(bad)
        assert caught.value.field == "fee_amount"


def test_label_allows_empty_and_refuses_control_characters_and_long_text() -> None:
    assert v.label("") == ""
    assert v.label("trading bot") == "trading bot"
    for bad in ["x" * 65, "a\nb", "\x00"]:
        with pytest.raises(InvalidArgument) as caught:
            v.label(bad)
        assert caught.value.field == "label"


def test_page_size_defaults_and_caps() -> None:
    assert v.page_size(0) == 100
    assert v.page_size(1) == 1
    assert v.page_size(1000) == 1000
    assert v.page_size(5000) == 1000
    with pytest.raises(InvalidArgument) as caught:
        v.page_size(-1)
    assert caught.value.field == "page_size"


def test_status_must_be_set() -> None:
    assert v.status(UserStatus.SUSPENDED) is UserStatus.SUSPENDED
    with pytest.raises(InvalidArgument) as caught:
        v.status(None)
    assert caught.value.field == "status"
