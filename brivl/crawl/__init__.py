"""Crawl: seed URLs (or WARC files) → image candidates with their texts and robots decisions.

Public API: :class:`CrawlConfig`, :class:`CaptionPolicy`, :func:`run_crawl` (the stage),
:func:`crawl_pages` / :func:`crawl_warc_files` (in memory), :func:`read_candidates`,
:class:`AddressGuard` (the SSRF guard) and :class:`RobotsCache`.
"""

from brivl.crawl.candidates import (
    CANDIDATE_SCHEMA,
    CANDIDATES_DIR,
    PAGES_FILE,
    candidate_id,
    read_candidates,
)
from brivl.crawl.config import CaptionPolicy, CrawlConfig
from brivl.crawl.crawler import crawl_pages
from brivl.crawl.guard import AddressGuard, BlockedURL
from brivl.crawl.robots import RobotsCache, RobotsFile
from brivl.crawl.stage import STAGE, run_crawl
from brivl.crawl.warc import crawl_warc_files

__all__ = [
    "CANDIDATE_SCHEMA",
    "CANDIDATES_DIR",
    "PAGES_FILE",
    "STAGE",
    "AddressGuard",
    "BlockedURL",
    "CaptionPolicy",
    "CrawlConfig",
    "RobotsCache",
    "RobotsFile",
    "candidate_id",
    "crawl_pages",
    "crawl_warc_files",
    "read_candidates",
    "run_crawl",
]
