import pytest

from shared.errors import InvalidArgument
from shared.paging import decode_page_token, encode_page_token


@pytest.mark.parametrize("position", ["ord_01J9ZZ", 42, "1700000000000:7"])
def test_a_token_gives_back_its_position_in_the_same_scope(position: str | int) -> None:
    token = encode_page_token(position, "orders|usr_1|BTCUSDT")
    assert decode_page_token(token, "orders|usr_1|BTCUSDT") == position


def test_a_token_is_url_safe_without_padding() -> None:
    token = encode_page_token("a/b+c?" * 5, "x")
    assert "=" not in token and "+" not in token and "/" not in token


def test_a_token_reused_with_other_filters_is_refused() -> None:
    token = encode_page_token("ord_1", "orders|usr_1|BTCUSDT")
    with pytest.raises(InvalidArgument, match="start again without a page token"):
        decode_page_token(token, "orders|usr_1|ETHUSDT")


@pytest.mark.parametrize("token", ["not base64!", "e30", "bm90IGpzb24"])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument, match="is not a page token of this list"):
        decode_page_token(token, "orders")
