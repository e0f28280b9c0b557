"""Signature payloads and checks against Binance's documented HMAC test vectors (REST and WebSocket API)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.exchange_simulator import signing
from services.exchange_simulator.errors import BinanceError
from tests.binance_vectors import API_KEY, SECRET, WS_SELL, WS_SELL_SIGNATURE, WS_UNICODE, WS_UNICODE_SIGNATURE

VECTOR_A = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
    "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71",
)
VECTOR_B = (
    "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC"
    "&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
    "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3",
)
VECTOR_C_QUERY = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
VECTOR_C_BODY = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
VECTOR_C_SIGNATURE = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"


@pytest.mark.parametrize(("payload", "signature"), [VECTOR_A, VECTOR_B])
def test_documented_rest_vectors_verify_from_the_raw_query(payload: str, signature: str) -> None:
    assert signing.hmac_hex(SECRET, payload) == signature
    signed, carried = signing.rest_payload(f"{payload}&signature={signature}", "")
    assert (signed, carried) == (payload, signature)
    assert signing.verify(SECRET, signed, carried)


def test_vector_c_signs_query_and_body_concatenated_without_separator() -> None:
    payload, carried = signing.rest_payload(VECTOR_C_QUERY, f"{VECTOR_C_BODY}&signature={VECTOR_C_SIGNATURE}")
    assert payload == VECTOR_C_QUERY + VECTOR_C_BODY
    assert carried == VECTOR_C_SIGNATURE
    assert signing.verify(SECRET, payload, carried)


def test_signature_compares_case_insensitively_and_rejects_a_changed_payload() -> None:
    payload, signature = VECTOR_A
    assert signing.verify(SECRET, payload, signature.upper())
    assert not signing.verify(SECRET, payload.replace("quantity=1", "quantity=2"), signature)
    assert not signing.verify("another-secret", payload, signature)


def test_percent_encoded_payload_is_signed_as_received_not_decoded() -> None:
    payload, signature = VECTOR_B
    decoded = "symbol=１２３４５６" + payload[payload.index("&side") :]
    assert not signing.verify(SECRET, decoded, signature)


WS_VECTORS = [
    (
        WS_SELL,
        f"apiKey={API_KEY}&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL&symbol=BTCUSDT"
        "&timeInForce=GTC&timestamp=1645423376532&type=LIMIT",
        WS_SELL_SIGNATURE,
    ),
    (
        WS_UNICODE,
        f"apiKey={API_KEY}&price=0.10000000&quantity=1.00000000&recvWindow=5000&side=BUY&symbol=１２３４５６"
        "&timeInForce=GTC&timestamp=1645423376532&type=LIMIT",
        WS_UNICODE_SIGNATURE,
    ),
]


@pytest.mark.parametrize(("params", "payload", "signature"), WS_VECTORS)
def test_documented_websocket_api_vectors(params: dict[str, object], payload: str, signature: str) -> None:
    with_signature = {**params, "signature": signature}
    assert signing.ws_payload(with_signature) == payload
    assert signing.verify(SECRET, signing.ws_payload(with_signature), signature)


def test_timestamp_rule() -> None:
    now = 1_700_000_000_000
    signing.check_timestamp(now - 5000, Decimal(5000), now)  # exactly recvWindow old is fine
    signing.check_timestamp(now + 999, Decimal(5000), now)
    with pytest.raises(BinanceError) as info:
        signing.check_timestamp(now - 5001, Decimal(5000), now)
    assert (info.value.code, info.value.msg) == (-1021, "Timestamp for this request is outside of the recvWindow.")
    with pytest.raises(BinanceError) as info:
        signing.check_timestamp(now + 1000, Decimal(60000), now)
    assert (info.value.code, info.value.msg) == (
        -1021,
        "Timestamp for this request was 1000ms ahead of the server's time.",
    )


def test_recv_window_and_timestamp_parsing() -> None:
    assert signing.parse_recv_window(None) == 5000
    assert signing.parse_recv_window("6000.346") == Decimal("6000.346")
    with pytest.raises(BinanceError) as info:
        signing.parse_recv_window("60001")
    assert info.value.code == -1131
    assert signing.parse_timestamp("1700000000000123") == 1700000000000  # microseconds
    with pytest.raises(BinanceError) as info:
        signing.parse_timestamp(None)
    assert info.value.msg == "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
