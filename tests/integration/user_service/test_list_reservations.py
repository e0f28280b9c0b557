"""ListReservations: the reservations of a range of order ids, for the order service's recovery.

On both engines (``engine_client``): the bounds are exclusive, open_only leaves out what is fully
settled or released, pages continue from the last id, and only the service token may call it.
"""

from __future__ import annotations

import grpc

from tests.integration.user_service.helpers import ADMIN, SERVICE, Client, bad_field, bearer, rich_status
from trading.user.v1 import user_service_pb2 as pb


async def _setup(client: Client) -> str:
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "1000", "fund")
    for n in range(1, 6):
        await client.reserve(f"ord_{n}", user, "USDT", f"{n}")
    await client.stub.ReleaseFunds(pb.ReleaseFundsRequest(order_id="ord_2", release_id="all"), metadata=SERVICE)
    await client.stub.ReleaseFunds(
        pb.ReleaseFundsRequest(order_id="ord_3", release_id="part", amount="1"), metadata=SERVICE
    )
    return user


async def _ids(client: Client, **fields: object) -> list[str]:
    response = await client.stub.ListReservations(pb.ListReservationsRequest(**fields), metadata=SERVICE)  # type: ignore[arg-type]
    return [r.order_id for r in response.reservations]


async def test_the_range_is_exclusive_and_ordered_and_open_only_skips_what_is_used_up(engine_client: Client) -> None:
    user = await _setup(engine_client)
    assert await _ids(engine_client) == ["ord_1", "ord_2", "ord_3", "ord_4", "ord_5"]
    assert await _ids(engine_client, after_order_id="ord_1", before_order_id="ord_5") == ["ord_2", "ord_3", "ord_4"]
    assert await _ids(engine_client, open_only=True) == ["ord_1", "ord_3", "ord_4", "ord_5"]
    response = await engine_client.stub.ListReservations(
        pb.ListReservationsRequest(after_order_id="ord_2", before_order_id="ord_4"), metadata=SERVICE
    )
    (third,) = response.reservations
    assert (third.user_id, third.asset, third.reserved, third.released) == (user, "USDT", "3.00000000", "1.00000000")
    assert third.remaining == "2.00000000"


async def test_pages_continue_after_the_last_id_and_open_only_fills_a_page(engine_client: Client) -> None:
    await _setup(engine_client)
    assert await _ids(engine_client, page_size=2) == ["ord_1", "ord_2"]
    assert await _ids(engine_client, page_size=2, after_order_id="ord_2") == ["ord_3", "ord_4"]
    # ord_2 has nothing left: the page is still filled from the ids after it.
    assert await _ids(engine_client, page_size=2, open_only=True) == ["ord_1", "ord_3"]


async def test_a_negative_page_size_is_invalid_argument_naming_it_and_a_large_one_is_lowered(client: Client) -> None:
    code, status = await rich_status(
        client.stub.ListReservations(pb.ListReservationsRequest(page_size=-1), metadata=SERVICE)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(status) == "page_size"
    await _setup(client)
    assert await _ids(client, page_size=5000) == ["ord_1", "ord_2", "ord_3", "ord_4", "ord_5"]


async def test_only_the_service_token_may_list_reservations(client: Client) -> None:
    user = await client.new_user("ann")
    key = await client.new_key(user)
    for metadata in (ADMIN, key, bearer("nonsense")):
        code, _ = await rich_status(client.stub.ListReservations(pb.ListReservationsRequest(), metadata=metadata))
        assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), (metadata, code)
