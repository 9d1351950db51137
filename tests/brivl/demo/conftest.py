"""OpenClipArt test material: a tiny package tree (PNG + SVG twins in the Debian layout),
and the real corpus, fetched once per machine into a shared test cache."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from xml.sax.saxutils import escape

import pytest
from PIL import Image

from brivl.demo.openclipart import PNG_ROOT, SVG_ROOT

SVG = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     width="24" height="24">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title>
    <dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
    <dc:publisher><cc:Agent><dc:title>Open Clip Art Library</dc:title></cc:Agent></dc:publisher>
    <dc:creator><cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator>
    {licence}
  </cc:Work></rdf:RDF></metadata>
  <rect width="24" height="24" fill="red"/>
</svg>
"""


def svg_text(title: str, keywords=(), creator: str = "", licence: str = "") -> str:
    words = "".join(f"<rdf:li>{escape(k)}</rdf:li>" for k in keywords)
    lic = f'<cc:license rdf:resource="{escape(licence)}"/>' if licence else ""
    return SVG.format(title=escape(title), keywords=words, creator=escape(creator), licence=lic)


def add_picture(root: Path, rel: str, title: str | None, keywords=(), creator: str = "",
                licence: str = "http://web.resource.org/cc/PublicDomain",
                colour: tuple[int, int, int] = (200, 30, 30), size: int = 24) -> None:
    """One PNG (a square with a transparent border) and, unless ``title`` is None, its SVG."""
    png = root / PNG_ROOT / rel
    png.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    img.paste((*colour, 255), (4, 4, size - 4, size - 4))
    img.save(png)
    if title is not None:
        svg = (root / SVG_ROOT / rel).with_suffix(".svg")
        svg.parent.mkdir(parents=True, exist_ok=True)
        svg.write_text(svg_text(title, keywords, creator, licence))


CATEGORIES = {  # folder -> pictures
    "animals/birds": 30,
    "recreation/games/chess": 14,
    "food/fruit": 13,
    "shapes/stars": 60,
    "signs_and_symbols/flags/europe": 20,
    "unsorted": 10,
}


def make_tree(root: Path) -> int:
    """A tree of :data:`CATEGORIES` with distinct pictures and titles; returns the count."""
    n = 0
    for category, count in CATEGORIES.items():
        leaf = category.rsplit("/", 1)[-1]
        for k in range(count):
            colour = ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256)
            add_picture(root, f"{category}/{leaf}_{k:02d}.png", f"{leaf} drawing {k}",
                        (leaf, "unsorted", f"tag{k % 4}"), f"artist {k % 3}", colour=colour)
            n += 1
    return n


@pytest.fixture(scope="session")
def clipart_tree() -> SimpleNamespace:
    """The tree helpers: ``svg_text``, ``add_picture``, ``make_tree``, ``CATEGORIES``."""
    return SimpleNamespace(svg_text=svg_text, add_picture=add_picture, make_tree=make_tree,
                           CATEGORIES=CATEGORIES)
