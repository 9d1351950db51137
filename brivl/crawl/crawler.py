"""Breadth-first crawl from seed URLs: polite, robots-first, SSRF-guarded.

Per level of the breadth-first search, pages are fetched by a thread pool; a per-host gate
limits concurrency and spaces request starts by ``per_host_delay_s`` (or the host's
robots.txt Crawl-delay when larger). robots.txt is consulted before every fetch and every
redirect hop. Results keep discovery order, so a crawl of an unchanged site is repeatable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from brivl.crawl import candidates as cand
from brivl.crawl.config import CrawlConfig
from brivl.crawl.fetch import Fetched, Fetcher, decode_html
from brivl.crawl.guard import AddressGuard, BlockedURL
from brivl.crawl.parse import ParsedPage, directives, normalise_url, parse_page
from brivl.crawl.robots import ALLOWED, DISALLOWED, UNAVAILABLE, RobotsCache, RobotsFile

HTML_TYPES = ("text/html", "application/xhtml+xml", "")


class HostGate:
    """Per-host concurrency limit and spacing between request starts."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._sems: dict[str, threading.Semaphore] = {}
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, host: str, delay_s: float) -> None:
        with self._lock:
            sem = self._sems.setdefault(host, threading.Semaphore(self.concurrency))
        sem.acquire()
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + delay_s
        if start > now:
            time.sleep(start - now)

    def release(self, host: str) -> None:
        self._sems[host].release()


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def domain_allowed(url: str, domains: Iterable[str]) -> bool:
    """``url``'s host is one of ``domains`` or a subdomain of one."""
    host = host_of(url)
    return any(host == d or host.endswith("." + d) for d in domains)


@dataclass
class PageResult:
    """One page's record and the candidates found on it."""

    record: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    next_pages: list[str] = field(default_factory=list)  # rel=next pagination, also in links


class Crawler:
    """Holds the shared machinery (guard, fetcher, robots cache, host gate) of one crawl."""

    def __init__(
        self, config: CrawlConfig, robots_fetch: Callable[[str], RobotsFile] | None = None
    ) -> None:
        self.config = config
        self.guard = AddressGuard(config.allow_cidrs)
        self.fetcher = Fetcher(
            self.guard,
            config.user_agent,
            timeout_s=config.timeout_s,
            total_timeout_s=config.total_timeout_s,
            max_bytes=config.max_page_bytes,
            max_redirects=config.max_redirects,
        )
        self.robots = RobotsCache(robots_fetch or self.fetcher.fetch_robots, config.robots_token)
        self.gate = HostGate(config.per_host_concurrency)

    def refusal(self, url: str) -> tuple[str, str] | None:
        """``(reason, detail)`` when ``url`` must not be fetched at all, else ``None``."""
        try:
            self.guard.check(url)
        except BlockedURL as exc:
            return exc.reason, exc.detail
        decision = self.robots.decision(url)
        if decision == UNAVAILABLE:
            return "robots_unavailable", "robots.txt could not be fetched: nothing is fetched"
        if decision != ALLOWED:
            return "robots_disallowed", "disallowed by robots.txt"
        return None

    # -- one page ---------------------------------------------------------------------
    def fetch_page(self, url: str, depth: int) -> PageResult:
        """Fetch (robots + SSRF checked), parse, and turn a page into candidates.

        Whatever a page does, it ends as its own record: an unexpected failure becomes the
        outcome ``page_error`` (with the exception in ``detail``) and the crawl goes on.
        """
        try:
            host = host_of(url)
            delay = max(self.config.per_host_delay_s, self.robots.crawl_delay(url))
            self.gate.acquire(host, delay)
            try:
                fetched = self.fetcher.fetch(url, robots_allowed=self.robots.allowed)
            finally:
                self.gate.release(host)
            return self.page_from_response(fetched, depth)
        except Exception as exc:  # noqa: BLE001 - one hostile page must not end the crawl
            record = page_record(url, depth, datetime.now(timezone.utc), "page_error")
            record.update(error="page_error", detail=f"{type(exc).__name__}: {exc}"[:300])
            return PageResult(record)

    def page_from_response(self, fetched: Fetched, depth: int) -> PageResult:
        """Records and candidates from a response (live or from a WARC record)."""
        now = datetime.now(timezone.utc)
        record = page_record(fetched.url, depth, now)
        record.update(
            final_url=fetched.final_url,
            status=fetched.status,
            error=fetched.error,
            detail=fetched.detail,
            content_type=fetched.content_type,
            elapsed_s=fetched.elapsed_s,
        )
        if fetched.error:
            record["outcome"] = fetched.error
            return PageResult(record)
        if not fetched.ok:
            record["outcome"] = f"http_{fetched.status}"
            return PageResult(record)
        if fetched.content_type not in HTML_TYPES:
            record["outcome"] = "not_html"
            return PageResult(record)
        text, encoding = decode_html(fetched.body, fetched.headers.get("content-type", ""))
        page = parse_page(
            text,
            fetched.final_url,
            robots_token=self.config.robots_token,
            surrounding_paragraphs=self.config.surrounding_paragraphs,
            max_text_chars=self.config.max_text_chars,
        )
        header_directives = directives(
            fetched.headers.get("x-robots-tag", ""), self.config.robots_token
        )
        record.update(
            outcome="fetched", encoding=encoding, n_links=len(page.links), n_images=len(page.images)
        )
        rows = self.candidates_of(page, fetched.final_url, depth, now, header_directives)
        return PageResult(record, rows, page.links, page.next_pages)

    def candidates_of(
        self,
        page: ParsedPage,
        page_url: str,
        depth: int,
        now: datetime,
        header_directives: set[str],
    ) -> list[dict[str, Any]]:
        optout = set(self.config.optout_directives)
        page_decision = cand.ALLOWED
        if page.robots_directives & optout:
            page_decision = cand.OPTOUT_META
        elif header_directives & optout:
            page_decision = cand.OPTOUT_PAGE_HEADER
        rows, seen = [], set()
        for image in page.images:
            if image.image_url in seen:
                continue
            seen.add(image.image_url)
            if self.config.check_image_hosts and not self.guard.is_allowed(image.image_url):
                robots, decision = DISALLOWED, cand.SSRF_BLOCKED  # its robots.txt is unreachable
            elif (robots := self.robots.decision(image.image_url)) != ALLOWED:
                decision = cand.ROBOTS_DISALLOWED
            else:
                decision = page_decision
            rows.append(
                cand.candidate_row(
                    image,
                    page_url,
                    depth=depth,
                    crawl_time=now,
                    robots=robots,
                    decision=decision,
                    config=self.config,
                )
            )
        return rows


def page_record(url: str, depth: int, now: datetime, outcome: str = "") -> dict[str, Any]:
    """An empty ``pages.parquet`` row."""
    return {
        "url": url,
        "final_url": url,
        "depth": depth,
        "outcome": outcome,
        "status": 0,
        "error": "",
        "detail": "",
        "content_type": "",
        "encoding": "",
        "n_links": 0,
        "n_images": 0,
        "fetched_at": now,
        "elapsed_s": 0.0,
    }


def links_to_follow(result: PageResult, config: CrawlConfig) -> list[tuple[str, int]]:
    """``(link, depth)`` of a page's links within ``max_depth``: one hop deeper, except
    ``rel=next`` pagination, which keeps the page's depth with ``pagination_same_depth``."""
    depth = result.record["depth"]
    same = set(result.next_pages) if config.pagination_same_depth else set()
    out = []
    for link in result.links:
        hop = depth if link in same else depth + 1
        if hop <= config.max_depth:
            out.append((link, hop))
    return out


@dataclass
class CrawlOutput:
    """Everything a crawl produced, in discovery order."""

    pages: list[dict[str, Any]]
    candidates: list[dict[str, Any]]


def crawl_pages(
    seeds: Iterable[str],
    config: CrawlConfig,
    on_page: Callable[[dict[str, Any]], None] | None = None,
) -> CrawlOutput:
    """Breadth-first crawl from ``seeds``; ``on_page(record)`` is called per page handled."""
    crawler = Crawler(config)
    start = [u for u in (normalise_url(s, s) for s in seeds) if u]
    domains = tuple(d.lower().lstrip(".") for d in config.allowed_domains) or tuple(
        sorted({host_of(u) for u in start})
    )
    seen: set[str] = set(start)
    frontier = [(u, 0) for u in dict.fromkeys(start)]
    pages: list[dict[str, Any]] = []
    candidates: list[dict[str, Any]] = []
    fetched = 0
    with ThreadPoolExecutor(config.workers, thread_name_prefix="crawl") as pool:
        while frontier and fetched < config.max_pages:
            todo = []
            for url, depth in frontier:
                refused = crawler.refusal(url)
                if refused:
                    record = page_record(url, depth, datetime.now(timezone.utc), refused[0])
                    record["error"], record["detail"] = refused
                    pages.append(record)
                    if on_page:
                        on_page(record)
                elif len(todo) + fetched < config.max_pages:
                    todo.append((url, depth))
            fetched += len(todo)
            next_frontier = []
            for result in pool.map(lambda item: crawler.fetch_page(*item), todo):
                pages.append(result.record)
                candidates.extend(result.candidates)
                if on_page:
                    on_page(result.record)
                for link, depth in links_to_follow(result, config):
                    if link not in seen and domain_allowed(link, domains):
                        seen.add(link)
                        next_frontier.append((link, depth))
            frontier = next_frontier
    return CrawlOutput(pages, candidates)
