"""The authorization matrix, as a table."""

from __future__ import annotations

import pytest

from services.user_service.api.auth import (
    POLICY,
    SERVICE_PEERS,
    Authorizer,
    Principal,
    Role,
    check_access,
    check_owner,
)
from services.user_service.domain.audit import AuditKind
from services.user_service.domain.audit import Role as AuditRole
from services.user_service.domain.throttle import Throttle
from services.user_service.service.audit import AuditTrail
from services.user_service.service.guard import AuthenticationGuard
from shared.errors import PermissionDenied
from tests.unit.shared.test_tls import verified
from trading.user.v1 import user_service_pb2

ADMIN_ONLY = {
    "CreateUser",
    "ListUsers",
    "UpdateUserStatus",
    "Deposit",
    "Withdraw",
    "ListHouseEntries",
    "ListAuditEvents",
}
INTERNAL = {
    "AuthenticateApiKey",
    "ReserveFunds",
    "ReleaseFunds",
    "SettleTrade",
    "ListReservations",
    "RecordAuditEvents",
}
OWNER_READ = {"GetUser", "GetBalances", "ListLedgerEntries"}
OWNER_KEYS = {"ListApiKeys", "CreateApiKey", "RevokeApiKey"}
OPERATORS = {"GetLedgerTotals"}

U = "usr_01J9Z3ABCDEFGHJKMNPQRSTVWX"


def test_every_rpc_of_the_proto_has_a_policy() -> None:
    methods = set(user_service_pb2.DESCRIPTOR.services_by_name["UserService"].methods_by_name)
    assert set(POLICY) == methods == ADMIN_ONLY | INTERNAL | OWNER_READ | OWNER_KEYS | OPERATORS


@pytest.mark.parametrize("rpc", sorted(POLICY))
@pytest.mark.parametrize("role", list(Role))
def test_matrix(rpc: str, role: Role) -> None:
    allowed = {
        Role.ADMIN: ADMIN_ONLY | OWNER_READ | OWNER_KEYS | OPERATORS,
        Role.SERVICE: INTERNAL | OWNER_READ | OPERATORS,
        Role.USER: OWNER_READ | OWNER_KEYS,
    }[role]
    principal = Principal(role, user_id=U if role is Role.USER else None)
    if rpc in allowed:
        check_access(principal, rpc)
    else:
        with pytest.raises(PermissionDenied):
            check_access(principal, rpc)


def test_an_api_key_reaches_only_its_own_user() -> None:
    mine = Principal(Role.USER, user_id=U, key_id="key_x")
    check_owner(mine, U)
    with pytest.raises(PermissionDenied):
        check_owner(mine, "usr_01J9Z3ABCDEFGHJKMNPQRSTVWY")
    check_owner(Principal(Role.ADMIN), "usr_01J9Z3ABCDEFGHJKMNPQRSTVWY")


def test_with_tls_the_gateways_certificate_may_record_audit_events_and_nothing_else_here() -> None:
    SERVICE_PEERS.check(verified("exchange_gateway"), "RecordAuditEvents")  # type: ignore[arg-type]
    SERVICE_PEERS.check(verified("order_service"), "RecordAuditEvents")  # type: ignore[arg-type]
    for rpc in ("AuthenticateApiKey", "ReserveFunds", "GetLedgerTotals"):
        with pytest.raises(PermissionDenied):
            SERVICE_PEERS.check(verified("exchange_gateway"), rpc)  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        SERVICE_PEERS.check(verified("user_service"), "RecordAuditEvents")  # type: ignore[arg-type]


class ServiceTokenCall:
    """A call with the service token over a connection whose client certificate names ``service``."""

    def __init__(self, service: str):
        self.connection = verified(service)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer service-token-authorization-unit"),)

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.connection.auth_context()

    def peer(self) -> str:
        return self.connection.peer()


async def test_the_service_token_from_the_wrong_certificate_is_a_recorded_permission_denial() -> None:
    trail = AuditTrail(transactions=None)  # type: ignore[arg-type]  # counting needs no database
    authorizer = Authorizer(
        "admin-token-authorization-unit",
        "service-token-authorization-unit",
        users=None,  # type: ignore[arg-type]
        guard=AuthenticationGuard(Throttle(), trail),
        peers=SERVICE_PEERS,
    )
    with pytest.raises(PermissionDenied):
        await authorizer.authenticate(ServiceTokenCall("exchange_gateway"), "ReserveFunds")  # type: ignore[arg-type]
    (denied,) = trail.aggregator.drain()
    assert (denied.kind, denied.actor, denied.rpc, denied.peer) == (
        AuditKind.PERMISSION_DENIED,
        AuditRole.SERVICE,
        "ReserveFunds",
        "127.0.0.1",
    )
    assert denied.details["reasons"] == "SERVICE_NOT_ALLOWED"
