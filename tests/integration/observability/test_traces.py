"""One PlaceOrder is one trace across the three services, down to the HTTP request to the exchange."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tests.integration.order_service.conftest import D

from .conftest import Observed

PLACE = "trading.order.v1.OrderService/PlaceOrder"
RESERVE = "trading.user.v1.UserService/ReserveFunds"
SUBMIT = "trading.gateway.v1.ExchangeGateway/SubmitOrder"


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def _parent(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    [parent] = [s for s in spans if s.context.span_id == span.parent.span_id]
    return parent


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind, service: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind is kind and _service(s) == service]
    assert len(found) == 1, [(s.name, s.kind, _service(s)) for s in spans]
    return found[0]


async def test_one_place_order_is_one_trace_from_the_order_service_to_the_exchange_request(observed: Observed):
    stack = observed.stack
    trader = await stack.trader({"USDT": "10000"})
    observed.exporter.clear()

    order = await trader.place(side=1, type=2, quantity="0.01", price="49000.00")  # LIMIT BUY below the market
    assert order.order_id

    spans = observed.spans()
    server = _one(spans, PLACE, SpanKind.SERVER, "order_service")
    assert server.parent is None or not server.parent.is_remote  # the test's client sent no trace context
    trace_id = server.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]

    # order service -> user service: ReserveFunds, client span parented by PlaceOrder's server span
    reserve_client = _one(in_trace, RESERVE, SpanKind.CLIENT, "order_service")
    reserve_server = _one(in_trace, RESERVE, SpanKind.SERVER, "user_service")
    assert _parent(reserve_client, in_trace) is server
    assert _parent(reserve_server, in_trace) is reserve_client
    assert reserve_server.parent is not None and reserve_server.parent.is_remote

    # order service -> gateway: SubmitOrder
    submit_client = _one(in_trace, SUBMIT, SpanKind.CLIENT, "order_service")
    submit_server = _one(in_trace, SUBMIT, SpanKind.SERVER, "exchange_gateway")
    assert _parent(submit_client, in_trace) is server
    assert _parent(submit_server, in_trace) is submit_client

    # gateway -> exchange: the HTTP POST of the new order, inside SubmitOrder's trace
    [http] = [s for s in in_trace if s.name == "HTTP POST" and _service(s) == "exchange_gateway"]
    assert http.kind is SpanKind.CLIENT
    assert http.attributes["url.path"] == "/api/v3/order"
    assert http.attributes["http.response.status_code"] == 200
    ancestor = http
    while ancestor is not submit_server:
        ancestor = _parent(ancestor, in_trace)

    # database transactions of each service on the way are in the trace too
    writes = {_service(s) for s in in_trace if s.name == "db.write"}
    assert writes == {"order_service", "user_service", "exchange_gateway"}
    for span in in_trace:
        if span is not server:
            assert span.parent is not None, span.name

    # every span of the trace ended, and all three services took part
    assert {_service(s) for s in in_trace} == {"order_service", "user_service", "exchange_gateway"}
    assert D(order.quantity) == D("0.01")
