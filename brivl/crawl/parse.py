"""HTML parsing (selectolax): links to follow, images with their text context, opt-outs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urldefrag, urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

BLOCK_TAGS = {"p", "div", "figure", "section", "article", "li", "td", "blockquote", "main", "body"}
TEXT_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote"}
_SPACE = re.compile(r"\s+")


@dataclass
class ImageRef:
    """One ``<img>`` with the texts around it, as found on the page."""

    image_url: str
    alt: str = ""
    title: str = ""
    figcaption: str = ""
    surrounding: str = ""


@dataclass
class ParsedPage:
    """What a page offers the crawler."""

    links: list[str] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)
    robots_directives: set[str] = field(default_factory=set)
    page_title: str = ""


def clean(text: str | None) -> str:
    """Collapse whitespace; ``None`` becomes ``""``."""
    return _SPACE.sub(" ", text or "").strip()


def directives(value: str, user_agent_token: str = "") -> set[str]:
    """Directives of a robots meta ``content`` / X-Robots-Tag value, lower-cased.

    ``"otherbot: noai"`` applies only to ``otherbot``; an unprefixed list applies to all.
    """
    out: set[str] = set()
    for part in value.split(","):
        part = part.strip().lower()
        if ":" in part:
            agent, _, directive = part.partition(":")
            if agent.strip() not in ("", user_agent_token.lower()):
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


def _text(node: LexborNode | None) -> str:
    return clean(node.text(deep=True, separator=" ")) if node is not None else ""


def _ancestor(node: LexborNode, tags: set[str]) -> LexborNode | None:
    cur = node.parent
    while cur is not None and cur.tag not in tags:
        cur = cur.parent
    return cur


def _sibling_texts(node: LexborNode, forward: bool, limit: int) -> list[str]:
    out: list[str] = []
    cur = node.next if forward else node.prev
    while cur is not None and len(out) < limit:
        if cur.tag in TEXT_TAGS:
            text = _text(cur)
            if text:
                out.append(text)
        elif cur.tag in ("figure", "img", "section", "article", "hr"):
            break
        cur = cur.next if forward else cur.prev
    return out if forward else out[::-1]


def surrounding_text(img: LexborNode, paragraphs: int, max_chars: int) -> str:
    """Text near an image: the paragraph holding it, or up to ``paragraphs`` paragraphs
    before and after its figure/block, joined and cut at ``max_chars``."""
    holder = _ancestor(img, TEXT_TAGS)
    if holder is not None and holder.tag == "p":
        parts = [_text(holder)]
    else:
        anchor = _ancestor(img, {"figure"}) or img
        if anchor is img and img.parent is not None and img.parent.tag not in BLOCK_TAGS:
            anchor = img.parent  # e.g. <a><img></a>
        parts = _sibling_texts(anchor, False, paragraphs) + _sibling_texts(anchor, True, paragraphs)
    return " ".join(p for p in parts if p)[:max_chars].strip()


def parse_page(
    html: str,
    page_url: str,
    *,
    user_agent_token: str = "",
    surrounding_paragraphs: int = 1,
    max_text_chars: int = 10_000,
) -> ParsedPage:
    """Links, images (with alt/title/figcaption/surrounding text) and robots meta directives."""
    tree = LexborHTMLParser(html)
    base = page_url
    base_node = tree.css_first("base[href]")
    if base_node is not None:
        base = normalise_url(base_node.attributes.get("href") or "", page_url) or page_url
    page = ParsedPage(page_title=_text(tree.css_first("title")))
    for meta in tree.css("meta[name]"):
        name = (meta.attributes.get("name") or "").strip().lower()
        if name in ("robots", user_agent_token.lower()) and name:
            page.robots_directives |= directives(meta.attributes.get("content") or "")
    seen_links: set[str] = set()
    for anchor in tree.css("a[href]"):
        link = normalise_url(anchor.attributes.get("href") or "", base)
        if link and link not in seen_links:
            seen_links.add(link)
            page.links.append(link)
    for img in tree.css("img"):
        attrs = img.attributes
        src = attrs.get("src") or attrs.get("data-src") or ""
        url = normalise_url(src, base)
        if url is None:
            continue
        figure = _ancestor(img, {"figure"})
        figcaption = figure.css_first("figcaption") if figure is not None else None
        page.images.append(
            ImageRef(
                image_url=url,
                alt=clean(attrs.get("alt"))[:max_text_chars],
                title=clean(attrs.get("title"))[:max_text_chars],
                figcaption=_text(figcaption)[:max_text_chars],
                surrounding=surrounding_text(img, surrounding_paragraphs, max_text_chars),
            )
        )
    return page
