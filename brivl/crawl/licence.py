"""What a page declares about the rights in its images: licence links, CC metadata, copyright.

- **Per image**: an ``<a rel="license">`` after an image and before the next one, sharing
  an ancestor with it at most :data:`NEAR_LEVELS` levels above the image (its figure, card
  or table row), outside the page's head, header, footer and nav: that image's licence.
- **Per page**: ``<link rel="license">``, else any other ``rel="license"`` link, else CC
  metadata (RDFa ``property``/``rel`` of ``cc:license``, ``dct:license``, ``dcterms:license``
  with ``href``/``resource``/``content``; ``<meta name="dcterms.license">`` or ``dc.rights``):
  the licence of every image without its own.
- ``<meta name="copyright">``: the page's copyright notice, kept beside the licence.

Nothing is judged here: the fields say what the page declared (``licence_source`` says
where), for the sources tables and the datasheet.
"""

from __future__ import annotations

from dataclasses import dataclass

from selectolax.lexbor import LexborHTMLParser, LexborNode

NEAR_LEVELS = 2
MAX_CHARS = 500
CHROME_TAGS = {"head", "header", "footer", "nav"}
CC_TERMS = {"cc:license", "dct:license", "dcterms:license"}
META_NAMES = ("dcterms.license", "dc.rights", "dcterms.rights")
# licence_source values
IMAGE_LINK, PAGE_LINK, CC_META, NONE = "image_link", "page_link", "cc_meta", ""


@dataclass(frozen=True)
class Declared:
    """A page's declarations: its licence (URL or text), where it was found, copyright."""

    licence: str = ""
    licence_source: str = NONE
    copyright: str = ""


def _is_licence_link(node: LexborNode) -> bool:
    return "license" in (node.attributes.get("rel") or "").lower().split()


def _in_chrome(node: LexborNode) -> bool:
    cur = node.parent
    while cur is not None:
        if cur.tag in CHROME_TAGS:
            return True
        cur = cur.parent
    return False


def _href(node: LexborNode, base_join) -> str:
    """A link's target resolved against the page; a ``content`` attribute is text as given."""
    link = (node.attributes.get("href") or node.attributes.get("resource") or "").strip()
    if link:
        return (base_join(link) or link)[:MAX_CHARS]
    return " ".join((node.attributes.get("content") or "").split())[:MAX_CHARS]


def page_declared(tree: LexborHTMLParser, base_join) -> Declared:
    """The page-wide licence and copyright notice (see the module docstring)."""
    copyright_ = ""
    meta = tree.css_first("meta[name=copyright i]")
    if meta is not None:
        copyright_ = " ".join((meta.attributes.get("content") or "").split())[:MAX_CHARS]
    for selector in ("link[rel]", "a[rel], area[rel]"):
        for node in tree.css(selector):
            if _is_licence_link(node) and (url := _href(node, base_join)):
                return Declared(url, PAGE_LINK, copyright_)
    for node in tree.css("[property], [rel]"):
        terms = set(((node.attributes.get("property") or "") + " "
                     + (node.attributes.get("rel") or "")).lower().split())
        if terms & CC_TERMS and (url := _href(node, base_join)):
            return Declared(url, CC_META, copyright_)
    for name in META_NAMES:
        node = tree.css_first(f"meta[name='{name}' i]")
        if node is not None and (text := _href(node, base_join)):
            return Declared(text, CC_META, copyright_)
    return Declared(copyright=copyright_)


def image_licences(tree: LexborHTMLParser, images: list[LexborNode], base_join) -> dict[int, str]:
    """``{index into images: licence URL}`` for images with a licence link of their own."""
    out: dict[int, str] = {}
    position, current = 0, None
    for node in tree.css("img, a[rel], area[rel]"):  # document order
        if node.tag == "img":
            current = None
            if position < len(images) and node == images[position]:
                current, position = position, position + 1
            continue
        if (current is None or current in out or not _is_licence_link(node)
                or _in_chrome(node) or not _near(images[current], node)):
            continue
        if url := _href(node, base_join):
            out[current] = url
    return out


def _near(image: LexborNode, link: LexborNode) -> bool:
    """True when ``link`` lies inside one of the image's NEAR_LEVELS nearest ancestors."""
    ancestors, cur = [], image.parent
    for _ in range(NEAR_LEVELS):
        if cur is None or cur.tag in ("body", "html"):
            break
        ancestors.append(cur)
        cur = cur.parent
    cur = link.parent
    while cur is not None and cur.tag not in ("body", "html"):
        if any(cur == a for a in ancestors):
            return True
        cur = cur.parent
    return False
