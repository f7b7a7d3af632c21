"""Scraping a metrics endpoint as Prometheus would: a real HTTP GET, the text parser."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

#: A sample's key: its name and its labels, sorted.
Key = tuple[str, tuple[tuple[str, str], ...]]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        assert response.headers["Content-Type"].startswith("text/plain")
    return body.decode()


async def scrape(url: str) -> dict[Key, float]:
    """Every sample at ``url``, fetched from a thread (the event loop stays free to
    answer the collectors), parsed with prometheus_client's parser."""
    text = await asyncio.to_thread(_get, url)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Key, float], name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (KeyError naming it if missing)."""
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        raise KeyError(f"no sample {name}{labels} in the scrape")
    return samples[key]
