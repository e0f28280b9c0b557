"""Exact decimal handling: parsing wire strings, formatting, and the limits the ledger supports.

Money never passes through ``float``. Wire values are decimal strings; storage is canonical text.
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation

from shared.errors import InvalidArgument

SCALE = 8
"""Decimal places supported for amounts, prices and quantities (Binance's 8)."""
MAX_INTEGER_DIGITS = 20
"""Integer digits supported: with ``SCALE`` places, DECIMAL(28, 8)."""
QUANTUM = Decimal(1).scaleb(-SCALE)
ZERO = Decimal(0)

# Enough precision that products of two supported values are exact.
CTX = Context(prec=80)
_PLAIN = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def parse_decimal(
    value: str,
    field: str,
    *,
    positive: bool = True,
    allow_zero: bool = False,
    scale: int = SCALE,
) -> Decimal:
    """Parse a decimal string from the wire, or raise InvalidArgument naming the field.

    Accepts plain notation only ("12.5", "0.00100000"): no exponents, NaN, infinities,
    thousands separators or whitespace. Rejects more than ``scale`` decimal places instead
    of rounding them away.
    """
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or text == "":
        raise InvalidArgument(field, "is required")
    if text != value or not _PLAIN.match(text):
        raise InvalidArgument(field, f"must be a plain decimal string such as '12.5', got {value!r:.40}")
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex already guarantees syntax
        raise InvalidArgument(field, "is not a decimal number") from None
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > scale and number != number.quantize(Decimal(1).scaleb(-scale), context=CTX):
        raise InvalidArgument(field, f"has more than {scale} decimal places")
    integer_digits = len(str(abs(number).to_integral_value(rounding=ROUND_DOWN)).lstrip("0"))
    if integer_digits > MAX_INTEGER_DIGITS:
        raise InvalidArgument(field, f"has more than {MAX_INTEGER_DIGITS} integer digits")
    if number < 0:
        raise InvalidArgument(field, "must be positive" if positive else "must not be negative")
    if positive and number == 0 and not allow_zero:
        raise InvalidArgument(field, "must be positive")
    return normalize(number)


def normalize(number: Decimal) -> Decimal:
    """Return ``number`` with exactly ``SCALE`` decimal places (exact; raises if it would round)."""
    quantized = number.quantize(QUANTUM, context=CTX)
    if quantized != number:
        raise ValueError(f"{number} has more than {SCALE} decimal places")
    return quantized


def fmt(number: Decimal | None) -> str:
    """Format for the wire: fixed point with ``SCALE`` places, for example '0.00100000'; None gives ''."""
    if number is None:
        return ""
    return f"{number.quantize(QUANTUM, context=CTX):.{SCALE}f}"


def to_storage(number: Decimal) -> str:
    """Canonical text for storage: fixed point, exactly ``SCALE`` places, never exponent notation."""
    return fmt(normalize(number))


def from_storage(text: str) -> Decimal:
    """Read a value written by ``to_storage``."""
    return Decimal(text)


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """Whether ``value`` is an exact multiple of ``step`` (a zero step means no constraint)."""
    if step == 0:
        return True
    return CTX.remainder(value, step) == 0


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` down to a multiple of ``step``."""
    if step == 0:
        return value
    return (CTX.divide_int(value, step)) * step


def mul(a: Decimal, b: Decimal) -> Decimal:
    """Exact product (80 digits of precision)."""
    return CTX.multiply(a, b)


def div_round(a: Decimal, b: Decimal, places: int = SCALE) -> Decimal:
    """Quotient rounded half-even to ``places`` decimals, for derived figures like average price."""
    return CTX.divide(a, b).quantize(Decimal(1).scaleb(-places), context=CTX)
