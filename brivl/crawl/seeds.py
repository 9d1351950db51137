"""Seed URLs checked before a crawl starts: http(s) with a host, or a clear refusal."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from brivl.errors import InputError

ACCEPTED = "an http:// or https:// URL with a host, e.g. https://example.org/"


def check_seeds(seeds: Sequence[str]) -> list[str]:
    """``seeds`` as a list when each is an http(s) URL with a host; else an InputError naming
    the first bad one (``notaurl``, ``ftp://...``, ``https://``)."""
    if isinstance(seeds, str):
        seeds = [seeds]
    for seed in seeds:
        reason = _problem(seed)
        if reason:
            raise InputError(f"seed {seed!r} is not accepted ({reason}); accepted: {ACCEPTED}")
    return list(seeds)


def _problem(seed: object) -> str:
    if not isinstance(seed, str) or not seed.strip():
        return "not a URL"
    try:
        parts = urlsplit(seed.strip())
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"malformed: {exc}"
    if not parts.scheme or "://" not in seed:
        return "not a URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"scheme {parts.scheme!r}"
    if not parts.hostname:
        return "no host"
    return ""
