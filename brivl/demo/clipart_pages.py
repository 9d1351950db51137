"""HTML of the clip-art demo site: home, paginated category pages, members' pages.

Each picture is written in one of :data:`LAYOUTS` (chosen by the planner), the way real
galleries do it::

    figure   <figure><img alt><figcaption>TITLE</figcaption></figure> <p>text</p>
    card     <div class="card"><img alt><h3>TITLE</h3> (or <span class="title">) <p>text</p>
    row      <tr><td><img alt></td><td>TITLE</td><td>tags</td></tr>
    srcset   <img src="…?w=120" srcset="…?w=120 120w, … 480w"><p class="name">TITLE</p>
    picture  <picture><source srcset="…"><img src="…?w=160"></picture><span>TITLE</span>

Image URLs are root-relative (``/img/…``) or page-relative (``../../img/…``), as the
planner chose per picture. Category pages carry ``<link rel="next">``, a numbered pager with
a "next" anchor, a ``rel="license"`` link, and (opted-out pages) a robots ``noai`` meta.
"""

from __future__ import annotations

import html
import posixpath
from dataclasses import dataclass

from brivl.demo.site import EXTERNAL_LINK, ImageTruth

SITE_NAME = "Open Clip Art Mirror"
LICENCE_URL = "http://creativecommons.org/licenses/publicdomain/"  # CC public domain
PUBLIC_DOMAIN_URLS = (LICENCE_URL, "http://web.resource.org/cc/PublicDomain", "")
LAYOUTS = ("figure", "card", "row", "srcset", "picture")


@dataclass(frozen=True)
class Markup:
    """How one picture is written: layout, URL form, and the texts placed around it."""

    layout: str
    relative: bool  # page-relative src, else root-relative
    alt: str
    title_attr: str  # "" = no title attribute
    beside: str  # the visible title next to the picture
    paragraph: str  # "" = none
    heading: str = "h3"  # card layout: "h3" or "span"


@dataclass(frozen=True)
class Listing:
    """One HTML page of pictures: a category page, or a members' page under /private/."""

    path: str
    heading: str
    intro: str
    image_paths: tuple[str, ...]
    category: str = ""
    number: int = 1
    pages: tuple[str, ...] = ()  # every page of this category, in order
    optout: bool = False


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def category_path(category: str, number: int = 1) -> str:
    """URL path of a category's page ``number`` (1-based)."""
    base = f"/category/{category}/"
    return base if number == 1 else f"{base}page/{number}/"


def relative_url(target: str, page: str) -> str:
    """``target`` (a root-relative path) as seen from ``page``."""
    start = page if page.endswith("/") else posixpath.dirname(page)
    return posixpath.relpath(target, start)


def _head(title: str, extra: str = "", optout: bool = False) -> str:
    meta = '<meta name="robots" content="noai, noimageai">\n' if optout else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n{meta}'
        f"<title>{_e(title)} | {SITE_NAME}</title>\n"
        f'<link rel="license" href="{LICENCE_URL}">\n{extra}</head>\n<body>\n'
        f'<header><a class="brand" href="/">{SITE_NAME}</a></header>\n'
    )


def _footer() -> str:
    return (
        '<footer>\n<p>Every picture here comes from the Open Clip Art Library and is in the '
        f'public domain: <a rel="license" href="{LICENCE_URL}">Public Domain Dedication</a>.'
        f'</p>\n<p><a href="/">Home</a> · <a href="{EXTERNAL_LINK}">Our partner site</a></p>\n'
        "</footer>\n</body>\n</html>\n"
    )


def home_html(groups: dict[str, list[tuple[str, str, int]]], intro: str) -> str:
    """The home page: per top-level group, links to its categories' first pages."""
    parts = [_head("Free clip art"), f"<main>\n<h1>{SITE_NAME}</h1>\n<p>{_e(intro)}</p>"]
    for group, entries in groups.items():
        items = "\n".join(
            f'<li><a href="{path}">{_e(name)}</a> <span class="count">({n})</span></li>'
            for name, path, n in entries
        )
        parts.append(f"<section>\n<h2>{_e(group)}</h2>\n<ul>\n{items}\n</ul>\n</section>")
    parts.append('<p><a href="/private/">Members\' uploads</a></p>\n</main>')
    return "\n".join(parts) + "\n" + _footer()


def listing_html(listing: Listing, images: list[ImageTruth], marks: dict[str, Markup]) -> str:
    """A category page (or members' page): heading, intro, the pictures, the pager."""
    links = ""
    if listing.number > 1:
        links += f'<link rel="prev" href="{_page_href(listing, listing.number - 1)}">\n'
    if listing.number < len(listing.pages):
        links += f'<link rel="next" href="{_page_href(listing, listing.number + 1)}">\n'
    title = listing.heading + (f" - page {listing.number}" if listing.number > 1 else "")
    body = [
        _head(title, links, listing.optout),
        f'<main>\n<nav class="crumbs"><a href="/">Home</a> › {_e(listing.heading)}</nav>',
        f"<h1>{_e(listing.heading)}</h1>\n<p class=\"intro\">{_e(listing.intro)}</p>",
        _gallery(listing.path, images, marks),
        _pager(listing),
        "</main>",
    ]
    return "\n".join(b for b in body if b) + "\n" + _footer()


def _page_href(listing: Listing, number: int) -> str:
    target = listing.pages[number - 1]
    href = relative_url(target, listing.path)
    return href + "/" if target.endswith("/") and not href.endswith("/") else href


def _pager(listing: Listing) -> str:
    if len(listing.pages) < 2:
        return ""
    links = []
    if listing.number > 1:
        links.append(f'<a rel="prev" href="{_page_href(listing, listing.number - 1)}">« prev</a>')
    for k in range(1, len(listing.pages) + 1):
        links.append(
            f'<span class="current">{k}</span>' if k == listing.number
            else f'<a href="{_page_href(listing, k)}">{k}</a>'
        )
    if listing.number < len(listing.pages):
        links.append(f'<a rel="next" href="{_page_href(listing, listing.number + 1)}">next »</a>')
    return f'<nav class="pager">{" ".join(links)}</nav>'


def _gallery(page: str, images: list[ImageTruth], marks: dict[str, Markup]) -> str:
    """The pictures grouped by layout, in order of first appearance (a table for rows)."""
    blocks: dict[str, list[str]] = {}
    for im in images:
        mark = marks[im.path]
        blocks.setdefault(mark.layout, []).append(_item(page, im, mark))
    out = []
    for layout, items in blocks.items():
        joined = "\n".join(items)
        if layout == "row":
            out.append(
                '<table class="list">\n<tr><th>Picture</th><th>Name</th><th>Tags</th></tr>\n'
                f"{joined}\n</table>"
            )
        else:
            out.append(f'<div class="gallery {layout}s">\n{joined}\n</div>')
    return "\n".join(out)


def _item(page: str, im: ImageTruth, mark: Markup) -> str:
    src = _e(relative_url(im.path, page) if mark.relative else im.path)
    alt = f'alt="{_e(mark.alt)}"'
    title = f' title="{_e(mark.title_attr)}"' if mark.title_attr else ""
    size = f' width="{im.width}" height="{im.height}"' if im.width and im.width < 5000 else ""
    beside, para = _e(mark.beside), _e(mark.paragraph)
    desc = f'\n<p class="desc">{para}</p>' if para else ""
    licence = _licence_note(im.labels.get("licence", ""))
    if mark.layout == "figure":
        return (
            f'<figure class="clip">\n<img src="{src}" {alt}{title}{size} loading="lazy">\n'
            f"<figcaption>{beside}</figcaption>\n</figure>{desc}{licence}"
        )
    if mark.layout == "card":
        label = f"<h3>{beside}</h3>" if mark.heading == "h3" else f'<span class="title">{beside}</span>'
        by = _e(im.labels.get("creator") or "anonymous")
        return (
            f'<div class="card">\n<img class="thumb" src="{src}" {alt}{title}>\n{label}{desc}\n'
            f'<span class="by">by {by}</span>{licence}\n</div>'
        )
    if mark.layout == "row":
        return (
            f'<tr><td class="thumb"><img src="{src}" {alt}{title}{size}></td>'
            f'<td class="name">{beside}{licence}</td><td class="tags">{para}</td></tr>'
        )
    width = im.width or 480
    if mark.layout == "srcset":
        return (
            f'<div class="thumb">\n<img src="{src}?w=120" srcset="{src}?w=120 120w, {src} '
            f'{width}w" sizes="(max-width: 600px) 120px, {width}px" {alt}{title}>\n'
            f'<p class="name">{beside}</p>{desc}{licence}\n</div>'
        )
    return (
        f'<div class="item">\n<picture>\n<source media="(min-width: 800px)" srcset="{src}">\n'
        f'<img src="{src}?w=160" {alt}{title}>\n</picture>\n<span class="title">{beside}</span>'
        f"{desc}{licence}\n</div>"
    )


def _licence_note(licence: str) -> str:
    """A per-picture licence link where it differs from the site's public domain."""
    if licence in PUBLIC_DOMAIN_URLS:
        return ""
    return f' <small><a rel="license" href="{_e(licence)}">licence</a></small>'
