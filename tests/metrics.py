"""Prometheus samples as the tests read them: {(sample name, sorted labels): value}."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    """The exposition ``text`` parsed by prometheus_client."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    """GET the /metrics endpoint ``url`` (it must answer 200) and parse it."""
    async with session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return parse_samples(text)
