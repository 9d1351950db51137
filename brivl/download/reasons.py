"""Normalised reasons for candidates that were not downloaded.

Pre-download decisions come from the crawl (``robots_disallowed``, ``optout_meta``,
``optout_page_header``, ``ssrf_blocked``) or from the download's own re-check. img2dataset
failures are mapped from its free-text ``error_message`` by :func:`reason_of`.

Reasons in :data:`TRANSIENT` say nothing about the candidate itself (robots.txt could not
be fetched): a rerun of the same download asks again instead of keeping the rejection.
Failures for which :func:`retryable` holds (a timeout, a dropped connection, a 5xx or a
429) are worth trying again later: ``brivl download --retry-transient`` retries those rows
only (:mod:`brivl.download.retry`); a 404, robots.txt or an opt-out are final.
"""

from __future__ import annotations

import re

ROBOTS_DISALLOWED = "robots_disallowed"
ROBOTS_UNAVAILABLE = "robots_unavailable"
SSRF_BLOCKED = "ssrf_blocked"
OPTOUT_HEADER = "optout_header"
TIMEOUT = "timeout"
NOT_IMAGE = "not_image"
TRUNCATED = "truncated"
DECOMPRESSION_BOMB = "decompression_bomb"
REDIRECT_LOOP = "redirect_loop"
CONNECTION_ERROR = "connection_error"
MISSING = "missing_from_output"
NO_URL = "no_image_url"  # a candidates row with an empty image_url
TRANSIENT = frozenset({ROBOTS_UNAVAILABLE})
RETRYABLE = frozenset({TIMEOUT, CONNECTION_ERROR, "http_429"})  # and every http_5xx

# markers the guarded downloader puts into its error messages
GUARD_MARKER = "brivl-guard:"
SNIFF_NOT_IMAGE = "not an image"
SNIFF_TRUNCATED = "truncated"
SNIFF_BOMB = "decompression bomb"

_HTTP = re.compile(r"HTTP Error (\d{3})")
_RULES: tuple[tuple[str, str], ...] = (
    ("disallowed by X-Robots-Tag", OPTOUT_HEADER),
    ("would lead to an infinite loop", REDIRECT_LOOP),
    (SNIFF_BOMB, DECOMPRESSION_BOMB),
    ("CV_IO_MAX_IMAGE_PIXELS", DECOMPRESSION_BOMB),
    ("DecompressionBomb", DECOMPRESSION_BOMB),
    ("image area too large", "image_too_large"),
    ("image too small", "image_too_small"),
    ("aspect ratio too large", "aspect_ratio"),
    (SNIFF_NOT_IMAGE, NOT_IMAGE),
    (SNIFF_TRUNCATED, TRUNCATED),
    ("IncompleteRead", TRUNCATED),
    ("Image decoding error", "undecodable"),
    ("timed out", TIMEOUT),
    ("body too large", "too_large"),
    ("Connection refused", CONNECTION_ERROR),
    ("Connection reset", CONNECTION_ERROR),
    ("Remote end closed connection", CONNECTION_ERROR),
    ("Name or service not known", "dns_error"),
)


def reason_of(error_message: str | None) -> str:
    """A short reason code for an img2dataset ``error_message``.

    Codes: ``http_<status>``, ``redirect_loop``, ``optout_header``, ``timeout``,
    ``not_image``, ``truncated``, ``decompression_bomb``, ``robots_disallowed``,
    ``robots_unavailable``, ``bad_scheme`` and ``ssrf_blocked`` (a redirect hop refused by
    the guard), ``connection_error``,
    ``dns_error``, ``too_large``, ``image_too_small``/``image_too_large``/``aspect_ratio`` (img2dataset's
    own limits), ``undecodable``; anything else is ``other:<first 60 characters>``.
    """
    message = error_message or ""
    if GUARD_MARKER in message:
        code = message.split(GUARD_MARKER, 1)[1].split(":", 1)[0].strip()
        return code or "other:guard"
    for needle, code in _RULES[:2]:
        if needle in message:
            return code
    match = _HTTP.search(message)
    if match:
        return f"http_{match.group(1)}"
    for needle, code in _RULES[2:]:
        if needle in message:
            return code
    return "other:" + " ".join(message.split())[:60]


def retryable(reason: str) -> bool:
    """Whether a download failure may succeed when tried again: timeout, connection error,
    HTTP 429 or any 5xx (not 404, robots, opt-outs, bad images)."""
    return reason in RETRYABLE or (reason.startswith("http_5") and len(reason) == 8)
