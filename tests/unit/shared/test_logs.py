import io
import json
import logging

import pytest

from shared.logs import MASK, MaskingFormatter, mask, register_secret


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(MaskingFormatter("test"))
    logger = logging.getLogger("test.masking")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_a_registered_secret_is_masked_in_message_arguments_extra_and_traceback(captured):
    logger, stream = captured
    secret = "configured-secret-value-123456"
    register_secret(secret)
    logger.info("calling with %s", secret, extra={"header": f"x {secret} y"})
    try:
        raise ValueError(f"bad key {secret}")
    except ValueError:
        logger.exception("failed")
    out = stream.getvalue()
    assert secret not in out
    assert out.count(MASK) >= 3  # message argument, extra field, exception text
    first = json.loads(out.splitlines()[0])
    assert first["msg"] == f"calling with {MASK}"


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("authorization: Bearer abcdef0123456789", "abcdef0123456789"),
        ("GET /api/v3/order?symbol=BTCUSDT&timestamp=1&signature=" + "ab" * 32, "ab" * 32),
        # Ed25519 and RSA signatures are base64, URL-encoded in a query string, plain in WebSocket JSON
        (
            "DELETE /api/v3/order?symbol=BTCUSDT&signature=E7luAubOlcRxL10iQszvNCff%2BxJjwJrfajEHj1hOncmsgaSB4NE%2F",
            "E7luAubOlcRxL10",
        ),
        (
            '{"method": "order.place", "params": {"signature": "Qm9vbXZ3a2ZqZGtzbGFqZGZrbGFzamRma2xq+/=="}}',
            "Qm9vbXZ3a2Zq",
        ),
        ("user key tk_01J9ZZZZZZZZZZZZZZZZZZZZZZ_" + "s" * 43, "s" * 43),
        ('{"api_key": "plain-api-key-value"}', "plain-api-key-value"),
        ("X-MBX-APIKEY=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A", "vmPUZE6mv9SD5VNH"),
        ("api_secret=NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP", "NhqPtmdSJYdKjVHjA7PZ"),
    ],
)
def test_unregistered_secrets_are_recognised_by_shape(text, leak):
    masked = mask(text)
    assert leak not in masked
    assert MASK in masked


def test_ordinary_text_is_left_alone():
    text = "order ord_01J9 placed for BTCUSDT quantity 0.00100000"
    assert mask(text) == text
