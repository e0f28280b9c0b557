"""The user service's use cases behind one async facade, over the ``Transactions`` port.

Changes an audit trail keeps (users created and their status changes, keys created and revoked,
deposits and withdrawals) write their audit event in their own transaction: a change is never
without its record. ``actor`` says who made the change (and, for a user's key, bounds what it may do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.user_service.domain import api_keys, audit
from services.user_service.domain import validation as v
from services.user_service.domain.audit import SYSTEM, Actor, AuditEvent, AuditKind
from services.user_service.domain.commands import Deposit, Release, Reserve, Settle, Withdraw
from services.user_service.domain.model import (
    ApiKey,
    AssetTotals,
    Balance,
    HouseEntry,
    LedgerEntry,
    Reservation,
    Scope,
    User,
    UserStatus,
)
from services.user_service.domain.results import (
    FundsResult,
    ReleaseResult,
    ReserveResult,
    SettleReleaseResult,
    SettleResult,
)
from services.user_service.service import accounts, ledger
from services.user_service.service.assets import ListedAssets
from services.user_service.service.ports import Repository, Transactions
from shared.errors import InvalidArgument
from shared.ids import new_id
from shared.money import fmt
from shared.paging import Page, decode_page_token, encode_page_token
from shared.timeutil import now_ms

DEFAULT_LOGIN_TOUCH_INTERVAL_MS = 1000
"""Successful authentications are recorded at most this often per key, to keep reads off the writer."""


def _entry_cursor(page_token: str, kind: str) -> int | None:
    if not page_token:
        return None
    position = decode_page_token(page_token, kind)
    if not isinstance(position, int):
        raise InvalidArgument("page_token", "is not a page token of this list")
    return position


def _entry_token(entry_id: int | None, kind: str) -> str:
    """The token of the page after entry ``entry_id`` (storage gives every listed entry its id)."""
    if entry_id is None:
        raise ValueError("a listed entry has no id")
    return encode_page_token(entry_id, kind)


class UserApp:
    """Users, API keys and the balance ledger (users' balances and house accounts)."""

    def __init__(
        self,
        transactions: Transactions,
        assets: ListedAssets,
        *,
        clock: Callable[[], int] = now_ms,
        login_touch_interval_ms: int = DEFAULT_LOGIN_TOUCH_INTERVAL_MS,
    ):
        self._tx = transactions
        self._assets = assets
        self._clock = clock
        self._touch_interval = login_touch_interval_ms

    # --- users --------------------------------------------------------------------------------

    async def create_user(self, username: str, email: str, actor: Actor = SYSTEM) -> User:
        """Create an ACTIVE user with a unique username and e-mail."""
        now = self._clock()
        user = User(
            user_id=new_id("usr"),
            username=v.username(username),
            email=v.email(email),
            status=UserStatus.ACTIVE,
            create_ms=now,
            update_ms=now,
        )

        def run(repo: Repository) -> User:
            created = accounts.create_user(repo, user)
            repo.append_audit([audit.user_created(created, actor, now)], now)
            return created

        return await self._tx.write(run)

    async def get_user(self, user_id: str) -> User:
        """Return one user."""
        v.user_id(user_id)
        return await self._tx.read(lambda repo: ledger.require_user(repo, user_id))

    async def list_users(self, status: UserStatus | None, page_size: int, page_token: str) -> Page[User]:
        """List users oldest first, optionally only those with ``status``."""
        limit = v.page_size(page_size)
        after = v.user_id(str(decode_page_token(page_token, "u")), "page_token") if page_token else None
        users = await self._tx.read(lambda repo: repo.list_users(status, after, limit + 1))
        if len(users) > limit:
            return Page(users[:limit], encode_page_token(users[limit - 1].user_id, "u"))
        return Page(users, "")

    async def update_user_status(self, user_id: str, status: UserStatus | None, actor: Actor = SYSTEM) -> User:
        """Set a user's status to ACTIVE, INACTIVE or SUSPENDED."""
        v.user_id(user_id)
        new_status = v.status(status)
        now = self._clock()

        def run(repo: Repository) -> User:
            before = ledger.require_user(repo, user_id).status
            user = accounts.update_user_status(repo, user_id, new_status, now)
            if user.status is not before:
                repo.append_audit([audit.status_changed(user_id, before, user.status, actor, now)], now)
            return user

        return await self._tx.write(run)

    # --- API keys -----------------------------------------------------------------------------

    async def create_api_key(
        self,
        user_id: str,
        label: str,
        scopes: frozenset[Scope] = frozenset(),
        expire_ms: int | None = None,
        actor: Actor = SYSTEM,
    ) -> tuple[str, ApiKey]:
        """Make a key for a user; return the secret key (shown once) and its public record.

        Empty ``scopes`` make a trade key, or, for a user's key (``actor``), a key with its scopes;
        a user's key may not grant more than it has nor outlive itself (``api_keys.grant``).
        """
        v.user_id(user_id)
        v.label(label)
        now = self._clock()
        if actor.is_user:
            grant = api_keys.grant(scopes, expire_ms, now, caller_scopes=actor.scopes, caller_expire_ms=actor.expire_ms)
        else:
            grant = api_keys.grant(scopes, expire_ms, now)
        issued = api_keys.issue()

        def run(repo: Repository) -> ApiKey:
            key = accounts.create_api_key(repo, user_id, label, issued, now, grant=grant)
            repo.append_audit([audit.key_created(key, actor, now)], now)
            return key

        key = await self._tx.write(run)
        return issued.api_key, key

    async def list_api_keys(self, user_id: str) -> list[ApiKey]:
        """A user's keys, revoked ones included, oldest first."""
        v.user_id(user_id)

        def run(repo: Repository) -> list[ApiKey]:
            ledger.require_user(repo, user_id)
            return repo.list_api_keys(user_id)

        return await self._tx.read(run)

    async def revoke_api_key(self, key_id: str, actor: Actor = SYSTEM) -> ApiKey:
        """Revoke a key at once; revoking twice is not an error (nor recorded twice)."""
        v.key_id(key_id)
        now = self._clock()

        def run(repo: Repository) -> ApiKey:
            before = repo.get_api_key(key_id)
            key = accounts.revoke_api_key(repo, key_id, now, actor)
            if before is not None and not before.revoked:
                repo.append_audit([audit.key_revoked(key, actor, now)], now)
            return key

        return await self._tx.write(run)

    async def authenticate(self, api_key: str) -> tuple[ApiKey, User]:
        """Resolve an API key to its user and record the login; raise AuthenticationFailed if invalid or expired."""
        if api_keys.parse(api_key) is None:
            raise accounts.AuthenticationFailed("malformed API key")
        now = self._clock()
        key, user = await self._tx.read(lambda repo: accounts.check_api_key(repo, api_key, now))
        if key.last_used_ms is None or now - key.last_used_ms >= self._touch_interval:
            user = await self._tx.write(lambda repo: accounts.touch_login(repo, key.key_id, user.user_id, now))
        return key, user

    # --- balances and the ledger ---------------------------------------------------------------

    async def deposit(self, command: Deposit, actor: Actor = SYSTEM) -> FundsResult:
        """Credit available, once per request_id, in an asset the exchange lists."""
        await self._assets.require(command.asset)
        now = self._clock()
        return await self._tx.write(lambda repo: self._audited_funds(repo, command, ledger.deposit, actor, now))

    async def withdraw(self, command: Withdraw, actor: Actor = SYSTEM) -> FundsResult:
        """Debit available, once per request_id, in an asset the exchange lists."""
        await self._assets.require(command.asset)
        now = self._clock()
        return await self._tx.write(lambda repo: self._audited_funds(repo, command, ledger.withdraw, actor, now))

    @staticmethod
    def _audited_funds(
        repo: Repository,
        command: Deposit | Withdraw,
        move: Callable[[Repository, Any, int], FundsResult],
        actor: Actor,
        now: int,
    ) -> FundsResult:
        """Move the funds and record it; a replay of the same request_id moves nothing and records nothing."""
        replay = repo.get_idempotency(command.scope, command.key) is not None
        result = move(repo, command, now)
        if not replay:
            kind = AuditKind.DEPOSIT if isinstance(command, Deposit) else AuditKind.WITHDRAWAL
            event = audit.funds_moved(
                kind,
                actor,
                now,
                user_id=command.user_id,
                asset=command.asset,
                amount=fmt(command.amount),
                request_id=command.request_id,
            )
            repo.append_audit([event], now)
        return result

    async def reserve(self, command: Reserve) -> ReserveResult:
        """Lock funds for an order, once per order_id."""
        now = self._clock()
        return await self._tx.write(lambda repo: ledger.reserve(repo, command, now))

    async def list_reservations(self, after: str, before: str, *, open_only: bool, page_size: int) -> list[Reservation]:
        """Reservations with ``after < order_id < before`` ("" for no bound), in order id order."""
        limit = v.page_size(page_size)
        upper = before or "~"  # above every id character (ids are ASCII letters, digits and "_")

        def run(repo: Repository) -> list[Reservation]:
            found: list[Reservation] = []
            cursor = after
            while len(found) < limit:
                chunk = repo.list_reservations(cursor, upper, limit)
                found.extend(r for r in chunk if not open_only or r.remaining > 0)
                if len(chunk) < limit:
                    break
                cursor = chunk[-1].order_id
            return found[:limit]

        return await self._tx.read(run)

    async def release(self, command: Release) -> ReleaseResult:
        """Return reserved funds, once per release_id."""
        now = self._clock()
        return await self._tx.write(lambda repo: ledger.release(repo, command, now))

    async def settle(self, command: Settle) -> SettleResult:
        """Book a trade, once per trade_id."""
        now = self._clock()
        return await self._tx.write(lambda repo: ledger.settle(repo, command, now))

    async def settle_and_release(self, command: Settle, release: Release) -> SettleReleaseResult:
        """Book a trade (once per trade_id), then release the rest of its order (once per release_id), atomically."""
        now = self._clock()
        return await self._tx.write(lambda repo: ledger.settle_and_release(repo, command, release, now))

    async def get_balances(self, user_id: str) -> list[Balance]:
        """Every balance of a user, sorted by asset."""
        v.user_id(user_id)

        def run(repo: Repository) -> list[Balance]:
            ledger.require_user(repo, user_id)
            return sorted(repo.list_balances(user_id), key=lambda b: b.asset)

        return await self._tx.read(run)

    async def list_entries(self, user_id: str, asset: str, page_size: int, page_token: str) -> Page[LedgerEntry]:
        """A user's ledger entries, newest first, optionally for one asset."""
        v.user_id(user_id)
        asset_filter = v.asset(asset) if asset else None
        limit = v.page_size(page_size)
        before = _entry_cursor(page_token, "e")

        def run(repo: Repository) -> list[LedgerEntry]:
            ledger.require_user(repo, user_id)
            return repo.list_entries(user_id, asset_filter, before, limit + 1)

        entries = await self._tx.read(run)
        if len(entries) > limit:
            last = entries[limit - 1]
            return Page(entries[:limit], _entry_token(last.entry_id, "e"))
        return Page(entries, "")

    # --- house accounts ------------------------------------------------------------------------

    async def ledger_totals(self) -> list[AssetTotals]:
        """Per asset, the users' balances summed and the house balances, from one snapshot."""
        return await self._tx.read(ledger.ledger_totals)

    async def list_house_entries(self, account: str, asset: str, page_size: int, page_token: str) -> Page[HouseEntry]:
        """The house accounts' entries, newest first, optionally for one account and one asset."""
        account_filter = v.house_account(account)
        asset_filter = v.asset(asset) if asset else None
        limit = v.page_size(page_size)
        before = _entry_cursor(page_token, "h")
        entries = await self._tx.read(
            lambda repo: repo.list_house_entries(account_filter, asset_filter, before, limit + 1)
        )
        if len(entries) > limit:
            last = entries[limit - 1]
            return Page(entries[:limit], _entry_token(last.entry_id, "h"))
        return Page(entries, "")

    # --- the audit trail -----------------------------------------------------------------------

    async def list_audit_events(
        self,
        user_id: str,
        kind: AuditKind | None,
        *,
        start_ms: int | None,
        end_ms: int | None,
        page_size: int,
        page_token: str,
    ) -> Page[AuditEvent]:
        """The audit trail, most recently recorded first, by user, kind and event time [start, end)."""
        user_filter = v.user_id(user_id) if user_id else None
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise InvalidArgument("end_time", "must be after start_time")
        limit = v.page_size(page_size)
        before = _entry_cursor(page_token, "a")
        events = await self._tx.read(
            lambda repo: repo.list_audit(
                user_id=user_filter, kind=kind, start_ms=start_ms, end_ms=end_ms, before_id=before, limit=limit + 1
            )
        )
        if len(events) > limit:
            return Page(events[:limit], _entry_token(events[limit - 1].event_id, "a"))
        return Page(events, "")
