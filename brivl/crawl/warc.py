"""Pages from WARC files (the Common Crawl format) → the same candidates as a live crawl.

robots.txt responses captured in the WARC files are used for their hosts; other hosts
follow ``CrawlConfig.warc_robots`` (fetch live, allow all, or disallow all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from warcio.archiveiterator import ArchiveIterator

from brivl.crawl.config import CrawlConfig
from brivl.crawl.crawler import Crawler, CrawlOutput, domain_allowed
from brivl.crawl.fetch import Fetched
from brivl.crawl.robots import RobotsFile, origin


def _responses(path: Path, max_bytes: int) -> Iterator[Fetched]:
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            if record.rec_type != "response" or record.http_headers is None:
                continue
            url = record.rec_headers.get_header("WARC-Target-URI") or ""
            status = int(record.http_headers.get_statuscode() or 0)
            headers = {k.lower(): v for k, v in record.http_headers.headers}
            body = record.content_stream().read(max_bytes + 1)
            fetched = Fetched(url, url, status, headers, body)
            if len(body) > max_bytes:
                fetched.error, fetched.detail, fetched.body = "too_large", f"over {max_bytes}", b""
            yield fetched


def crawl_warc_files(
    paths: Iterable[str | Path],
    config: CrawlConfig,
    on_page: Callable[[dict[str, Any]], None] | None = None,
) -> CrawlOutput:
    """Candidates from every HTML response in ``paths`` (in file and record order)."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"WARC file {path} does not exist (accepted: .warc, .warc.gz)")
    fallback: Callable[[str], RobotsFile] | None = {
        "fetch": None,  # the crawler's own guarded fetcher
        "allow": lambda _url: RobotsFile(404, ""),
        "disallow": lambda _url: RobotsFile(0, "", "no robots.txt in the WARC files"),
    }[config.warc_robots]
    crawler = Crawler(config, robots_fetch=fallback)
    for path in paths:
        for fetched in _responses(path, config.max_page_bytes):
            if urlsplit(fetched.url).path == "/robots.txt":
                text = fetched.body.decode("utf-8", errors="replace")
                crawler.robots.preload(origin(fetched.url), RobotsFile(fetched.status, text))
    domains = tuple(d.lower().lstrip(".") for d in config.allowed_domains)
    out = CrawlOutput([], [])
    for path in paths:
        for fetched in _responses(path, config.max_page_bytes):
            if urlsplit(fetched.url).path == "/robots.txt":
                continue
            if domains and not domain_allowed(fetched.url, domains):
                continue
            result = crawler.page_from_response(fetched, depth=0)
            result.record["detail"] = result.record["detail"] or f"warc:{path.name}"
            out.pages.append(result.record)
            out.candidates.extend(result.candidates)
            if on_page:
                on_page(result.record)
    return out
