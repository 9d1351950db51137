"""robots.txt: fetched once per host (scheme + authority), consulted before every fetch.

Rules follow RFC 9309: a 2xx robots.txt is parsed (protego); 4xx means no rules (all
allowed); a 5xx, a network error or a refused address means "unreachable", treated as
*disallow everything* for that host, because fetching then would be a guess.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from protego import Protego

ALLOWED = "allowed"
DISALLOWED = "disallowed"


@dataclass(frozen=True)
class RobotsFile:
    """One host's robots.txt as fetched: ``status`` (HTTP code, 0 = unreachable) and text."""

    status: int
    text: str
    error: str = ""


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
        """``"allowed"`` or ``"disallowed"`` for fetching ``url`` with our user agent."""
        robots, rules = self._entry(url)
        if rules is None:
            return ALLOWED if 400 <= robots.status < 500 else DISALLOWED
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
    if 200 <= robots.status < 300:
        return Protego.parse(robots.text)
    return None
