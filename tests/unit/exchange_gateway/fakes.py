"""Doubles at the HTTP transport seam: scripted answers, recorded requests."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from services.exchange_gateway.adapters.binance.transport import HttpResponse, TransportError


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> str:
        return urlsplit(self.url).query

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query))


def answer(body: Any, status: int = 200, **headers: str) -> HttpResponse:
    return HttpResponse(status, {k.replace("_", "-").lower(): v for k, v in headers.items()}, json.dumps(body).encode())


Script = Callable[[Sent], HttpResponse]


@dataclass
class FakeTransport:
    """Answers each request with the next scripted answer for its path (or ``default``)."""

    server_time: Callable[[], int]
    scripts: dict[tuple[str, str], list[HttpResponse | TransportError]] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)

    def script(self, method: str, path: str, *answers: HttpResponse | TransportError) -> None:
        self.scripts.setdefault((method, path), []).extend(answers)

    def of(self, method: str, path: str) -> list[Sent]:
        return [s for s in self.sent if s.method == method and s.path == path]

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        sent = Sent(method, url, dict(headers))
        self.sent.append(sent)
        queue = self.scripts.get((method, sent.path))
        if queue:
            item = queue.pop(0)
            if isinstance(item, TransportError):
                raise item
            return item
        if sent.path == "/api/v3/time":
            return answer({"serverTime": self.server_time()})
        return answer({})
