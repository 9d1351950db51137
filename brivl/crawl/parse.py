"""HTML parsing (selectolax): links to follow, images with every text around them, opt-outs.

An image's texts are kept field by field (:class:`ImageRef`), so the caption composed from
them (:class:`brivl.crawl.config.CaptionPolicy`) can be audited against what the page said.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from urllib.parse import urldefrag, urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from brivl.crawl import licence as rights

BLOCK_TAGS = {"p", "div", "figure", "section", "article", "li", "td", "blockquote", "main", "body"}
TEXT_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote"}
HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")
NON_TEXT_TAGS = {"script", "style", "noscript", "template", "svg", "select", "button"}
# a card is an element holding one image and its texts; these never count as one
NOT_CARD_TAGS = {"html", "body", "main", "p", "blockquote", "table", "tbody", "thead", "tr"}
CARD_LEVELS = 3  # ancestors of an image (or heading) searched for its card
CELL_TAGS = {"td", "th"}
_NO_FIGCAPTION = frozenset({"figcaption"})
# image types an <picture><source type=...> is taken for (what the download/filter decode)
RASTER_TYPES = frozenset({
    "image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/gif", "image/bmp",
})
RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
_SPACE = re.compile(r"\s+")


@dataclass
class ImageRef:
    """One ``<img>`` with the texts around it, as found on the page (each may be ``""``).

    ``alt``/``title``: its attributes (``title`` falls back to a wrapping link's);
    ``figcaption``: its ``<figure>``'s; ``sibling``: the other text of its card (the nearest
    element holding only this image, e.g. ``<div class=card><img><h3>…</h3></div>``);
    ``cell``: the nearest table cell beside (or below) its ``<td>`` that holds text and no
    image; ``heading``: the nearest section heading before it; ``surrounding``: the
    paragraph holding it, or the paragraphs before and after its figure/block.
    """

    image_url: str
    alt: str = ""
    title: str = ""
    figcaption: str = ""
    sibling: str = ""
    cell: str = ""
    heading: str = ""
    surrounding: str = ""
    licence: str = ""  # declared licence (brivl.crawl.licence): the image's own, else the page's
    licence_source: str = ""  # where: "image_link", "page_link", "cc_meta" or ""
    copyright: str = ""  # the page's <meta name="copyright">

    def texts(self) -> dict[str, str]:
        """Every text field by name (not ``image_url`` nor the rights fields)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in NOT_TEXT_FIELDS}


NOT_TEXT_FIELDS = ("image_url", "licence", "licence_source", "copyright")


@dataclass
class ParsedPage:
    """What a page offers the crawler."""

    links: list[str] = field(default_factory=list)
    next_pages: list[str] = field(default_factory=list)
    """``rel=next`` targets (``<link>`` or ``<a>``): the page's pagination, also in ``links``."""
    images: list[ImageRef] = field(default_factory=list)
    robots_directives: set[str] = field(default_factory=set)
    page_title: str = ""


def clean(text: str | None) -> str:
    """Collapse whitespace; ``None`` becomes ``""``."""
    return _SPACE.sub(" ", text or "").strip()


def directives(value: str, robots_token: str = "") -> set[str]:
    """Directives of a robots meta ``content`` / X-Robots-Tag value, lower-cased.

    ``"otherbot: noai"`` applies only to ``otherbot``; an unprefixed list applies to all.
    """
    out: set[str] = set()
    for part in value.split(","):
        part = part.strip().lower()
        if ":" in part:
            agent, _, directive = part.partition(":")
            if agent.strip() not in ("", robots_token.lower()):
                continue
            part = directive.strip()
        if part:
            out.add(part)
    return out


def normalise_url(url: str, base: str) -> str | None:
    """Absolute http(s) URL without fragment, or ``None`` for other schemes/garbage."""
    url = (url or "").strip()
    if not url or url.startswith(("data:", "javascript:", "mailto:", "tel:")):
        return None
    try:
        absolute = urldefrag(urljoin(base, url))[0]
        parts = urlsplit(absolute)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return absolute


# --- text of a subtree -------------------------------------------------------------------------
def _pieces(node: LexborNode, skip: frozenset[str]) -> Iterator[str]:
    """Text pieces of ``node`` in document order; script/style/noscript… and ``skip`` tags
    left out. Iterative: a deeply nested page must not exhaust the recursion limit."""
    stack = [node.iter(include_text=True)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
        elif child.is_text_node:
            yield child.text_content or ""
        elif child.tag[0] != "-" and child.tag not in NON_TEXT_TAGS and child.tag not in skip:
            yield " "
            stack.append(child.iter(include_text=True))


def _text(node: LexborNode | None, skip: frozenset[str] = frozenset()) -> str:
    """Visible text of ``node``, whitespace collapsed."""
    return clean("".join(_pieces(node, skip))) if node is not None else ""


def _has_text(node: LexborNode, skip: frozenset[str] = frozenset()) -> bool:
    return any(piece.strip() for piece in _pieces(node, skip))


def _ancestor(node: LexborNode, tags: set[str]) -> LexborNode | None:
    cur = node.parent
    while cur is not None and cur.tag not in tags:
        cur = cur.parent
    return cur


class ImageCounts:
    """How many ``<img>`` each element of a page holds, counted once per page (lexbor node
    ids), so that asking is O(1) however large the gallery."""

    def __init__(self, images: Iterable[LexborNode]) -> None:
        self._counts: Counter[int] = Counter()
        for img in images:
            cur: LexborNode | None = img
            while cur is not None:
                self._counts[cur.mem_id] += 1
                cur = cur.parent

    def __call__(self, node: LexborNode | None) -> int:
        """Images in ``node`` (an ``<img>`` holds itself; text nodes hold none)."""
        return self._counts.get(node.mem_id, 0) if node is not None else 0


# --- where an image's bytes are -----------------------------------------------------------------
def srcset_candidates(value: str) -> list[tuple[str, str, float]]:
    """``(url, unit, size)`` of each candidate of a ``srcset`` (unit ``"w"`` or ``"x"``; no
    descriptor means ``1x``); candidates with a malformed descriptor are left out."""
    out: list[tuple[str, str, float]] = []
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        start = pos
        while pos < n and not value[pos].isspace():
            pos += 1
        url = value[start:pos]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = pos
            while pos < n and value[pos] != ",":
                pos += 1
            descriptor = value[start:pos].strip().lower()
        if not url:
            continue
        parsed = _descriptor(descriptor)
        if parsed is not None:
            out.append((url, *parsed))
    return out


def _descriptor(text: str) -> tuple[str, float] | None:
    if not text:
        return "x", 1.0
    for token in text.split():  # "640w", "2x" (a height "480h" alone says nothing)
        if token[-1:] in ("w", "x"):
            try:
                size = float(token[:-1])
            except ValueError:
                return None
            return (token[-1], size) if size > 0 else None
    return None


def largest_in_srcset(value: str) -> str | None:
    """The candidate URL of a ``srcset`` with the largest width (``w``) descriptor, or when
    none has one the largest density (``x``); ``None`` for an empty or unparsable srcset."""
    candidates = srcset_candidates(value or "")
    if not candidates:
        return None
    widths = [c for c in candidates if c[1] == "w"]
    best = max(widths or candidates, key=lambda c: c[2])
    return best[0]


def _is_raster(source: LexborNode) -> bool:
    kind = (source.attributes.get("type") or "").split(";")[0].strip().lower()
    if kind:
        return kind in RASTER_TYPES
    attrs = source.attributes
    url = largest_in_srcset(attrs.get("srcset") or attrs.get("data-srcset") or "") or ""
    path = urlsplit(url).path.lower()
    return path.endswith(RASTER_SUFFIXES) or "." not in path.rsplit("/", 1)[-1]


def image_source(img: LexborNode, base: str) -> str | None:
    """The absolute URL to download for an ``<img>``: in a ``<picture>``, the first
    ``<source>`` of a raster type (largest candidate of its srcset); else the largest
    candidate of the image's ``srcset``, then ``data-srcset``, ``data-src`` (lazy loading),
    ``src``. The first that is an http(s) URL wins; ``None`` when none is."""
    tried: list[str | None] = []
    if img.parent is not None and img.parent.tag == "picture":
        for source in img.parent.css("source"):
            if _is_raster(source):
                attrs = source.attributes
                tried.append(largest_in_srcset(attrs.get("srcset") or attrs.get("data-srcset") or ""))
    attrs = img.attributes
    tried += [
        largest_in_srcset(attrs.get("srcset") or ""),
        largest_in_srcset(attrs.get("data-srcset") or ""),
        attrs.get("data-src"),
        attrs.get("src"),
    ]
    for url in tried:
        absolute = normalise_url(url or "", base)
        if absolute:
            return absolute
    return None


# --- the texts around an image ------------------------------------------------------------------
def _previous_element(node: LexborNode) -> LexborNode | None:
    cur = node.prev
    while cur is not None and cur.tag[0] == "-":  # text and comment nodes
        cur = cur.prev
    return cur


def _sibling_texts(node: LexborNode, count: ImageCounts, forward: bool, limit: int) -> list[str]:
    """Up to ``limit`` paragraphs after (or before) ``node``, not crossing another image,
    a figure or a section; going back, a paragraph right after another image is that
    image's (galleries put the text below the picture)."""
    out: list[str] = []
    cur = node.next if forward else node.prev
    while cur is not None and len(out) < limit:
        if cur.tag in TEXT_TAGS:
            if not forward and count(_previous_element(cur)):
                break
            text = _text(cur)
            if text:
                out.append(text)
        elif cur.tag in ("figure", "section", "article", "hr") or count(cur):
            break  # another image's text lies beyond
        cur = cur.next if forward else cur.prev
    return out if forward else out[::-1]


def surrounding_text(img: LexborNode, count: ImageCounts, paragraphs: int, max_chars: int) -> str:
    """Text near an image: the paragraph holding it, or up to ``paragraphs`` paragraphs
    before and after its figure/block, joined and cut at ``max_chars``."""
    holder = _ancestor(img, TEXT_TAGS)
    if holder is not None and holder.tag == "p":
        parts = [_text(holder)]
    else:
        anchor = _ancestor(img, {"figure"}) or img
        if anchor is img and img.parent is not None and img.parent.tag not in BLOCK_TAGS:
            anchor = img.parent  # e.g. <a><img></a>
        parts = (_sibling_texts(anchor, count, False, paragraphs)
                 + _sibling_texts(anchor, count, True, paragraphs))
    return " ".join(p for p in parts if p)[:max_chars].strip()


def card_of(node: LexborNode, count: ImageCounts) -> LexborNode | None:
    """The nearest of ``CARD_LEVELS`` ancestors holding exactly one image and some text (a
    card); ``None`` when one holds several first, or a page-level element (``NOT_CARD_TAGS``)
    is reached. A table cell ends the search (its neighbours are :func:`cell_text`'s)."""
    cur = node.parent
    for _ in range(CARD_LEVELS):
        if cur is None or cur.tag in NOT_CARD_TAGS or count(cur) > 1:
            return None
        if count(cur) == 1 and _has_text(cur, _NO_FIGCAPTION):
            return cur
        if cur.tag in CELL_TAGS:
            return None
        cur = cur.parent
    return None


def card_text(img: LexborNode, count: ImageCounts) -> str:
    """The text of the image's card (:func:`card_of`), its figcaption left out."""
    card = card_of(img, count)
    return _text(card, _NO_FIGCAPTION) if card is not None else ""


def cell_text(img: LexborNode, count: ImageCounts) -> str:
    """For an image in a table cell: the text of the next cell in its row, else the previous
    one, else the cell below it; only cells holding text and no image count."""
    cell = _ancestor(img, CELL_TAGS)
    row = cell.parent if cell is not None else None
    if row is None or row.tag != "tr":
        return ""
    cells = [c for c in row.iter() if c.tag in CELL_TAGS]
    index = next(i for i, c in enumerate(cells) if c == cell)
    neighbours = cells[index + 1 : index + 2] + cells[max(index - 1, 0) : index]
    below = row.next
    while below is not None and below.tag != "tr":
        below = below.next
    if below is not None:
        neighbours += [c for c in below.iter() if c.tag in CELL_TAGS][index : index + 1]
    for neighbour in neighbours:
        text = "" if count(neighbour) else _text(neighbour)
        if text:
            return text
    return ""


def _title(img: LexborNode) -> str:
    title = img.attributes.get("title")
    if not title:
        link = _ancestor(img, {"a", "body"})
        title = link.attributes.get("title") if link is not None and link.tag == "a" else ""
    return clean(title)


def _is_section_heading(heading: LexborNode, count: ImageCounts) -> bool:
    """A heading inside a one-image card titles that image, not the images after it."""
    return card_of(heading, count) is None


# --- the page -----------------------------------------------------------------------------------
def _base_url(tree: LexborHTMLParser, page_url: str) -> str:
    node = tree.css_first("base[href]")
    if node is None:
        return page_url
    return normalise_url(node.attributes.get("href") or "", page_url) or page_url


def _links(tree: LexborHTMLParser, base: str, page: ParsedPage) -> None:
    seen: set[str] = set()
    for node in tree.css("a[href], link[href]"):
        rel = (node.attributes.get("rel") or "").lower().split()
        if node.tag == "link" and "next" not in rel:
            continue  # stylesheets, icons, alternates: not pages to crawl
        link = normalise_url(node.attributes.get("href") or "", base)
        if not link:
            continue
        if link not in seen:
            seen.add(link)
            page.links.append(link)
        if "next" in rel and link not in page.next_pages:
            page.next_pages.append(link)


def _robots(tree: LexborHTMLParser, robots_token: str) -> set[str]:
    out: set[str] = set()
    for meta in tree.css("meta[name]"):
        name = (meta.attributes.get("name") or "").strip().lower()
        if name in ("robots", robots_token.lower()) and name:
            out |= directives(meta.attributes.get("content") or "")
    return out


def image_ref(
    img: LexborNode,
    url: str,
    heading: str,
    count: ImageCounts,
    *,
    surrounding_paragraphs: int,
    max_text_chars: int,
) -> ImageRef:
    """Every text field of one image, each cut at ``max_text_chars``."""
    figure = _ancestor(img, {"figure"})
    figcaption = figure.css_first("figcaption") if figure is not None else None
    ref = ImageRef(
        image_url=url,
        alt=clean(img.attributes.get("alt")),
        title=_title(img),
        figcaption=_text(figcaption),
        sibling=card_text(img, count),
        cell=cell_text(img, count),
        heading=heading,
        surrounding=surrounding_text(img, count, surrounding_paragraphs, max_text_chars),
    )
    for name, text in ref.texts().items():
        setattr(ref, name, text[:max_text_chars])
    return ref


def parse_page(
    html: str,
    page_url: str,
    *,
    robots_token: str = "",
    surrounding_paragraphs: int = 1,
    max_text_chars: int = 10_000,
) -> ParsedPage:
    """Links (and ``rel=next`` pagination), images with their texts, robots meta directives.

    Image and link URLs are resolved against ``<base href>`` when the page has one, else
    against ``page_url``.
    """
    tree = LexborHTMLParser(html)
    base = _base_url(tree, page_url)
    page = ParsedPage(page_title=_text(tree.css_first("title")))
    page.robots_directives = _robots(tree, robots_token)
    _links(tree, base, page)
    nodes = tree.css(", ".join((*HEADING_TAGS, "img")))  # document order
    count = ImageCounts(n for n in nodes if n.tag == "img")
    heading = ""
    image_nodes = []
    for node in nodes:
        if node.tag != "img":
            if _is_section_heading(node, count):
                heading = _text(node)[:max_text_chars]
            continue
        url = image_source(node, base)
        if url is not None:
            image_nodes.append(node)
            page.images.append(
                image_ref(node, url, heading, count, surrounding_paragraphs=surrounding_paragraphs,
                          max_text_chars=max_text_chars)
            )
    _declare_rights(tree, base, image_nodes, page.images)
    return page


def _declare_rights(tree: LexborHTMLParser, base: str, nodes: list[LexborNode],
                    refs: list[ImageRef]) -> None:
    """Each image's licence (its own, else the page's) and the page's copyright notice."""
    def join(url: str) -> str | None:
        return normalise_url(url, base)

    page = rights.page_declared(tree, join)
    own = rights.image_licences(tree, nodes, join) if refs else {}
    for i, ref in enumerate(refs):
        ref.licence, ref.licence_source = ((own[i], rights.IMAGE_LINK) if i in own
                                           else (page.licence, page.licence_source))
        ref.copyright = page.copyright
