import grpc
from google.rpc import error_details_pb2, status_pb2

from shared.errors import (
    Code,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from shared.grpc_errors import from_rpc_error, status_code, to_status


class FakeRpcError(grpc.RpcError):
    def __init__(self, status: grpc.Status):
        self._status = status

    def code(self):
        return self._status.code

    def details(self):
        return self._status.details

    def trailing_metadata(self):
        return self._status.trailing_metadata


def unpack(status: grpc.Status):
    [(key, raw)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    return status_pb2.Status.FromString(raw)


def test_invalid_argument_carries_error_info_and_the_field():
    status = to_status(InvalidArgument("amount", "must be positive"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    rich = unpack(status)
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    assert rich.details[0].Unpack(info) and info.reason == "INVALID_ARGUMENT" and info.metadata["field"] == "amount"
    assert rich.details[1].Unpack(bad) and bad.field_violations[0].field == "amount"


def test_round_trip_through_the_wire_keeps_kind_reason_field_and_retry():
    cases = [
        InvalidArgument("price", "not a multiple of the tick size"),
        NotFound("order ord_1 not found", reason="ORDER_NOT_FOUND"),
        FailedPrecondition("insufficient funds", reason="INSUFFICIENT_FUNDS"),
        ResourceExhausted("rate limited", retry_after=1.5),
    ]
    for error in cases:
        back = from_rpc_error(FakeRpcError(to_status(error)))
        assert type(back) is type(error)
        assert back.reason == error.reason
    price = from_rpc_error(FakeRpcError(to_status(cases[0])))
    assert isinstance(price, InvalidArgument) and price.field == "price"
    limited = from_rpc_error(FakeRpcError(to_status(cases[3])))
    assert isinstance(limited, ResourceExhausted) and limited.retry_after == 1.5


def test_every_kind_is_reported_with_the_grpc_code_of_its_name():
    kinds = [DomainError, *DomainError.__subclasses__()]
    assert {kind.code for kind in kinds} == set(Code)
    for kind in kinds:
        error = InvalidArgument("f", "d") if kind is InvalidArgument else kind("m")
        assert status_code(error) == grpc.StatusCode[kind.code.name]
        assert to_status(error).code == status_code(error)
