"""robots.txt: fetched once per host (scheme + authority), consulted before every fetch.

Rules follow RFC 9309 and fail closed: a 2xx robots.txt is parsed (protego), a file over
500 KiB up to that limit; a 4xx other than 429 means no rules (all allowed); a 5xx, a 429,
a timeout, a network error, a truncated body or a refused address means "unavailable",
treated as *disallow everything* for that host, because fetching then would be a guess.
Callers that keep results across runs record "unavailable" apart from "disallowed": it is
transient, and a later run asks again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from protego import Protego

ALLOWED = "allowed"
DISALLOWED = "disallowed"
UNAVAILABLE = "unavailable"
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least the first 500 KiB


@dataclass(frozen=True)
class RobotsFile:
    """One host's robots.txt as fetched: ``status`` (HTTP code, 0 = unreachable) and text."""

    status: int
    text: str
    error: str = ""

    @property
    def available(self) -> bool:
        """A usable answer: rules (2xx) or none at all (4xx but 429)."""
        return not self.error and (200 <= self.status < 300 or _no_rules(self.status))


def _no_rules(status: int) -> bool:
    return 400 <= status < 500 and status != 429


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL (the key robots.txt applies to)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


class RobotsCache:
    """Thread-safe robots.txt cache. ``fetch(robots_url) -> RobotsFile`` does the I/O."""

    def __init__(self, fetch: Callable[[str], RobotsFile], user_agent: str) -> None:
        self._fetch = fetch
        self.user_agent = user_agent
        self._rules: dict[str, tuple[RobotsFile, Protego | None]] = {}
        self._host_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def preload(self, site: str, robots: RobotsFile) -> None:
        """Use an already known robots.txt for ``site`` (e.g. one captured in a WARC file)."""
        with self._lock:
            self._rules[origin(site)] = (robots, _parse(robots))

    def _entry(self, url: str) -> tuple[RobotsFile, Protego | None]:
        key = origin(url)
        with self._lock:
            if key in self._rules:
                return self._rules[key]
            host_lock = self._host_locks.setdefault(key, threading.Lock())
        with host_lock:
            with self._lock:
                if key in self._rules:
                    return self._rules[key]
            robots = self._fetch(f"{key}/robots.txt")
            entry = (robots, _parse(robots))
            with self._lock:
                self._rules[key] = entry
            return entry

    def decision(self, url: str) -> str:
        """``"allowed"``, ``"disallowed"`` or ``"unavailable"`` (robots.txt could not be
        had: fetching is not allowed) for ``url`` with our user agent."""
        robots, rules = self._entry(url)
        if not robots.available:
            return UNAVAILABLE
        if rules is None:
            return ALLOWED
        return ALLOWED if rules.can_fetch(url, self.user_agent) else DISALLOWED

    def allowed(self, url: str) -> bool:
        return self.decision(url) == ALLOWED

    def crawl_delay(self, url: str) -> float:
        """The host's Crawl-delay for our user agent, 0 when none."""
        _, rules = self._entry(url)
        delay = rules.crawl_delay(self.user_agent) if rules is not None else None
        return float(delay or 0.0)

    def snapshot(self) -> dict[str, RobotsFile]:
        """Every robots.txt fetched so far, by origin (to hand to another process)."""
        with self._lock:
            return {k: v[0] for k, v in self._rules.items()}


def _parse(robots: RobotsFile) -> Protego | None:
    if robots.available and 200 <= robots.status < 300:
        return Protego.parse(robots.text)
    return None
