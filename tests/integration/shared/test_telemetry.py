"""The shared server and channel with a ``Telemetry``, for real on loopback: go-grpc-prometheus metrics with
gRPC-Go's code names, client and server spans joined by the traceparent metadata, /metrics over HTTP,
a metrics port clash named by its variable, and readiness that moves only the service's own status."""

from __future__ import annotations

import logging

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.client import open_channel
from shared.errors import InvalidArgument
from shared.logs import MaskingFormatter
from shared.readiness import Readiness
from shared.server import PortInUse, Registration, create_server
from shared.telemetry import Telemetry
from tests.metrics import parse_samples
from trading.user.v1 import user_service_pb2, user_service_pb2_grpc

SERVICE = "trading.user.v1.UserService"


class Servicer(user_service_pb2_grpc.UserServiceServicer):
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def GetUser(self, request, context):
        record = logging.LogRecord("test", logging.INFO, __file__, 1, "inside the call", None, None)
        self.lines.append(MaskingFormatter("test").format(record))
        if request.user_id == "bad":
            raise InvalidArgument("user_id", "is malformed")
        if request.user_id == "boom":
            raise RuntimeError("unexpected")
        return user_service_pb2.GetUserResponse()


@pytest.fixture
async def telemetry_server():
    exporter = InMemorySpanExporter()
    server_side = Telemetry.create("server", span_processors=[SimpleSpanProcessor(exporter)])
    client_side = Telemetry.create("client", span_processors=[SimpleSpanProcessor(exporter)])
    servicer = Servicer()
    registration = Registration(SERVICE, user_service_pb2_grpc.add_UserServiceServicer_to_server, servicer)
    server, port, health, _ = await create_server("127.0.0.1:0", [registration], telemetry=server_side)
    await server_side.serve_metrics("127.0.0.1:0", "TEST_METRICS_ADDR")
    channel = open_channel(f"127.0.0.1:{port}", client_side)
    yield server_side, client_side, exporter, channel, servicer, health
    await channel.close()
    await server.stop(None)
    await server_side.close()
    await client_side.close()


def samples(telemetry: Telemetry, text: str | None = None) -> dict:
    from prometheus_client import generate_latest

    text = text if text is not None else generate_latest(telemetry.registry).decode()
    return parse_samples(text)


def handled(method: str, code: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code, "grpc_type": "unary"}
    return ("grpc_server_handled_total", tuple(sorted(labels.items())))


async def test_calls_are_counted_by_grpc_go_code_names_on_both_sides(telemetry_server):
    server_side, client_side, _, channel, _, _ = telemetry_server
    stub = user_service_pb2_grpc.UserServiceStub(channel)
    assert samples(server_side)[handled("GetUser", "OK")] == 0  # preset: every method exists at zero
    await stub.GetUser(user_service_pb2.GetUserRequest(user_id="ok"))
    for user_id in ("bad", "boom"):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetUser(user_service_pb2.GetUserRequest(user_id=user_id))
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    server = samples(server_side)
    assert server[handled("GetUser", "OK")] == 1
    assert server[handled("GetUser", "InvalidArgument")] == 1
    assert server[handled("GetUser", "Internal")] == 1
    assert not any("grpc.health" in str(labels) for _, labels in server)  # probes are not counted
    client = samples(client_side)
    key = ("grpc_client_handled_total", handled("GetUser", "InvalidArgument")[1])
    assert client[key] == 1


async def test_client_and_server_spans_share_the_trace_and_the_log_line_carries_it(telemetry_server):
    _, _, exporter, channel, servicer, _ = telemetry_server
    stub = user_service_pb2_grpc.UserServiceStub(channel)
    await stub.GetUser(user_service_pb2.GetUserRequest(user_id="ok"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetUser(user_service_pb2.GetUserRequest(user_id="boom"))
    spans = exporter.get_finished_spans()
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(clients) == len(servers) == 2
    for client, server in zip(clients, servers, strict=True):
        assert server.context.trace_id == client.context.trace_id
        assert server.parent is not None and server.parent.span_id == client.context.span_id
        assert server.name == f"{SERVICE}/GetUser"
    assert servers[1].status.status_code is StatusCode.ERROR
    assert servers[1].status.description == "INTERNAL"
    assert servers[0].status.status_code is StatusCode.UNSET
    assert f'"trace_id": "{servers[0].context.trace_id:032x}"' in servicer.lines[0]
    assert f'"span_id": "{servers[0].context.span_id:016x}"' in servicer.lines[0]


def test_a_log_line_outside_any_call_has_no_trace_id():
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "outside", None, None)
    assert "trace_id" not in MaskingFormatter("test").format(record)


async def test_metrics_are_served_over_http_and_a_taken_port_is_refused_naming_the_variable(telemetry_server):
    server_side, *_ = telemetry_server
    server = server_side.metrics_server
    assert server is not None and server.port > 0
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url) as response:
            assert response.status == 200
            text = await response.text()
        async with session.get(server.url.replace("/metrics", "/other")) as response:
            assert response.status == 404
    assert handled("GetUser", "OK") in samples(server_side, text)
    other = Telemetry.create("other")
    with pytest.raises(PortInUse, match="ORDER_METRICS_ADDR"):
        await other.serve_metrics(f"127.0.0.1:{server.port}", "ORDER_METRICS_ADDR")
    await other.close()


async def test_readiness_moves_the_services_own_status_and_leaves_liveness_serving(telemetry_server):
    server_side, _, _, channel, _, health = telemetry_server
    reason: list[str | None] = ["the dependency is down"]

    async def dependency() -> str | None:
        return reason[0]

    readiness = Readiness(health, SERVICE, {"dependency": dependency}, registry=server_side.registry)
    stub = health_pb2_grpc.HealthStub(channel)

    async def status(service: str) -> int:
        return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status

    assert await readiness.evaluate() is False
    assert await status(SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await status("") == health_pb2.HealthCheckResponse.SERVING
    assert samples(server_side)[("trading_ready", ())] == 0
    assert samples(server_side)[("trading_readiness_check", (("check", "dependency"),))] == 0
    reason[0] = None
    assert await readiness.evaluate() is True
    assert await status(SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert samples(server_side)[("trading_ready", ())] == 1
    await readiness.stop()
    await health.enter_graceful_shutdown()
    assert await status(SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
