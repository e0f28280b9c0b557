"""Property test: random sequences of money operations keep the ledger invariants.

Runs the real use cases over the real repository, on a SQLite file and on PostgreSQL. Operations include ones
that must fail (insufficient funds, suspended users, unknown orders, reused keys with other
content) and repeats of idempotency keys. After every step:
- a refused operation changed nothing at all;
- a replayed key changed nothing and returned the first result;
- for every (user, asset): available >= 0, locked >= 0, available == sum of available deltas,
  locked == sum of locked deltas, each entry's *_after equals the running sum, and locked equals
  the sum of what that user's reservations in that asset still hold;
- every reservation has 0 <= consumed, released and remaining;
- double entry: per asset, sum(users' available + locked) + sum(house balances) == deposits -
  withdrawals + trade credits - trade debits - exchange fees, and each house balance equals the sum
  of its entries (each entry's balance_after the running sum).
Trades carry random exchange fees in random assets, BNB (which no user holds) included.
Some steps run several operations in ONE group-commit transaction (a savepoint each), so a
failing operation must not disturb the others committed with it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import text

from services.user_service.adapters.transactions import SqlTransactions, migrate
from services.user_service.domain.commands import Deposit, Release, Reserve, Settle, Withdraw
from services.user_service.domain.model import User, UserStatus
from services.user_service.domain.results import decode
from services.user_service.service import accounts, ledger
from shared.db import create_db_engine
from shared.errors import Aborted, DomainError
from tests.conftest import PostgresServer

USERS = ["usr_01J9Z3ABCDEFGHJKMNPQRSTVW0", "usr_01J9Z3ABCDEFGHJKMNPQRSTVW1"]
UNKNOWN_USER = "usr_01J9Z3ABCDEFGHJKMNPQRSTVW9"
ASSETS = ["USDT", "BTC"]
EXCHANGE_FEE_ASSETS = ["none", "BNB", "BNB", "USDT", "BTC"]
NOW = 1_700_000_000_000

amounts = st.one_of(
    st.sampled_from(["0.00000001", "0.1", "1", "2.5", "10", "33.33333333", "100"]),
    st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(200), places=8).map(lambda d: f"{d:f}"),
)
keys = st.sampled_from([f"k{i}" for i in range(10)])
orders = st.sampled_from([f"ord-{i}" for i in range(5)])
users = st.sampled_from(USERS)
known_or_unknown_users = st.sampled_from([*USERS, *USERS, UNKNOWN_USER])
assets = st.sampled_from(ASSETS)
fees = st.tuples(st.sampled_from(["none", "debit", "credit"]), st.sampled_from(["0.00000001", "0.001", "0.5"]))
exchange_fees = st.tuples(
    st.sampled_from(EXCHANGE_FEE_ASSETS),
    st.one_of(st.sampled_from(["0", "0.00000001", "0.0001", "1.5"]), amounts),
)


def _snapshot(tx: SqlTransactions) -> dict[str, list[tuple[Any, ...]]]:
    tables = [
        "users",
        "balances",
        "ledger_entries",
        "reservations",
        "idempotency_keys",
        "house_balances",
        "house_entries",
    ]
    return tx.read_sync(
        lambda repo: {
            t: [tuple(r) for r in repo.conn.execute(text(f"SELECT * FROM {t} ORDER BY 1, 2"))] for t in tables
        }
    )


def _double_entry(repo: Any, exchange_fees: dict[str, Decimal]) -> None:
    """Per asset: users + house == deposits - withdrawals + credits - debits - exchange fees; house == its entries.

    ``exchange_fees`` is what the trades booked so far were charged, counted by the test itself.
    """
    conn = repo.conn
    flows: dict[str, Decimal] = defaultdict(Decimal)
    for asset, fee in exchange_fees.items():
        flows[asset] -= fee
    charged: dict[str, Decimal] = defaultdict(Decimal)
    for asset, kind, d_avail, d_locked in conn.execute(
        text("SELECT asset, kind, available_delta, locked_delta FROM ledger_entries")
    ):
        if kind in ("DEPOSIT", "WITHDRAWAL", "TRADE_CREDIT", "TRADE_DEBIT"):
            flows[asset] += Decimal(d_avail) + Decimal(d_locked)
    house_running: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for account, asset, kind, amount, after in conn.execute(
        text("SELECT account, asset, kind, amount, balance_after FROM house_entries ORDER BY entry_id")
    ):
        house_running[(account, asset)] += Decimal(amount)
        assert house_running[(account, asset)] == Decimal(after), "house balance_after is the running sum"
        assert (account, kind) in (("fee_income", "TRADE_FEE"), ("exchange_fees", "EXCHANGE_FEE"))
        assert (Decimal(amount) > 0) == (account == "fee_income"), "income is credited, the exchange's fees debited"
        if kind == "EXCHANGE_FEE":
            charged[asset] -= Decimal(amount)
    assert {a: f for a, f in charged.items()} == {a: f for a, f in exchange_fees.items() if f}, (
        "exchange_fees entries are exactly the trades' exchange fees"
    )
    house = {(a, s): Decimal(b) for a, s, b in conn.execute(text("SELECT account, asset, balance FROM house_balances"))}
    assert house == dict(house_running), "each house balance equals the sum of its entries"
    held: dict[str, Decimal] = defaultdict(Decimal)
    for asset, available, locked in conn.execute(text("SELECT asset, available, locked FROM balances")):
        held[asset] += Decimal(available) + Decimal(locked)
    for (_account, asset), balance in house.items():
        held[asset] += balance
    for asset in set(held) | set(flows):
        assert held[asset] == flows[asset], f"{asset}: users + house must equal the external flows"


Op = Callable[[Any], Any]


class LedgerMachine(RuleBasedStateMachine):
    postgres_url: str | None = None
    """None: a fresh SQLite file per example; else a migrated PostgreSQL database, emptied per example."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ledger-props-")
        if self.postgres_url is None:
            engine = create_db_engine(f"sqlite:///{self.dir}/u.db", synchronous="OFF")
            migrate(engine)
        else:
            engine = create_db_engine(self.postgres_url)
            with engine.begin() as conn:
                # TRUNCATE fires no row trigger: the append-only tables are emptied too (PostgreSQL only).
                conn.execute(text(f"TRUNCATE {', '.join(EVERY_TABLE)} RESTART IDENTITY"))
        self.tx = SqlTransactions(engine)
        self.first_results: dict[tuple[str, str], tuple[str, Any]] = {}
        self.steps = 0
        self.reservations: dict[str, tuple[str, str]] = {}
        self.exchange_fees: dict[str, Decimal] = defaultdict(Decimal)

    def teardown(self) -> None:
        self.tx.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def make_users(self) -> None:
        for i, user_id in enumerate(USERS):
            user = User(user_id, f"user{i}", f"user{i}@example.com", UserStatus.ACTIVE, NOW, NOW)
            self.tx.write_sync(lambda repo, u=user: accounts.create_user(repo, u))
            for asset, amount in [("USDT", "500"), ("BTC", "50")]:
                funding = Deposit.parse(user_id, asset, amount, f"funding-{i}-{asset}")
                self.tx.write_sync(lambda repo, c=funding: ledger.deposit(repo, c, NOW))
            asset = ASSETS[i % len(ASSETS)]
            opening = Reserve.parse(f"ord-open-{i}", user_id, asset, "40")
            self.tx.write_sync(lambda repo, c=opening: ledger.reserve(repo, c, NOW))
            self.reservations[opening.order_id] = (user_id, asset)

    # --- running one operation and checking "refused changes nothing" -------------------------

    def _run(self, command: Any, op: Op) -> Any:
        before = _snapshot(self.tx)
        known = (command.scope, command.key) in {k for k in self.first_results}
        try:
            result = self.tx.write_sync(op)
        except DomainError as exc:
            event(f"{type(command).__name__}: {exc.reason}")
            assert _snapshot(self.tx) == before, f"refused {command} changed the database"
            if known and self.first_results[(command.scope, command.key)][0] != command.fingerprint():
                assert isinstance(exc, Aborted), f"reused key with other content must be ABORTED, got {exc!r}"
            return exc
        event(f"{type(command).__name__}: {'replayed' if known else 'ok'}")
        if known:
            fingerprint, first = self.first_results[(command.scope, command.key)]
            assert fingerprint == command.fingerprint(), "a key reused with other content was accepted"
            assert result == first, "a replay must return the first result"
            assert _snapshot(self.tx) == before, "a replay must change nothing"
        else:
            self.first_results[(command.scope, command.key)] = (command.fingerprint(), result)
        self.steps += 1
        return result

    # --- rules --------------------------------------------------------------------------------

    @rule(user=known_or_unknown_users, asset=assets, amount=amounts, key=keys)
    def deposit(self, user: str, asset: str, amount: str, key: str) -> None:
        command = Deposit.parse(user, asset, amount, key)
        before = self._balance(user, asset)
        result = self._run(command, lambda repo: ledger.deposit(repo, command, NOW))
        if not isinstance(result, DomainError) and self.first_results[(command.scope, key)][1] is result:
            assert self._balance(user, asset) == (before[0] + command.amount, before[1])

    @rule(user=users, asset=assets, amount=amounts, key=keys)
    def withdraw(self, user: str, asset: str, amount: str, key: str) -> None:
        command = Withdraw.parse(user, asset, amount, key)
        before = self._balance(user, asset)
        result = self._run(command, lambda repo: ledger.withdraw(repo, command, NOW))
        if not isinstance(result, DomainError) and self.first_results[(command.scope, key)][1] is result:
            assert self._balance(user, asset) == (before[0] - command.amount, before[1])
        elif isinstance(result, DomainError) and (command.scope, key) not in self.first_results:
            assert result.code.name in ("FAILED_PRECONDITION", "ABORTED")

    @rule(order=orders, user=known_or_unknown_users, asset=assets, amount=amounts)
    def reserve(self, order: str, user: str, asset: str, amount: str) -> None:
        command = Reserve.parse(order, user, asset, amount)
        result = self._run(command, lambda repo: ledger.reserve(repo, command, NOW))
        if not isinstance(result, DomainError):
            self.reservations[order] = (user, asset)

    @rule(order=st.one_of(orders, st.just("ord-never")), key=keys, amount=st.one_of(st.just(""), amounts))
    def release(self, order: str, key: str, amount: str) -> None:
        command = Release.parse(order, key, amount)
        self._run(command, lambda repo: ledger.release(repo, command, NOW))

    @rule(
        data=st.data(),
        trade=keys,
        sizes=st.tuples(amounts, amounts),
        fee=fees,
        exchange_fee=exchange_fees,
    )
    def settle(
        self,
        *,
        data: st.DataObject,
        trade: str,
        sizes: tuple[str, str],
        fee: tuple[str, str],
        exchange_fee: tuple[str, str],
    ) -> None:
        command = self._trade(data=data, trade=trade, sizes=sizes, fee=fee, exchange_fee=exchange_fee)
        known = (command.scope, command.key) in self.first_results
        result = self._run(command, lambda repo: ledger.settle(repo, command, NOW))
        if not known and not isinstance(result, DomainError):
            self._booked(command)

    @rule(
        data=st.data(),
        trade=keys,
        release_key=keys,
        sizes=st.tuples(amounts, amounts),
        fee=fees,
        exchange_fee=exchange_fees,
    )
    def settle_and_release(
        self,
        *,
        data: st.DataObject,
        trade: str,
        release_key: str,
        sizes: tuple[str, str],
        fee: tuple[str, str],
        exchange_fee: tuple[str, str],
    ) -> None:
        """SettleTrade with a release_id: both keys, one transaction."""
        command = self._trade(data=data, trade=trade, sizes=sizes, fee=fee, exchange_fee=exchange_fee)
        release = Release.parse(command.order_id, release_key, "")
        parts = [
            (command.scope, command.key, command.fingerprint()),
            (release.scope, release.key, release.fingerprint()),
        ]
        known = [(scope, key) in self.first_results for scope, key, _ in parts]
        before = _snapshot(self.tx)
        try:
            result = self.tx.write_sync(lambda repo: ledger.settle_and_release(repo, command, release, NOW))
        except DomainError as exc:
            event(f"settle_and_release: {exc.reason}")
            assert _snapshot(self.tx) == before, "a refused combined call changed the database"
            return
        event(f"settle_and_release: {'+'.join('replayed' if k else 'ok' for k in known)}")
        if not known[0]:
            self._booked(command)
        if all(known):
            assert _snapshot(self.tx) == before, "a replay of both parts must change nothing"
        for (scope, key, fingerprint), was_known in zip(parts, known, strict=True):
            stored = self.tx.read_sync(lambda repo, s=scope, k=key: repo.get_idempotency(s, k))
            assert stored is not None and stored[0] == fingerprint
            if was_known:
                assert self.first_results[(scope, key)][0] == fingerprint
            else:
                self.first_results[(scope, key)] = (fingerprint, decode(stored[1]))
        assert result.released >= 0
        if not known[1]:
            assert result.reservation.remaining == 0, "a new release leaves nothing reserved"

    def _booked(self, command: Settle) -> None:
        """Remember what the exchange charged for a trade just booked: the model's own account of it."""
        if command.exchange_fee_amount > 0:
            self.exchange_fees[command.exchange_fee_asset] += command.exchange_fee_amount
            event("exchange fee booked")

    def _trade(
        self,
        *,
        data: st.DataObject,
        trade: str,
        sizes: tuple[str, str],
        fee: tuple[str, str],
        exchange_fee: tuple[str, str],
    ) -> Settle:
        (debit_amount, credit_amount), (fee_in, fee_amount), (exchange_asset, exchange_amount) = (
            sizes,
            fee,
            exchange_fee,
        )
        # Mostly against a real reservation (its user and asset), sometimes deliberately not.
        if self.reservations and data.draw(st.integers(0, 4)) > 0:
            order = data.draw(st.sampled_from(sorted(self.reservations)))
            user, debit = self.reservations[order]
        else:
            order = data.draw(st.one_of(orders, st.just("ord-never")))
            user, debit = data.draw(users), data.draw(assets)
        credit = next(a for a in ASSETS if a != debit)
        return Settle.parse(
            trade_id=trade,
            order_id=order,
            user_id=user,
            debit_asset=debit,
            debit_amount=debit_amount,
            credit_asset=credit,
            credit_amount=credit_amount,
            fee_asset={"none": "", "debit": debit, "credit": credit}[fee_in],
            fee_amount="" if fee_in == "none" else fee_amount,
            exchange_fee_asset="" if exchange_asset == "none" else exchange_asset,
            exchange_fee_amount="" if exchange_asset == "none" else exchange_amount,
        )

    @rule(
        user=users,
        status=st.sampled_from([UserStatus.ACTIVE, UserStatus.ACTIVE, UserStatus.INACTIVE, UserStatus.SUSPENDED]),
    )
    def set_status(self, user: str, status: UserStatus) -> None:
        self.tx.write_sync(lambda repo: accounts.update_user_status(repo, user, status, NOW))

    @rule(
        ops=st.lists(
            st.tuples(st.sampled_from(["deposit", "withdraw", "reserve", "release"]), users, assets, amounts, orders),
            min_size=2,
            max_size=5,
        )
    )
    def group_commit(self, ops: list[tuple[str, str, str, str, str]]) -> None:
        """Several operations in one transaction, a savepoint each; fresh keys so none is a replay."""
        jobs = []
        for kind, user, asset, amount, order in ops:
            self.steps += 1
            key = f"batch-{self.steps}"
            if kind == "deposit":
                d = Deposit.parse(user, asset, amount, key)
                jobs.append(lambda repo, c=d: ledger.deposit(repo, c, NOW))
            elif kind == "withdraw":
                w = Withdraw.parse(user, asset, amount, key)
                jobs.append(lambda repo, c=w: ledger.withdraw(repo, c, NOW))
            elif kind == "reserve":
                r = Reserve.parse(f"{order}-{key}", user, asset, amount)
                jobs.append(lambda repo, c=r: ledger.reserve(repo, c, NOW))
            else:
                x = Release.parse(order, key, amount)
                jobs.append(lambda repo, c=x: ledger.release(repo, c, NOW))
        outcomes = self.tx.run_batch(jobs)
        assert len(outcomes) == len(jobs)
        for ok, value in outcomes:
            assert ok or isinstance(value, DomainError), f"unexpected failure in a batch: {value!r}"

    # --- invariants ---------------------------------------------------------------------------

    def _balance(self, user: str, asset: str) -> tuple[Decimal, Decimal]:
        balance = self.tx.read_sync(lambda repo: repo.get_balance(user, asset))
        return (Decimal(0), Decimal(0)) if balance is None else (balance.available, balance.locked)

    @invariant()
    def ledger_explains_every_balance(self) -> None:
        def read(repo: Any) -> tuple[list[Any], list[Any], list[Any]]:
            conn = repo.conn
            balances = list(conn.execute(text("SELECT user_id, asset, available, locked FROM balances")))
            entries = list(
                conn.execute(
                    text(
                        "SELECT user_id, asset, available_delta, locked_delta, available_after, locked_after "
                        "FROM ledger_entries ORDER BY entry_id"
                    )
                )
            )
            reservations = list(
                conn.execute(text("SELECT user_id, asset, reserved, consumed, released FROM reservations"))
            )
            return balances, entries, reservations

        balances, entries, reservations = self.tx.read_sync(read)
        running: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for user, asset, d_avail, d_locked, after_avail, after_locked in entries:
            sums = running[(user, asset)]
            sums[0] += Decimal(d_avail)
            sums[1] += Decimal(d_locked)
            assert (sums[0], sums[1]) == (Decimal(after_avail), Decimal(after_locked)), (
                "entry *_after is the running sum"
            )
        held: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for user, asset, reserved, consumed, released in reservations:
            remaining = Decimal(reserved) - Decimal(consumed) - Decimal(released)
            assert Decimal(consumed) >= 0 and Decimal(released) >= 0 and remaining >= 0
            held[(user, asset)] += remaining
        assert {(u, a) for u, a, *_ in balances} == set(running)
        for user, asset, available_text, locked_text in balances:
            available, locked = Decimal(available_text), Decimal(locked_text)
            assert available >= 0 and locked >= 0
            assert [available, locked] == running[(user, asset)]
            assert locked == held[(user, asset)], "locked equals what the reservations still hold"

    @invariant()
    def users_and_house_change_only_by_external_flows(self) -> None:
        self.tx.read_sync(lambda repo: _double_entry(repo, self.exchange_fees))


LedgerMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_random_operation_sequences_keep_the_ledger_invariants = LedgerMachine.TestCase

EVERY_TABLE = (
    "users",
    "api_keys",
    "balances",
    "ledger_entries",
    "reservations",
    "idempotency_keys",
    "house_balances",
    "house_entries",
    "api_key_grants",
    "audit_events",
)


def test_on_postgresql_random_operation_sequences_keep_the_ledger_invariants(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("ledger")
    engine = create_db_engine(url)
    migrate(engine)
    engine.dispose()

    class OnPostgres(LedgerMachine):
        postgres_url = url

    run_state_machine_as_test(
        OnPostgres,
        settings=settings(
            max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        ),
    )
