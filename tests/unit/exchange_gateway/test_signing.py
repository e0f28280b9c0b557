"""Binance's documented HMAC-SHA256 vectors (../shared/reference/binance-spot-api.md §2)."""

from __future__ import annotations

from services.exchange_gateway.adapters.binance.signing import (
    encode_params,
    hmac_sha256,
    payload,
    sign_query,
    sign_ws,
    ws_payload,
)

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
ORDER = [
    ("side", "BUY"),
    ("type", "LIMIT"),
    ("timeInForce", "GTC"),
    ("quantity", "1"),
    ("price", "0.1"),
    ("recvWindow", "5000"),
    ("timestamp", "1499827319559"),
]


def test_vector_a_ascii_payload():
    query = encode_params([("symbol", "LTCBTC"), *ORDER])
    assert query == (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    )
    assert hmac_sha256(SECRET, query) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_vector_b_non_ascii_symbol_is_percent_encoded_before_signing():
    query = encode_params([("symbol", "１２３４５６"), *ORDER])
    assert query.startswith("symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY")
    assert hmac_sha256(SECRET, query) == "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"


def test_vector_c_query_and_body_are_concatenated_without_separator():
    query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
    body = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    signed = payload(query, body)
    assert "GTCquantity=1" in signed
    assert hmac_sha256(SECRET, signed) == "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"


def test_vector_d_testnet_unicode_symbol():
    query = encode_params([("symbol", "这是测试币456"), *ORDER])
    assert query.startswith("symbol=%E8%BF%99%E6%98%AF%E6%B5%8B%E8%AF%95%E5%B8%81456&")
    assert hmac_sha256(SECRET, query) == "4b6e325645ce7207ef753f22262305df9646f9e5b8a9a266e2320c70bb7f60c8"


def test_signed_query_appends_the_signature_of_exactly_the_bytes_sent():
    signed = sign_query(SECRET, [("symbol", "LTCBTC"), *ORDER])
    query, _, signature = signed.rpartition("&signature=")
    assert signature == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    assert hmac_sha256(SECRET, query) == signature


def test_reserved_characters_are_encoded_and_unreserved_kept():
    assert encode_params([("a b", "x&y=z"), ("k", "-_.~")]) == "a%20b=x%26y%3Dz&k=-_.~"


def test_websocket_api_vector_sorted_and_not_encoded():
    params = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.01000000",
        "price": "52000.00",
        "recvWindow": 100,
        "timestamp": 1645423376532,
        "apiKey": API_KEY,
    }
    assert ws_payload(params).startswith(
        "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&price="
    )
    assert sign_ws(SECRET, params) == "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"


def test_websocket_api_vector_with_unicode_symbol_and_signature_excluded():
    params = {
        "apiKey": API_KEY,
        "price": "0.10000000",
        "quantity": "1.00000000",
        "recvWindow": 5000,
        "side": "BUY",
        "symbol": "１２３４５６",
        "timeInForce": "GTC",
        "timestamp": 1645423376532,
        "type": "LIMIT",
        "signature": "ignored",
    }
    assert "signature" not in ws_payload(params)
    assert sign_ws(SECRET, params) == "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd"
