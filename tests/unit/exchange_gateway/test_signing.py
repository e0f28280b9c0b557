"""Signing with HMAC, Ed25519 and RSA keys.

HMAC: Binance's documented vectors (binance-spot-api.md §2). Ed25519 and RSA sign the same payloads (Binance gives
no reproducible signature for them): the documented payloads are signed and checked with the public key, and the
Ed25519 signer reproduces RFC 8032's test vectors. Key loading fails with a ConfigError naming the variable.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from services.exchange_gateway.adapters.binance.clock import ExchangeClock
from services.exchange_gateway.adapters.binance.rate_limiter import RateLimiter
from services.exchange_gateway.adapters.binance.rest import BinanceRestClient
from services.exchange_gateway.adapters.binance.signing import (
    Ed25519Signer,
    HmacSigner,
    RsaSigner,
    append_signature,
    encode_params,
    hmac_sha256,
    payload,
    sign_ws,
    signer_from_pem,
    ws_payload,
)
from services.exchange_gateway.config import Config
from shared.config import ConfigError
from tests.binance_vectors import API_KEY, SECRET, WS_SELL, WS_SELL_SIGNATURE, WS_UNICODE, WS_UNICODE_SIGNATURE

from .fakes import FakeTransport, answer

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
    signed = append_signature(HmacSigner(SECRET), encode_params([("symbol", "LTCBTC"), *ORDER]))
    query, _, signature = signed.rpartition("&signature=")
    assert signature == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    assert hmac_sha256(SECRET, query) == signature


def test_reserved_characters_are_encoded_and_unreserved_kept():
    assert encode_params([("a b", "x&y=z"), ("k", "-_.~")]) == "a%20b=x%26y%3Dz&k=-_.~"


def test_websocket_api_vector_sorted_and_not_encoded():
    assert ws_payload(WS_SELL).startswith(
        "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&price="
    )
    assert sign_ws(HmacSigner(SECRET), WS_SELL) == WS_SELL_SIGNATURE


def test_websocket_api_vector_with_unicode_symbol_and_signature_excluded():
    params = {**WS_UNICODE, "signature": "ignored"}
    assert "signature" not in ws_payload(params)
    assert sign_ws(HmacSigner(SECRET), params) == WS_UNICODE_SIGNATURE


# ------------------------------------------------------------------------------------------ Ed25519 and RSA

VECTOR_A = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
VECTOR_B = (
    "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC"
    "&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
VECTOR_C = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTCquantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
RSA_DOC_PAYLOAD = (
    "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1&price=0.2&timestamp=1668481559918&recvWindow=5000"
)
WS_VECTOR = (
    "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&price=52000.00&quantity=0.01000000"
    "&recvWindow=100&side=SELL&symbol=BTCUSDT&timeInForce=GTC&timestamp=1645423376532&type=LIMIT"
)
# RFC 8032 section 7.1, TEST 1 and TEST 2.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        b"",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        b"r",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]
PASSPHRASE = "correct horse battery staple"


def pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, passphrase: str = "") -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def verify(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey, signature: str, message: str) -> None:
    raw = base64.b64decode(signature, validate=True)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        key.public_key().verify(raw, message.encode())
    else:
        key.public_key().verify(raw, message.encode(), padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(("private", "message", "signature"), RFC8032)
def test_ed25519_signer_reproduces_rfc_8032_vectors(private: str, message: bytes, signature: str) -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private))
    signer = signer_from_pem(pem(key))
    assert isinstance(signer, Ed25519Signer)
    assert signer.sign(message.decode()) == base64.b64encode(bytes.fromhex(signature)).decode()


@pytest.mark.parametrize("message", [VECTOR_A, VECTOR_B, VECTOR_C, RSA_DOC_PAYLOAD, WS_VECTOR])
@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_asymmetric_signers_sign_the_documented_payloads_as_base64(
    kind: str, message: str, ed_key: ed25519.Ed25519PrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    key = ed_key if kind == "ed25519" else rsa_key
    signer = signer_from_pem(pem(key))
    signature = signer.sign(message)
    verify(key, signature, message)
    with pytest.raises(InvalidSignature):
        verify(key, signature, message.replace("timestamp=1", "timestamp=2"))


def test_rsa_signatures_are_pkcs1_v1_5_with_sha256_and_deterministic(rsa_key: rsa.RSAPrivateKey) -> None:
    signer = signer_from_pem(pem(rsa_key))
    assert isinstance(signer, RsaSigner)
    expected = rsa_key.sign(RSA_DOC_PAYLOAD.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert signer.sign(RSA_DOC_PAYLOAD) == base64.b64encode(expected).decode()
    assert len(base64.b64decode(signer.sign(RSA_DOC_PAYLOAD))) == 256  # a 2048-bit key


def test_an_encrypted_pem_loads_with_its_passphrase(ed_key: ed25519.Ed25519PrivateKey) -> None:
    signer = signer_from_pem(pem(ed_key, PASSPHRASE), PASSPHRASE)
    verify(ed_key, signer.sign(VECTOR_A), VECTOR_A)


def test_rest_signature_is_percent_encoded_base64_over_exactly_the_query(ed_key: ed25519.Ed25519PrivateKey) -> None:
    signer = signer_from_pem(pem(ed_key))
    for window in range(100, 200):  # find a payload whose signature has a character that must be encoded
        params = [("symbol", "BTCUSDT"), ("recvWindow", str(window)), ("timestamp", "1499827319559")]
        signed = append_signature(signer, encode_params(params))
        query, _, wire = signed.rpartition("&signature=")
        if set(signer.sign(query)) & set("+/="):
            break
    assert query == encode_params(params)
    assert not set(wire) & set("+/=")
    assert "%2B" in wire or "%2F" in wire or "%3D" in wire
    verify(ed_key, unquote(wire), query)
    assert append_signature(HmacSigner(SECRET), VECTOR_A) == f"{VECTOR_A}&signature={hmac_sha256(SECRET, VECTOR_A)}"


def test_websocket_api_signature_is_plain_base64_over_the_sorted_params(rsa_key: rsa.RSAPrivateKey) -> None:
    signature = sign_ws(signer_from_pem(pem(rsa_key)), WS_SELL)
    verify(rsa_key, signature, WS_VECTOR)


async def test_the_rest_client_signs_with_the_given_signer(ed_key: ed25519.Ed25519PrivateKey) -> None:
    now = 1_800_000_000_000.0
    transport = FakeTransport(server_time=lambda: int(now))
    clock = ExchangeClock(lambda: now)
    limiter = RateLimiter(clock.now, timers=False, margin=0.0, local=clock.local)
    client = BinanceRestClient(
        transport,
        base_url="https://api.example",
        api_key=API_KEY,
        signer=signer_from_pem(pem(ed_key)),
        clock=clock,
        limiter=limiter,
    )
    transport.script("GET", "/api/v3/account", answer({"balances": []}))
    await client.account()
    (sent,) = transport.of("GET", "/api/v3/account")
    query, _, wire = sent.query.rpartition("&signature=")
    assert sent.headers == {"X-MBX-APIKEY": API_KEY}
    assert query == f"recvWindow=5000&timestamp={int(now)}"
    verify(ed_key, unquote(wire), query)


def test_signers_do_not_show_their_key() -> None:
    assert SECRET not in repr(HmacSigner(SECRET))
    assert repr(signer_from_pem(pem(ed25519.Ed25519PrivateKey.generate()))) == "Ed25519Signer(***)"


# ------------------------------------------------------------------------------------------ loading failures


def test_an_encrypted_pem_without_passphrase_names_the_passphrase_variable(ed_key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(ConfigError, match="BINANCE_PRIVATE_KEY_PASSPHRASE"):
        signer_from_pem(pem(ed_key, PASSPHRASE))


def test_a_wrong_passphrase_names_the_passphrase_variable_and_not_the_passphrase(
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    with pytest.raises(ConfigError, match="BINANCE_PRIVATE_KEY_PASSPHRASE does not decrypt") as info:
        signer_from_pem(pem(ed_key, PASSPHRASE), "wrong horse battery staple")
    assert "wrong horse" not in str(info.value)


def test_a_passphrase_for_an_unencrypted_key_is_refused(ed_key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(ConfigError, match="BINANCE_PRIVATE_KEY_PASSPHRASE is set but"):
        signer_from_pem(pem(ed_key), PASSPHRASE)


@pytest.mark.parametrize(
    "data",
    [
        b"not a key at all",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    ],
    ids=["garbage", "damaged", "public-key"],
)
def test_a_file_that_is_not_a_private_key_names_the_file_variable(data: bytes) -> None:
    with pytest.raises(ConfigError, match="BINANCE_PRIVATE_KEY_FILE is not a PEM private key"):
        signer_from_pem(data)


def test_unsupported_key_types_and_sizes_are_refused() -> None:
    with pytest.raises(ConfigError, match="BINANCE_PRIVATE_KEY_FILE holds an unsupported key type"):
        signer_from_pem(pem(ec.generate_private_key(ec.SECP256R1())))
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the key refused here
    with pytest.raises(ConfigError, match="1024-bit RSA key"):
        signer_from_pem(pem(weak))


# ------------------------------------------------------------------------------------------ configuration

TOKENS = {"TRADING_SERVICE_TOKEN": "svc-token-0001", "TRADING_ADMIN_TOKEN": "adm-token-0001"}


@pytest.mark.parametrize("binance_env", ["sim", "testnet", "live"])
def test_config_takes_a_private_key_file_instead_of_the_secret(binance_env: str) -> None:
    config = Config.from_env(
        {
            **TOKENS,
            "BINANCE_ENV": binance_env,
            "BINANCE_API_KEY": "myEd25519ApiKey",
            "BINANCE_PRIVATE_KEY_FILE": "/keys/ed25519.pem",
            "BINANCE_PRIVATE_KEY_PASSPHRASE": PASSPHRASE,
        }
    )
    assert (config.private_key_file, config.private_key_passphrase, config.api_secret) == (
        "/keys/ed25519.pem",
        PASSPHRASE,
        "",
    )
    config.validate()
    assert PASSPHRASE not in repr(config)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"BINANCE_API_KEY": "k", "BINANCE_API_SECRET": "s", "BINANCE_PRIVATE_KEY_FILE": "/k.pem"},
            "BINANCE_API_SECRET .* or BINANCE_PRIVATE_KEY_FILE .* not both",
        ),
        ({"BINANCE_PRIVATE_KEY_FILE": "/k.pem"}, "BINANCE_API_KEY is required with BINANCE_PRIVATE_KEY_FILE"),
        ({"BINANCE_PRIVATE_KEY_PASSPHRASE": PASSPHRASE}, "BINANCE_PRIVATE_KEY_PASSPHRASE is set but"),
        ({"BINANCE_ENV": "live", "BINANCE_API_KEY": "k"}, "BINANCE_PRIVATE_KEY_FILE .* or BINANCE_API_SECRET"),
    ],
)
def test_config_refuses_conflicting_or_missing_key_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_env({**TOKENS, **env})


def test_config_validate_refuses_both_a_secret_and_a_key_file_and_neither() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Config(service_token="s", admin_token="a", private_key_file="/k.pem").validate()
    with pytest.raises(ConfigError, match="is required"):
        Config(service_token="s", admin_token="a", api_secret="").validate()
