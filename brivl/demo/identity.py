"""A demo web's identity: what it serves, never where it listens."""

from __future__ import annotations

from typing import Any

from brivl.fingerprint import stable_hash


def site_identity(site: Any) -> str:
    """12 hex characters naming a built demo site (synthetic or clip-art) by its content:
    its kind and config, every picture's truth (path, page, texts, fault, size) and its
    robots.txt. Two sites with one identity answer every request alike."""
    return stable_hash({"kind": type(site).__name__, "config": site.config,
                        "images": site.images, "robots": site.robots_txt}, 12)
