"""The shared server bootstrap, served for real on loopback: errors, reflection, health, port clash."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from shared.errors import FailedPrecondition, InvalidArgument
from shared.server import PortInUse, Registration, create_server
from trading.user.v1 import user_service_pb2, user_service_pb2_grpc

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


class Servicer(user_service_pb2_grpc.UserServiceServicer):
    async def GetUser(self, request, context):
        if request.user_id == "bad":
            raise InvalidArgument("user_id", "is malformed")
        if request.user_id == "inactive":
            raise FailedPrecondition("user is not ACTIVE", reason="USER_NOT_ACTIVE")
        raise RuntimeError("secret internal detail /etc/passwd")


@pytest.fixture
async def served():
    registration = Registration(
        "trading.user.v1.UserService", user_service_pb2_grpc.add_UserServiceServicer_to_server, Servicer()
    )
    server, port, health, _ = await create_server("127.0.0.1:0", [registration])
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield port, channel, health, server
    await channel.close()
    await server.stop(None)


async def call(channel, user_id):
    stub = user_service_pb2_grpc.UserServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    return info.value


async def test_domain_errors_become_rich_statuses(served):
    _, channel, _, _ = served
    error = await call(channel, "bad")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None and len(status.details) == 2
    error = await call(channel, "inactive")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not ACTIVE" in error.details()


async def test_unexpected_errors_are_internal_without_details(served):
    _, channel, _, _ = served
    error = await call(channel, "boom")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "passwd" not in (error.details() or "")


async def test_rpcs_not_built_answer_unimplemented(served):
    _, channel, _, _ = served
    stub = user_service_pb2_grpc.UserServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListUsers(user_service_pb2.ListUsersRequest())
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_second_server_on_the_same_port_fails_instead_of_sharing_it(served):
    port = served[0]
    with pytest.raises(PortInUse):
        await create_server(f"127.0.0.1:{port}", [])


async def test_graceful_shutdown_turns_health_not_serving_first(served):
    _, channel, health, _ = served
    stub = health_pb2_grpc.HealthStub(channel)
    assert (await stub.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
    await health.enter_graceful_shutdown()
    reply = await stub.Check(health_pb2.HealthCheckRequest(service="trading.user.v1.UserService"))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_grpcurl_describe_shows_the_proto_comments(served):
    port = served[0]

    def describe():
        return subprocess.run(
            [GRPCURL, "-plaintext", f"127.0.0.1:{port}", "describe", "trading.user.v1.DepositRequest"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout

    out = await asyncio.to_thread(describe)
    assert "// Request of Deposit." in out
    assert "idempotency key" in out


async def test_error_details_reach_grpcurl_as_json(served):
    port = served[0]

    def invoke():
        return subprocess.run(
            [
                GRPCURL,
                "-plaintext",
                "-format-error",
                "-d",
                json.dumps({"user_id": "bad"}),
                f"127.0.0.1:{port}",
                "trading.user.v1.UserService/GetUser",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    result = await asyncio.to_thread(invoke)
    assert result.returncode != 0
    assert "user_id" in result.stdout + result.stderr
