"""The user service's records: users, API keys, balances, ledger entries, reservations, house accounts.

Pure data: no I/O, no gRPC, no SQLAlchemy. Money is ``Decimal`` with 8 decimal places.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from enum import Enum

from shared.errors import FailedPrecondition
from shared.money import CTX, MAX_INTEGER_DIGITS, ZERO, fmt

MAX_BALANCE = Decimal(10) ** MAX_INTEGER_DIGITS
"""Balances stay below this so that every stored figure fits DECIMAL(28, 8) (20 integer digits)."""


class UserStatus(Enum):
    """Whether a user may trade; only ACTIVE users may reserve funds."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    SUSPENDED = "SUSPENDED"


class EntryKind(Enum):
    """Why a ledger entry exists."""

    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    RESERVE = "RESERVE"
    RELEASE = "RELEASE"
    TRADE_DEBIT = "TRADE_DEBIT"
    TRADE_CREDIT = "TRADE_CREDIT"
    FEE = "FEE"


class HouseAccount(Enum):
    """The platform's own accounts in the ledger, beside the users' balances."""

    FEE_INCOME = "fee_income"
    """The platform's fees users paid on their trades, credited in the user's fee asset."""
    EXCHANGE_FEES = "exchange_fees"
    """What the exchange charged the platform's account for users' trades, debited (a cost: negative)."""


class HouseEntryKind(Enum):
    """Why a house entry exists."""

    TRADE_FEE = "TRADE_FEE"
    EXCHANGE_FEE = "EXCHANGE_FEE"


@dataclass(frozen=True, slots=True)
class User:
    """A customer of the brokerage."""

    user_id: str
    username: str
    email: str
    status: UserStatus
    create_ms: int
    update_ms: int
    last_login_ms: int | None = None


class Scope(Enum):
    """What an API key may do. TRADE includes READ: every key has READ."""

    READ = "READ"
    """Read orders, fills, trades, market data, balances, the ledger and the user's own keys; watch orders."""
    TRADE = "TRADE"
    """Place and cancel orders."""


TRADE_SCOPES = frozenset({Scope.READ, Scope.TRADE})
"""The scopes of a trade key, and of every key made before keys had scopes."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's stored record: the secret itself is never kept, only its SHA-256."""

    key_id: str
    user_id: str
    label: str
    secret_hash: str
    create_ms: int
    revoke_ms: int | None = None
    last_used_ms: int | None = None
    scopes: frozenset[Scope] = TRADE_SCOPES
    expire_ms: int | None = None
    """When the key stops authenticating; None: never."""

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked (revocation is final)."""
        return self.revoke_ms is not None

    def expired(self, now_ms: int) -> bool:
        """Whether the key's expiry has passed at ``now_ms``."""
        return self.expire_ms is not None and now_ms >= self.expire_ms


class InsufficientFunds(FailedPrecondition):
    """A balance would go negative."""

    default_reason = "INSUFFICIENT_FUNDS"


class BalanceLimitExceeded(FailedPrecondition):
    """A balance would exceed the largest supported figure."""

    default_reason = "BALANCE_LIMIT_EXCEEDED"


@dataclass(frozen=True, slots=True)
class Balance:
    """One asset's balance of one user; ``total`` is always ``available + locked``."""

    user_id: str
    asset: str
    available: Decimal = ZERO
    locked: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        """available + locked."""
        return self.available + self.locked

    def moved(self, available_delta: Decimal, locked_delta: Decimal) -> Balance:
        """Return the balance after a change, or raise if a side would go negative or out of range."""
        available = self.available + available_delta
        locked = self.locked + locked_delta
        if available < 0:
            raise InsufficientFunds(
                f"insufficient available {self.asset}: {fmt(self.available)} available, {fmt(-available_delta)} needed",
                metadata={"asset": self.asset, "available": fmt(self.available), "needed": fmt(-available_delta)},
            )
        if locked < 0:
            # Cannot happen while locked equals the sum of the reservations' remainders.
            raise InsufficientFunds(
                f"insufficient locked {self.asset}: {fmt(self.locked)} locked, {fmt(-locked_delta)} needed",
                metadata={"asset": self.asset, "locked": fmt(self.locked), "needed": fmt(-locked_delta)},
            )
        if available + locked >= MAX_BALANCE:
            raise BalanceLimitExceeded(
                f"{self.asset} balance would exceed the supported maximum of {MAX_INTEGER_DIGITS} integer digits",
                metadata={"asset": self.asset},
            )
        return replace(self, available=available, locked=locked)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One append-only change to one balance. ``entry_id`` is assigned by storage, increasing."""

    user_id: str
    asset: str
    kind: EntryKind
    available_delta: Decimal
    locked_delta: Decimal
    available_after: Decimal
    locked_after: Decimal
    reference: str
    create_ms: int
    order_id: str | None = None
    entry_id: int | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Funds held for one order: ``remaining = reserved - consumed - released`` is still locked."""

    order_id: str
    user_id: str
    asset: str
    reserved: Decimal
    consumed: Decimal = ZERO
    released: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        """What the reservation still holds."""
        return self.reserved - self.consumed - self.released


@dataclass(frozen=True, slots=True)
class HouseBalance:
    """One asset's balance of one house account. Signed: a cost account goes negative."""

    account: HouseAccount
    asset: str
    balance: Decimal = ZERO

    def moved(self, amount: Decimal) -> HouseBalance:
        """Return the balance after a signed change, or raise if it would leave the exact range."""
        balance = self.balance + amount
        if abs(balance) >= MAX_BALANCE:
            # Beyond this, Decimal arithmetic at 28 digits would start rounding the 8 places.
            raise BalanceLimitExceeded(
                f"house account {self.account.value} {self.asset} would exceed the supported maximum of "
                f"{MAX_INTEGER_DIGITS} integer digits",
                metadata={"account": self.account.value, "asset": self.asset},
            )
        return replace(self, balance=balance)


@dataclass(frozen=True, slots=True)
class HouseEntry:
    """One append-only change to one house balance, traceable to its trade and order."""

    account: HouseAccount
    asset: str
    kind: HouseEntryKind
    amount: Decimal
    balance_after: Decimal
    reference: str
    order_id: str
    create_ms: int
    entry_id: int | None = None


@dataclass(frozen=True, slots=True)
class AssetTotals:
    """What the ledger holds of one asset: the users' balances summed, and each house balance.

    Sums use ``shared.money.CTX`` (80 digits), so they stay exact however many balances they add.
    """

    asset: str
    users_available: Decimal = ZERO
    users_locked: Decimal = ZERO
    house: tuple[HouseBalance, ...] = ()

    @property
    def users_total(self) -> Decimal:
        """users_available + users_locked."""
        return CTX.add(self.users_available, self.users_locked)

    @property
    def house_total(self) -> Decimal:
        """The house balances summed."""
        total = ZERO
        for h in self.house:
            total = CTX.add(total, h.balance)
        return total
