"""The exchange's asset list: loaded on first use, refreshed in the background, kept when a refresh fails."""

from __future__ import annotations

import asyncio

import pytest

from services.user_service.service.assets import AssetListUnknown, FixedAssets, ListedAssets
from shared.errors import InvalidArgument, Unavailable

LISTED = frozenset({"BTC", "USDT", "BNB"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """An ExchangeAssets double: answers ``assets``, or raises Unavailable while ``down``."""

    def __init__(self, assets: frozenset[str] = LISTED):
        self.assets = assets
        self.down = False
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def list_assets(self, timeout: float) -> frozenset[str]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise Unavailable("exchange gateway: connection refused")
        return self.assets


def listed(source: Source, clock: Clock) -> ListedAssets:
    return ListedAssets(source, refresh_seconds=60, retry_seconds=5, clock=clock)


async def settle_background() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_nothing_is_asked_before_the_first_use_and_then_once() -> None:
    source, clock = Source(), Clock()
    assets = listed(source, clock)
    assert source.calls == 0
    await assets.require("BTC")
    await assets.require("USDT")
    clock.now += 59
    await assets.require("BNB")
    assert source.calls == 1


async def test_an_asset_no_symbol_trades_is_invalid_argument_naming_the_field() -> None:
    assets = listed(Source(), Clock())
    with pytest.raises(InvalidArgument) as caught:
        await assets.require("DOGE")
    assert caught.value.field == "asset"
    assert "DOGE" in caught.value.description


async def test_with_no_list_at_all_the_call_is_unavailable_and_the_next_one_asks_again() -> None:
    source, clock = Source(), Clock()
    source.down = True
    assets = listed(source, clock)
    with pytest.raises(AssetListUnknown) as caught:
        await assets.require("BTC")
    assert caught.value.code.name == "UNAVAILABLE"
    assert "not known yet" in caught.value.message
    source.down = False
    await assets.require("BTC")
    assert source.calls == 2


async def test_an_empty_answer_is_not_taken_for_a_list() -> None:
    source = Source(frozenset())
    assets = listed(source, Clock())
    with pytest.raises(AssetListUnknown):
        await assets.require("BTC")
    source.assets = LISTED
    await assets.require("BTC")


async def test_a_due_refresh_answers_from_the_last_list_and_applies_the_new_one_after() -> None:
    source, clock = Source(), Clock()
    assets = listed(source, clock)
    await assets.require("BNB")
    source.assets = frozenset({"BTC", "USDT", "ETH"})
    clock.now += 60
    await assets.require("BNB")  # still the last list: the refresh runs in the background
    await settle_background()
    assert source.calls == 2
    await assets.require("ETH")
    with pytest.raises(InvalidArgument):
        await assets.require("BNB")


async def test_a_failed_refresh_keeps_the_last_list_and_is_retried_later() -> None:
    source, clock = Source(), Clock()
    assets = listed(source, clock)
    await assets.require("BTC")
    source.down = True
    clock.now += 61
    await assets.require("BTC")
    await settle_background()
    assert source.calls == 2
    await assets.require("USDT")
    await settle_background()
    assert source.calls == 2, "not asked again before retry_seconds"
    clock.now += 5
    source.down = False
    source.assets = frozenset({"ETH", "USDT"})
    await assets.require("BTC")
    await settle_background()
    assert source.calls == 3
    await assets.require("ETH")


async def test_concurrent_first_calls_share_one_request() -> None:
    source = Source()
    source.gate = asyncio.Event()
    assets = listed(source, Clock())
    calls = [asyncio.create_task(assets.require(a)) for a in ("BTC", "USDT", "BNB")]
    await settle_background()
    source.gate.set()
    await asyncio.gather(*calls)
    assert source.calls == 1


async def test_a_fixed_list_is_what_it_says() -> None:
    assets = ListedAssets(FixedAssets(["BTC", "USDT"]))
    await assets.require("USDT")
    with pytest.raises(InvalidArgument):
        await assets.require("BNB")
