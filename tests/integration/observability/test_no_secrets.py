"""Nothing secret, and nothing that names a user or an order, in any span or metric label.

A user places and cancels an order with an API key; the services call each other with the service
token and the gateway signs its requests to the exchange with the API key and secret. None of these
(nor the user's id, the order's id or a signed query string) may show in a span's name, attributes,
events or status, nor in a metric's labels."""

from __future__ import annotations

from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET
from tests.integration.order_service.conftest import ADMIN_TOKEN, SERVICE_TOKEN

from .conftest import Observed


def _span_texts(observed: Observed) -> list[str]:
    texts = []
    for span in observed.spans():
        texts.append(span.name)
        texts += [f"{k}={v}" for k, v in (span.attributes or {}).items()]
        texts += [str(span.status.description or "")]
        for event in span.events:
            texts.append(event.name)
            texts += [f"{k}={v}" for k, v in (event.attributes or {}).items()]
    return texts


async def test_spans_and_metric_labels_carry_no_secret_and_no_user_or_order_id(observed: Observed):
    trader = await observed.stack.trader({"USDT": "10000"})
    order = await trader.place(side=1, type=2, quantity="0.01", price="45000.00")
    await trader.cancel(order.order_id)
    await observed.stack.settled()

    forbidden = [
        trader.api_key,
        trader.api_key.split("_", 2)[2],  # the key's secret part alone (tk_<key id>_<secret>)
        ADMIN_TOKEN,
        SERVICE_TOKEN,
        SIM_DEV_API_KEY,
        SIM_DEV_API_SECRET,
        trader.user_id,
        order.order_id,
    ]
    texts = _span_texts(observed)
    assert any(t.startswith("url.path=/api/v3/order") for t in texts)  # the exchange request is there
    for text in texts:
        for value in forbidden:
            assert value not in text, text
        assert "signature" not in text and "?" not in text and "Bearer" not in text, text

    for service in ("order_service", "user_service", "exchange_gateway"):
        samples = await observed.scrape(service)
        assert samples, service
        for (name, labels), _ in samples.items():
            for label, value in labels:
                for secret in forbidden:
                    assert secret not in value, (service, name, label)
                assert not value.startswith(("usr_", "ord_", "tk_")), (service, name, label)
