"""Crawl settings. Every field says what it controls; the dataclass travels as a JSON dict."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from brivl.config_parse import bounded, config_from_dict

# An image's text fields (brivl.crawl.parse.ImageRef), in the order compose takes them.
CAPTION_FIELDS = ("alt", "title", "figcaption", "sibling", "cell", "heading", "surrounding")
CAPTION_MODES = ("compose", "first")
DEFAULT_PRIORITY = {
    "compose": CAPTION_FIELDS,  # the image's own text, then its card/table, then the page's
    "first": ("alt", "figcaption", "title", "surrounding"),  # the pre-composition rule
}
# compose: most characters taken from each field (0: the whole field). The image's own
# fields are not cut, so the filter still sees (and rejects) an overlong alt.
DEFAULT_FIELD_MAX_CHARS = {
    "alt": 0, "title": 0, "figcaption": 0, "sibling": 300, "cell": 200, "heading": 150,
    "surrounding": 300,
}
MIN_CUT_CHARS = 20  # compose: a field cut to fit the total is added only if this long
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")  # each CJK character is a word of its own
_SENTENCE_END = re.compile(r"[.!?\u2026](?=\s|$)|[\u3002\uff01\uff1f]")
_ENDS_SENTENCE = (".", "!", "?", ":", ";", "\u2026", "\u3002", "\uff01", "\uff1f")

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


def folded_words(text: str) -> str:
    """``" w1 w2 … "``: lower-cased words between spaces, for whole-word containment tests."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters (0: not cut): after the last sentence
    that fits when that keeps at least a third, else at the last space, else hard."""
    if limit <= 0 or len(text) <= limit:
        return text
    window = text[: limit + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= limit]
    if ends and ends[-1] >= limit // 3:
        return text[: ends[-1]].strip()
    space = window.rfind(" ")
    cut = text[:space] if space > 0 else text[:limit]
    return cut.rstrip(" ,;:-\u2013\u2014").strip()


def join_sentences(parts: list[str]) -> str:
    """Parts joined as sentences: ``". "`` after a part that does not end one already."""
    out = ""
    for part in parts:
        if out:
            out += " " if out.endswith(_ENDS_SENTENCE) else ". "
        out += part
    return out


@dataclass
class CaptionPolicy:
    """How an image's training caption is made from its texts (:data:`CAPTION_FIELDS`).

    ``compose`` (the default; BriVL's weak correlation, the caption carries the page's
    context): the usable fields of ``priority`` in order, each cut at its cap, repeats left
    out, joined as sentences, within a total; an image with no usable text of its own gets
    ``""`` (the filter rejects it as too short). ``first`` (the rule before composition):
    the first field of ``priority`` with at least ``min_chars`` characters, else the longest
    non-empty one (boilerplate included: the filter judges it). A field is usable when it is
    non-empty and, with ``skip_boilerplate``, not boilerplate (:func:`is_boilerplate`).
    ``{}`` is the default policy.
    """

    mode: str = bounded("compose", choices=CAPTION_MODES)
    """``"compose"`` or ``"first"``."""
    priority: tuple[str, ...] = ()
    """Fields in the order they are taken; empty: the mode's :data:`DEFAULT_PRIORITY`."""
    field_max_chars: dict[str, int] = field(default_factory=dict)
    """compose: most characters taken from a field (cut after a sentence or word; 0: whole);
    entries given override :data:`DEFAULT_FIELD_MAX_CHARS`."""
    compose_max_chars: int = bounded(400, min=0)
    """compose: fields after the first are added while the caption stays within this (the
    last one cut to fit); the first is kept whole so the filter still judges its length.
    0: no total."""
    context_only: tuple[str, ...] = ("heading",)
    """compose: page-level fields (the same for many images), added to an image's own text
    but never a caption alone."""
    dedupe: bool = True
    """compose: leave out a field an earlier one says already (whole words, any case); an
    earlier one a later field says again in full makes way for it."""
    min_chars: int = bounded(5, min=0)
    """first: the shortest text a field may give."""
    max_chars: int = bounded(0, min=0)
    """Both modes: the caption is cut at this many characters (0: not cut - judging length
    is the filter's job)."""
    skip_boilerplate: bool = True
    """Both modes: boilerplate fields ("click to enlarge", ``IMG_0042.JPG``) are skipped."""

    def __post_init__(self) -> None:
        if self.mode not in CAPTION_MODES:
            raise ValueError(f"crawl.caption.mode={self.mode!r}; accepted: {list(CAPTION_MODES)}")
        self.priority = _field_names("priority", self.priority) or DEFAULT_PRIORITY[self.mode]
        if len(set(self.priority)) != len(self.priority):
            raise ValueError(f"crawl.caption.priority {list(self.priority)} names a field twice")
        self.context_only = _field_names("context_only", self.context_only)
        caps = dict(self.field_max_chars or {})
        _field_names("field_max_chars", caps)
        self.field_max_chars = {**DEFAULT_FIELD_MAX_CHARS, **caps}
        numbers = {f"field_max_chars.{k}": v for k, v in self.field_max_chars.items()}
        numbers.update(compose_max_chars=self.compose_max_chars, min_chars=self.min_chars,
                       max_chars=self.max_chars)
        for name, value in numbers.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"crawl.caption.{name}={value!r}; accepted: an integer >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CaptionPolicy:
        """Build from a JSON dict, every field checked (ConfigError names it)."""
        return config_from_dict(cls, data, "crawl.caption")

    def choose(self, texts: dict[str, str]) -> tuple[str, str]:
        """``(caption, source)``: source names the fields used, joined by ``+`` in caption
        order (e.g. ``"alt+figcaption+heading"``); ``("", "")`` when nothing is usable."""
        if self.mode == "compose":
            caption, source = self._compose(texts)
        else:
            caption, source = self._first(texts)
        if not caption and self.mode == "first":
            caption, source = self._fallback(texts)
        return (caption[: self.max_chars] if self.max_chars > 0 else caption), source

    def _usable(self, text: str) -> bool:
        return bool(text) and not (self.skip_boilerplate and is_boilerplate(text))

    def _first(self, texts: dict[str, str]) -> tuple[str, str]:
        for name in self.priority:
            text = texts.get(name) or ""
            if len(text) >= self.min_chars and self._usable(text):
                return text, name
        return "", ""

    def _compose(self, texts: dict[str, str]) -> tuple[str, str]:
        parts: list[tuple[str, str, str]] = []  # (field, its whole text folded, text used)
        own = False  # a field of the image's own (not context_only) has usable text
        for name in self.priority:
            text = (texts.get(name) or "").strip()
            if not self._usable(text):
                continue
            own = own or name not in self.context_only
            part = (name, folded_words(text), clip(text, self.field_max_chars.get(name, 0)))
            parts = self._merge(parts, part) if self.dedupe else [*parts, part]
        if not own:
            return "", ""
        return self._fit([(name, used) for name, _, used in parts])

    def _merge(self, parts: list[tuple[str, str, str]], part: tuple[str, str, str]
               ) -> list[tuple[str, str, str]]:
        """``parts`` with ``part`` added, unless an earlier part says it already; earlier
        parts it says again in full make way for it (it takes the first one's place). A part
        equal to a context-only one takes its place, so the source names the image's own
        field."""
        name, folded, used = part
        for i, (other, earlier, _) in enumerate(parts):
            if folded in earlier:
                context = other in self.context_only and name not in self.context_only
                if context and earlier == folded:
                    return [*parts[:i], part, *parts[i + 1 :]]
                return parts  # said already
        said = folded_words(used)
        at = next((i for i, p in enumerate(parts) if p[1] in said), len(parts))
        return [*parts[:at], part, *(p for p in parts[at:] if p[1] not in said)]

    def _fit(self, parts: list[tuple[str, str]]) -> tuple[str, str]:
        """Parts joined while within ``compose_max_chars`` (the first one always)."""
        names, texts = [parts[0][0]], [parts[0][1]]
        limit = self.compose_max_chars
        for name, text in parts[1:]:
            room = limit - len(join_sentences(texts)) - 2 if limit else len(text)
            piece = clip(text, room) if room > 0 else ""
            if piece != text and len(piece) < MIN_CUT_CHARS:
                break  # no room left worth a fragment
            names.append(name)
            texts.append(piece)
            if piece != text:
                break
        return join_sentences(texts), "+".join(names)

    def _fallback(self, texts: dict[str, str]) -> tuple[str, str]:
        present = [(len(texts.get(n) or ""), -i, n) for i, n in enumerate(self.priority)]
        length, _, name = max(present, default=(0, 0, ""))
        return (texts[name], name) if length else ("", "")


def _field_names(option: str, names) -> tuple[str, ...]:
    """``names`` (a list/tuple, or dict keys) as a tuple; unknown field names raise."""
    if isinstance(names, str):
        names = [names]
    names = tuple(names)
    unknown = [n for n in names if n not in CAPTION_FIELDS]
    if unknown:
        raise ValueError(
            f"crawl.caption.{option} names unknown field(s) {unknown}; "
            f"accepted: {list(CAPTION_FIELDS)}"
        )
    return names


@dataclass
class CrawlConfig:
    """What to crawl and how politely."""

    allowed_domains: tuple[str, ...] = ()
    """Hosts (and their subdomains) whose pages are followed; empty = the seeds' hosts."""
    allow_cidrs: tuple[str, ...] = ()
    """Non-public networks the SSRF guard lets through, e.g. ``("127.0.0.1/32",)``."""
    max_depth: int = bounded(3, min=0, max=100)
    """Link hops from a seed (seed pages are depth 0)."""
    pagination_same_depth: bool = True
    """``rel=next`` links (``<link rel=next>``, ``<a rel=next>``) keep the page's depth, so a
    paginated gallery is followed to its end (``max_pages`` still bounds the crawl)."""
    max_pages: int = bounded(1000, min=1, max=10_000_000)
    """Most pages fetched (robots-disallowed pages are not fetched and do not count)."""
    user_agent: str = "brivl-crawler/0.1 (+https://github.com/brivl/brivl)"
    """User-Agent header sent with every page and robots.txt request."""
    robots_token: str = "brivl"
    """Product token matched against robots.txt groups and robots meta/X-Robots-Tag names."""
    optout_directives: tuple[str, ...] = ("noai", "noimageai")
    """Robots meta (or page X-Robots-Tag) directives that opt a page's images out."""
    workers: int = bounded(8, min=1, max=256)
    """Threads fetching pages."""
    per_host_concurrency: int = bounded(2, min=1, max=256)
    """Most requests in flight to one host."""
    per_host_delay_s: float = bounded(0.0, min=0, max=3600)
    """Least seconds between request starts to one host (a robots Crawl-delay, if larger,
    wins)."""
    timeout_s: float = bounded(10.0, gt=0, max=3600)
    """Connect / per-read timeout of one request."""
    total_timeout_s: float = bounded(30.0, gt=0, max=86_400)
    """Whole-transfer limit of one page."""
    max_page_bytes: int = bounded(5_000_000, min=1, max=1_000_000_000)
    """Pages larger than this are dropped (recorded as ``too_large``)."""
    max_redirects: int = bounded(5, min=0, max=50)
    """Redirect hops followed per fetch (each hop is SSRF- and robots-checked)."""
    check_image_hosts: bool = True
    """Apply the SSRF guard to image URLs too (``decision = "ssrf_blocked"``)."""
    surrounding_paragraphs: int = bounded(1, min=0, max=100)
    """Paragraphs taken before and after an image's figure as its surrounding text."""
    max_text_chars: int = bounded(10_000, min=0, max=10_000_000)
    """Cut for each raw text field of a candidate (alt, title, figcaption, sibling, cell,
    heading, surrounding); generous, so that the filter stage still sees overlong texts."""
    caption: CaptionPolicy = field(default_factory=CaptionPolicy)
    """How the caption is made from an image's texts (composed by default)."""
    rows_per_part: int = bounded(100_000, min=1, max=100_000_000)
    """Candidates per Parquet part file."""
    warc_robots: str = bounded("fetch", choices=("fetch", "allow", "disallow"))
    """WARC input: hosts without a robots.txt record in the WARC get theirs ``"fetch"``-ed
    live, or are treated as ``"allow"``-all or ``"disallow"``-all."""

    def __post_init__(self) -> None:
        for name in ("allowed_domains", "allow_cidrs", "optout_directives"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [value]
            setattr(self, name, tuple(value))
        if isinstance(self.caption, dict):
            self.caption = CaptionPolicy.from_dict(self.caption)
        if self.warc_robots not in ("fetch", "allow", "disallow"):
            raise ValueError(f"warc_robots={self.warc_robots!r}; accepted: fetch, allow, disallow")
        for name in ("max_pages", "workers", "per_host_concurrency", "max_page_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CrawlConfig:
        """Build from a JSON dict, every field checked (ConfigError names it)."""
        return config_from_dict(cls, data, "crawl")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return asdict(self)
