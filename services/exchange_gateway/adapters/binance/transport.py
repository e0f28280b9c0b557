"""The HTTP transport seam: the REST client talks to this, tests put a fake behind it.

``TransportError.sent`` says whether the request may have reached the server: a failure to
connect means it did not (safe to send again); a timeout or a dropped connection means it may
have (outcome unknown).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp
from yarl import URL

if TYPE_CHECKING:
    from services.exchange_gateway.adapters.binance.telemetry import ExchangeTelemetry


@dataclass(frozen=True)
class HttpResponse:
    """Status, headers with lowercase names, and the raw body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class TransportError(Exception):
    """No HTTP answer; ``sent`` is False only when the request certainly did not leave."""

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.sent = sent


class HttpTransport(Protocol):
    async def request(self, method: str, url: str, *, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        """Send one request whose URL is already percent-encoded; raise TransportError without an answer."""
        ...


# Could not connect, or timed out while connecting: the request never left.
_NOT_SENT: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class AiohttpTransport:
    """One shared aiohttp session: keep-alive connections from a pool, no re-encoding of URLs.

    With ``telemetry`` every request is counted, timed and traced (``telemetry.ExchangeTelemetry``).
    """

    def __init__(self, session: aiohttp.ClientSession, telemetry: ExchangeTelemetry | None = None):
        self.session = session
        self.telemetry = telemetry

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        if self.telemetry is None:
            return await self._send(method, url, headers=headers, timeout=timeout)
        with self.telemetry.request(method, url) as record:
            response = await self._send(method, url, headers=headers, timeout=timeout)
            record.status = response.status
            return response

    async def _send(self, method: str, url: str, *, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        # encoded=True: the query string was signed byte for byte and must be sent as it is.
        target = URL(url, encoded=True)
        try:
            async with self.session.request(
                method,
                target,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 5.0)),
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, body)
        except _NOT_SENT as exc:
            # Never put the URL in the message: it carries the signature.
            raise TransportError(f"cannot connect to {target.host}:{target.port} ({type(exc).__name__})", sent=False)
        except TimeoutError:
            raise TransportError(f"no answer from {target.host} within {timeout:.1f}s", sent=True)
        except aiohttp.ClientError as exc:
            raise TransportError(f"connection to {target.host} failed ({type(exc).__name__})", sent=True)
