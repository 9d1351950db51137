"""Crawl settings. Every field says what it controls; the dataclass travels as a JSON dict."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CAPTION_FIELDS = ("alt", "figcaption", "title", "surrounding")

# Texts that say nothing about the picture: CMS and camera defaults, link boilerplate.
BOILERPLATE_TEXTS = frozenset({
    "image", "img", "photo", "photograph", "picture", "pic", "pict", "thumbnail", "thumb",
    "click to enlarge", "click here", "enlarge", "zoom", "untitled", "no title", "logo",
    "icon", "banner", "placeholder", "spacer", "blank", "no description", "image description",
    "featured image", "default image", "alt", "alt text", "null", "undefined", "none",
})
_FILE_NAME = re.compile(
    r"^[\w\-. ()]+\.(?:jpe?g|png|gif|webp|bmp|tiff?|svg|avif|heic)$"  # "banner_final_v2.png"
    r"|^(?:img|image|dsc|dscn|dscf|dcim|pxl|photo|pic|screenshot)[-_ ]?\d+\b",  # "IMG_0042"
    re.IGNORECASE,
)


def is_boilerplate(text: str) -> bool:
    """True for a text that names no content: a generic word ("photo", "click to enlarge")
    or a file or camera name ("IMG_0042.JPG", "DSC_1234", "banner_v2.png")."""
    folded = " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
    return folded in BOILERPLATE_TEXTS or bool(_FILE_NAME.match(text.strip()))


@dataclass
class CaptionPolicy:
    """How the training caption is chosen from an image's texts: the first field in
    ``priority`` whose text has at least ``min_chars`` characters and, with
    ``skip_boilerplate``, is not boilerplate (:func:`is_boilerplate`); else the longest
    non-empty one; cut at ``max_chars`` (0: no cut - judging length is the filter's job)."""

    priority: tuple[str, ...] = ("alt", "figcaption", "title", "surrounding")
    min_chars: int = 5
    max_chars: int = 0
    skip_boilerplate: bool = True

    def __post_init__(self) -> None:
        self.priority = tuple(self.priority)
        unknown = [f for f in self.priority if f not in CAPTION_FIELDS]
        if unknown:
            raise ValueError(
                f"caption priority {unknown} unknown; accepted: {list(CAPTION_FIELDS)}"
            )

    def choose(self, texts: dict[str, str]) -> tuple[str, str]:
        """``(caption, source field)``; ``("", "")`` when every field is empty."""
        for name in self.priority:
            text = texts.get(name) or ""
            if len(text) >= self.min_chars and not (self.skip_boilerplate and is_boilerplate(text)):
                return self._cut(text), name
        present = [(len(texts.get(n) or ""), -i, n) for i, n in enumerate(self.priority)]
        length, _, name = max(present, default=(0, 0, ""))
        return (self._cut(texts[name] or ""), name) if length else ("", "")

    def _cut(self, text: str) -> str:
        return text[: self.max_chars] if self.max_chars > 0 else text


@dataclass
class CrawlConfig:
    """What to crawl and how politely."""

    allowed_domains: tuple[str, ...] = ()
    """Hosts (and their subdomains) whose pages are followed; empty = the seeds' hosts."""
    allow_cidrs: tuple[str, ...] = ()
    """Non-public networks the SSRF guard lets through, e.g. ``("127.0.0.1/32",)``."""
    max_depth: int = 3
    """Link hops from a seed (seed pages are depth 0)."""
    max_pages: int = 1000
    """Most pages fetched (robots-disallowed pages are not fetched and do not count)."""
    user_agent: str = "brivl-crawler/0.1 (+https://github.com/brivl/brivl)"
    """User-Agent header sent with every page and robots.txt request."""
    robots_token: str = "brivl"
    """Product token matched against robots.txt groups and robots meta/X-Robots-Tag names."""
    optout_directives: tuple[str, ...] = ("noai", "noimageai")
    """Robots meta (or page X-Robots-Tag) directives that opt a page's images out."""
    workers: int = 8
    """Threads fetching pages."""
    per_host_concurrency: int = 2
    """Most requests in flight to one host."""
    per_host_delay_s: float = 0.0
    """Least seconds between request starts to one host (a robots Crawl-delay, if larger,
    wins)."""
    timeout_s: float = 10.0
    """Connect / per-read timeout of one request."""
    total_timeout_s: float = 30.0
    """Whole-transfer limit of one page."""
    max_page_bytes: int = 5_000_000
    """Pages larger than this are dropped (recorded as ``too_large``)."""
    max_redirects: int = 5
    """Redirect hops followed per fetch (each hop is SSRF- and robots-checked)."""
    check_image_hosts: bool = True
    """Apply the SSRF guard to image URLs too (``decision = "ssrf_blocked"``)."""
    surrounding_paragraphs: int = 1
    """Paragraphs taken before and after an image's figure as its surrounding text."""
    max_text_chars: int = 10_000
    """Cut for each text field (alt, title, figcaption, surrounding); generous, so that the
    filter stage still sees overlong texts."""
    caption: CaptionPolicy = field(default_factory=CaptionPolicy)
    """How the caption is chosen."""
    rows_per_part: int = 100_000
    """Candidates per Parquet part file."""
    warc_robots: str = "fetch"
    """WARC input: hosts without a robots.txt record in the WARC get theirs ``"fetch"``-ed
    live, or are treated as ``"allow"``-all or ``"disallow"``-all."""

    def __post_init__(self) -> None:
        for name in ("allowed_domains", "allow_cidrs", "optout_directives"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [value]
            setattr(self, name, tuple(value))
        if isinstance(self.caption, dict):
            self.caption = CaptionPolicy(**self.caption)
        if self.warc_robots not in ("fetch", "allow", "disallow"):
            raise ValueError(f"warc_robots={self.warc_robots!r}; accepted: fetch, allow, disallow")
        for name in ("max_pages", "workers", "per_host_concurrency", "max_page_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CrawlConfig:
        """Build from a JSON dict; unknown keys raise naming them and the accepted ones."""
        data = dict(data or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown crawl config keys {unknown}; accepted: {sorted(names)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return asdict(self)
