"""Input rules of the user service. Every check raises ``InvalidArgument`` naming the proto field.

Choices worth knowing:
- usernames follow the documented pattern literally: upper-case letters are rejected, not folded,
  so that the name a client sends is exactly the name it gets back;
- e-mail addresses are folded to lower case (the proto says "stored lower-case"), so
  "Ann@Example.com" and "ann@example.com" are the same address;
- asset codes must already be upper case ("BTC", not "btc");
- idempotency keys and order/trade ids are visible ASCII (no spaces or control characters).
"""

from __future__ import annotations

import re
from decimal import Decimal

from services.user_service.domain.model import HouseAccount, UserStatus
from shared.errors import InvalidArgument
from shared.money import parse_decimal
from shared.paging import page_limit

_ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
USER_ID = re.compile(rf"^usr_{_ULID}$")
KEY_ID = re.compile(rf"^key_{_ULID}$")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,31}$")
# Deliberately simple: one @, a local part without spaces, a dotted domain with a letter TLD.
EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
ASSET = re.compile(r"^[A-Z0-9]{2,20}$")
_VISIBLE = re.compile(r"^[!-~]+$")

MAX_LABEL = 64
MAX_REQUEST_ID = 64
MAX_ORDER_ID = 64
MAX_RELEASE_ID = 128
MAX_TRADE_ID = 128


def user_id(value: str, field: str = "user_id") -> str:
    """A user id such as ``usr_01J9...``."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not USER_ID.fullmatch(value):
        raise InvalidArgument(field, "must look like 'usr_' followed by 26 characters of Crockford base32")
    return value


def key_id(value: str, field: str = "key_id") -> str:
    """An API key id such as ``key_01J9...``."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not KEY_ID.fullmatch(value):
        raise InvalidArgument(field, "must look like 'key_' followed by 26 characters of Crockford base32")
    return value


def username(value: str, field: str = "username") -> str:
    """3 to 32 characters of [a-z0-9_.-], starting with a letter or digit."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not USERNAME.fullmatch(value):
        raise InvalidArgument(
            field,
            "must be 3 to 32 characters of lower-case letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
        )
    return value


def email(value: str, field: str = "email") -> str:
    """A plausible e-mail address, returned lower-case."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > 254 or not EMAIL.fullmatch(value):
        raise InvalidArgument(field, "must be an e-mail address such as 'ann@example.com'")
    return value.lower()


def asset(value: str, field: str = "asset") -> str:
    """An asset code: 2 to 20 characters of [A-Z0-9]."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not ASSET.fullmatch(value):
        raise InvalidArgument(field, "must be 2 to 20 characters of upper-case letters and digits, such as 'BTC'")
    return value


def token(value: str, field: str, max_len: int) -> str:
    """An idempotency key or external id: 1 to ``max_len`` visible ASCII characters."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_len:
        raise InvalidArgument(field, f"must be at most {max_len} characters")
    if not _VISIBLE.fullmatch(value):
        raise InvalidArgument(field, "must contain only visible ASCII characters (no spaces)")
    return value


def label(value: str, field: str = "label") -> str:
    """Free text up to 64 characters, without control characters; may be empty."""
    if len(value) > MAX_LABEL:
        raise InvalidArgument(field, f"must be at most {MAX_LABEL} characters")
    if any(ch < " " or ch == "\x7f" for ch in value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def amount(value: str, field: str = "amount") -> Decimal:
    """A positive decimal string with at most 8 decimal places."""
    return parse_decimal(value, field)


def optional_amount(value: str, field: str = "amount") -> Decimal | None:
    """Like ``amount``, but an empty string means "not given"."""
    return None if value == "" else parse_decimal(value, field)


def fee(value: str, field: str = "fee_amount") -> Decimal:
    """Zero or a positive decimal string; empty means zero."""
    if value == "":
        return Decimal("0E-8")
    return parse_decimal(value, field, positive=False, allow_zero=True) + Decimal("0E-8")


def status(value: UserStatus | None, field: str = "status") -> UserStatus:
    """A status a user can be set to: not UNSPECIFIED (None) nor an unknown number."""
    if value is None:
        raise InvalidArgument(field, "must be USER_STATUS_ACTIVE, USER_STATUS_INACTIVE or USER_STATUS_SUSPENDED")
    return value


def house_account(value: str, field: str = "account") -> HouseAccount | None:
    """A house account name ("fee_income", "exchange_fees"); empty means "any"."""
    if not value:
        return None
    try:
        return HouseAccount(value)
    except ValueError:
        names = ", ".join(f"'{a.value}'" for a in HouseAccount)
        raise InvalidArgument(field, f"must be one of {names}") from None


def page_size(value: int, field: str = "page_size") -> int:
    """1 to 1000; 0 means 100 and larger values are lowered to 1000 (AIP-158)."""
    return page_limit(value, field)
