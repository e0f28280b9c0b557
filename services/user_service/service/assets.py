"""The assets the exchange lists, cached: deposits and withdrawals are accepted only in these.

The list comes from an ``ExchangeAssets`` port: the exchange gateway (the base and quote assets of
every symbol it lists) or a fixed list (``USER_ASSETS``). Nothing is asked at start: the launcher
starts the user service before the gateway, so the first deposit or withdrawal loads the list.
After ``refresh_seconds`` the next call refreshes it in the background while the last list keeps
answering; a failed refresh keeps the last list and is tried again after ``retry_seconds``. With
no list at all (the gateway never answered), the call is UNAVAILABLE and the next one asks again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from services.user_service.service.ports import ExchangeAssets
from shared.errors import DomainError, InvalidArgument, Unavailable

log = logging.getLogger("user_service.assets")


class AssetListUnknown(Unavailable):
    """The exchange's asset list has never been loaded (the gateway did not answer)."""

    default_reason = "ASSET_LIST_UNKNOWN"


class FixedAssets:
    """The ``ExchangeAssets`` port over a configured list (``USER_ASSETS``): never asks the exchange."""

    def __init__(self, assets: Iterable[str]):
        self._assets = frozenset(assets)

    async def list_assets(self, timeout: float) -> frozenset[str]:
        """The configured assets."""
        return self._assets


class ListedAssets:
    """The exchange's asset list, loaded on first use and refreshed in the background."""

    def __init__(
        self,
        source: ExchangeAssets,
        *,
        refresh_seconds: float = 60.0,
        retry_seconds: float = 5.0,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.source = source
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self.timeout = timeout
        self.clock = clock
        self._assets: frozenset[str] | None = None
        self._due = 0.0
        self._loading: asyncio.Task[frozenset[str]] | None = None

    async def require(self, asset: str, field: str = "asset") -> None:
        """Raise INVALID_ARGUMENT naming ``field`` unless some listed symbol trades ``asset``."""
        if asset not in await self.current():
            raise InvalidArgument(field, f"{asset} is not traded by any symbol the exchange lists")

    async def current(self) -> frozenset[str]:
        """The last list loaded (refreshing it in the background when due), or load it now if there is none."""
        if self._assets is not None:
            if self._due <= self.clock() and self._loading is None:
                self._load_task()
            return self._assets
        return await asyncio.shield(self._load_task())

    async def aclose(self) -> None:
        """Stop a load in flight (at shutdown, before the gateway channel closes)."""
        task = self._loading
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _load_task(self) -> asyncio.Task[frozenset[str]]:
        task = self._loading
        if task is None:
            task = asyncio.create_task(self._load())
            self._loading = task
            task.add_done_callback(self._loaded)
        return task

    def _loaded(self, task: asyncio.Task[frozenset[str]]) -> None:
        self._loading = None
        if not task.cancelled():
            # Mark a failure as seen: _load logged it, and a background refresh has no awaiter.
            task.exception()

    async def _load(self) -> frozenset[str]:
        try:
            assets = await self.source.list_assets(self.timeout)
            if not assets:
                raise Unavailable("the exchange lists no symbols", reason="NO_SYMBOLS")
        except DomainError as exc:
            self._due = self.clock() + self.retry_seconds
            log.warning("could not load the exchange's asset list", extra={"error": str(exc)})
            if self._assets is None:
                raise AssetListUnknown(
                    "the exchange's asset list is not known yet (the exchange gateway has not given it); retry"
                ) from None
            raise
        self._assets = assets
        self._due = self.clock() + self.refresh_seconds
        return assets
