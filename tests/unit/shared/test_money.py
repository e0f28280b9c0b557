from decimal import Decimal

import pytest

from shared.errors import InvalidArgument
from shared.money import fmt, is_multiple, parse_decimal, to_storage


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1", "0.10000000"),
        ("12", "12.00000000"),
        ("0.00000001", "0.00000001"),
        ("99999999999999999999.99999999", "99999999999999999999.99999999"),
        ("1.100000000", "1.10000000"),
    ],
)
def test_valid_amounts_parse_exactly(text, expected):
    assert fmt(parse_decimal(text, "amount")) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1e5",
        "NaN",
        "Infinity",
        "-inf",
        "1.123456789",
        "-1",
        "0",
        "0.0",
        "abc",
        "1,5",
        "0x10",
        "123456789012345678901",
        "1.2.3",
    ],
)
def test_invalid_amounts_name_the_field(text):
    with pytest.raises(InvalidArgument) as info:
        parse_decimal(text, "amount")
    assert info.value.field == "amount"


def test_zero_allowed_only_when_asked():
    assert parse_decimal("0", "fee_amount", allow_zero=True) == 0


def test_sums_are_exact_where_float_is_not():
    total = sum((parse_decimal(x, "amount") for x in ["0.1", "0.1", "0.1", "0.2"]), Decimal(0))
    assert fmt(total) == "0.50000000"


def test_storage_text_is_canonical_and_round_trips():
    value = Decimal("1234567890123456.78")
    assert to_storage(value) == "1234567890123456.78000000"
    assert Decimal(to_storage(value)) == value


def test_multiples_of_a_step():
    assert is_multiple(Decimal("0.00300"), Decimal("0.00100"))
    assert not is_multiple(Decimal("0.00150"), Decimal("0.00100"))
    assert is_multiple(Decimal("1.23"), Decimal("0"))
