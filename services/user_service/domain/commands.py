"""Validated money commands. ``parse`` turns wire strings into a command or raises InvalidArgument.

Each command knows its idempotency key (``scope``, ``key``) and a canonical ``fingerprint`` of its
content: the same key with another fingerprint is a conflict (ABORTED), never a second effect.
Amounts are normalised to 8 places first, so "0.1" and "0.10000000" are the same content.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Self

from services.user_service.domain import validation as v
from shared.errors import InvalidArgument
from shared.money import ZERO, fmt


@dataclass(frozen=True, slots=True)
class FundsMovement:
    """Money in or out of a user's available balance, once per ``request_id``."""

    user_id: str
    asset: str
    amount: Decimal
    request_id: str

    # Deposits and withdrawals share one key space, so one request_id names one movement.
    scope: ClassVar[str] = "funds"
    kind: ClassVar[str] = ""

    @classmethod
    def parse(cls, user_id: str, asset: str, amount: str, request_id: str) -> Self:
        """Validate wire values."""
        return cls(
            user_id=v.user_id(user_id),
            asset=v.asset(asset),
            amount=v.amount(amount),
            request_id=v.token(request_id, "request_id", v.MAX_REQUEST_ID),
        )

    @property
    def key(self) -> str:
        """The idempotency key."""
        return self.request_id

    def fingerprint(self) -> str:
        """Canonical content, compared when the key is seen again."""
        return f"{self.kind}|{self.user_id}|{self.asset}|{fmt(self.amount)}"


@dataclass(frozen=True, slots=True)
class Deposit(FundsMovement):
    """Credit ``amount`` of ``asset`` to a user's available balance."""

    kind: ClassVar[str] = "deposit"


@dataclass(frozen=True, slots=True)
class Withdraw(FundsMovement):
    """Debit ``amount`` of ``asset`` from a user's available balance."""

    kind: ClassVar[str] = "withdraw"


@dataclass(frozen=True, slots=True)
class Reserve:
    """Move ``amount`` from available to locked for one order."""

    order_id: str
    user_id: str
    asset: str
    amount: Decimal

    scope: ClassVar[str] = "reserve"

    @classmethod
    def parse(cls, order_id: str, user_id: str, asset: str, amount: str) -> Reserve:
        """Validate wire values."""
        return cls(
            order_id=v.token(order_id, "order_id", v.MAX_ORDER_ID),
            user_id=v.user_id(user_id),
            asset=v.asset(asset),
            amount=v.amount(amount),
        )

    @property
    def key(self) -> str:
        """The idempotency key."""
        return self.order_id

    def fingerprint(self) -> str:
        """Canonical content, compared when the key is seen again."""
        return f"reserve|{self.user_id}|{self.asset}|{fmt(self.amount)}"


@dataclass(frozen=True, slots=True)
class Release:
    """Return ``amount`` (None: everything remaining) of an order's reservation to available."""

    order_id: str
    release_id: str
    amount: Decimal | None

    scope: ClassVar[str] = "release"

    @classmethod
    def parse(cls, order_id: str, release_id: str, amount: str) -> Release:
        """Validate wire values; an empty amount means "everything still reserved"."""
        return cls(
            order_id=v.token(order_id, "order_id", v.MAX_ORDER_ID),
            release_id=v.token(release_id, "release_id", v.MAX_RELEASE_ID),
            amount=v.optional_amount(amount),
        )

    @property
    def key(self) -> str:
        """The idempotency key."""
        return self.release_id

    def fingerprint(self) -> str:
        """Canonical content, compared when the key is seen again."""
        return f"release|{self.order_id}|{'ALL' if self.amount is None else fmt(self.amount)}"


@dataclass(frozen=True, slots=True)
class Settle:
    """Book one trade of an order: debit from its reservation, credit, charge the fees.

    ``fee_asset``/``fee_amount`` is the platform's fee the user pays (in the debit or the credit
    asset), booked from the user to the house account ``fee_income``. ``exchange_fee_asset``/
    ``exchange_fee_amount`` is what the exchange charged the platform's account for the trade, in
    any asset: the platform's cost, booked to the house account ``exchange_fees`` alone, so its
    asset never makes a settlement fail.
    """

    trade_id: str
    order_id: str
    user_id: str
    debit_asset: str
    debit_amount: Decimal
    credit_asset: str
    credit_amount: Decimal
    fee_asset: str
    fee_amount: Decimal
    trade_ms: int | None = None
    exchange_fee_asset: str = ""
    exchange_fee_amount: Decimal = ZERO

    scope: ClassVar[str] = "trade"

    @classmethod
    def parse(
        cls,
        *,
        trade_id: str,
        order_id: str,
        user_id: str,
        debit_asset: str,
        debit_amount: str,
        credit_asset: str,
        credit_amount: str,
        fee_asset: str,
        fee_amount: str,
        trade_ms: int | None = None,
        exchange_fee_asset: str = "",
        exchange_fee_amount: str = "",
    ) -> Settle:
        """Validate wire values. An empty or zero fee amount means no fee; then its asset is ignored."""
        trade = v.token(trade_id, "trade_id", v.MAX_TRADE_ID)
        order = v.token(order_id, "order_id", v.MAX_ORDER_ID)
        user = v.user_id(user_id)
        debit = v.asset(debit_asset, "debit_asset")
        debit_value = v.amount(debit_amount, "debit_amount")
        credit = v.asset(credit_asset, "credit_asset")
        if credit == debit:
            raise InvalidArgument("credit_asset", "must differ from debit_asset")
        credit_value = v.amount(credit_amount, "credit_amount")
        fee_value = v.fee(fee_amount, "fee_amount")
        fee_code = ""
        if fee_value > 0:
            fee_code = v.asset(fee_asset, "fee_asset")
            if fee_code not in (debit, credit):
                raise InvalidArgument("fee_asset", "must be the debit or the credit asset of the trade")
        elif fee_asset:
            v.asset(fee_asset, "fee_asset")
        exchange_fee_value = v.fee(exchange_fee_amount, "exchange_fee_amount")
        exchange_fee_code = ""
        if exchange_fee_value > 0:
            exchange_fee_code = v.asset(exchange_fee_asset, "exchange_fee_asset")
        elif exchange_fee_asset:
            v.asset(exchange_fee_asset, "exchange_fee_asset")
        return cls(
            trade_id=trade,
            order_id=order,
            user_id=user,
            debit_asset=debit,
            debit_amount=debit_value,
            credit_asset=credit,
            credit_amount=credit_value,
            fee_asset=fee_code,
            fee_amount=fee_value,
            trade_ms=trade_ms,
            exchange_fee_asset=exchange_fee_code,
            exchange_fee_amount=exchange_fee_value,
        )

    @property
    def key(self) -> str:
        """The idempotency key."""
        return self.trade_id

    def fingerprint(self) -> str:
        """Canonical content; the trade time is informational and not part of it.

        A zero or empty exchange fee adds nothing to it, so idempotency records written without one
        still match their retries; a positive one is part of it.
        """
        content = (
            f"settle|{self.order_id}|{self.user_id}|{self.debit_asset}|{fmt(self.debit_amount)}|"
            f"{self.credit_asset}|{fmt(self.credit_amount)}|{self.fee_asset}|{fmt(self.fee_amount)}"
        )
        if self.exchange_fee_amount > 0:
            content += f"|{self.exchange_fee_asset}|{fmt(self.exchange_fee_amount)}"
        return content


MoneyCommand = Deposit | Withdraw | Reserve | Release | Settle
