"""The generated images of a watch as its page shows them, with `templates/_images.html`: a
thumbnail linking to the full size when the image's host is in `ui.image_hosts` (the hosts the
pages' Content-Security-Policy lets the browser load images from), else a link only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from service import events, image_hosts
from service.image_hosts import ImageHost
from service.store.base import EventRecord


@dataclass(frozen=True, slots=True)
class Image:
    url: str
    thumbnail: bool  # False: shown as a link only


def final_image_urls(recorded: Sequence[EventRecord]) -> list[str]:
    """The `image_urls` of the watch's final event, each checked again as when it was built
    (an http(s) URL of a public host), so that a page never links to another scheme."""
    final = next((event for event in recorded if event.final), None)
    try:
        envelope = orjson.loads(final.body) if final is not None else None
    except orjson.JSONDecodeError:
        return []
    urls = envelope.get("image_urls") if isinstance(envelope, dict) else None
    if not isinstance(urls, list):
        return []
    return [url for url in urls if isinstance(url, str) and events.image_url(url)]


def shown(urls: Sequence[str], hosts: tuple[ImageHost, ...]) -> list[Image]:
    return [Image(url, image_hosts.allowed(url, hosts)) for url in urls]


def img_src(hosts: tuple[ImageHost, ...]) -> str:
    """The policy's `img-src` directive: the bridge's own images and those of `hosts`."""
    return " ".join(["img-src 'self'", *dict.fromkeys(host.source for host in hosts)])
